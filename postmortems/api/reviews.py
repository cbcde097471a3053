"""Placeholder: its owner replaces this."""

ROUTES = []

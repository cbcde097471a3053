"""Placeholder: the metrics work replaces this."""

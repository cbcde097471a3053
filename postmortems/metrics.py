"""Placeholder: action-item metrics for incidents.metrics (its owner replaces this)."""

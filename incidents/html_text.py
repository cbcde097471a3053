"""Escaping for the hot loops of the admin lists and the incident page.

Django's escape() and conditional_escape() give the same text, but each call goes through the
lazy-text wrapper and makes a SafeString: at a thousand calls a list page that was a tenth of its
rendering. These return plain str, for f-strings that are marked safe as a whole.
"""

from html import escape as _escape


def escape_text(value):
    """django.utils.html.escape(value), as a plain str."""
    return _escape(str(value))


def escape_unless_safe(value):
    """django.utils.html.conditional_escape(value): safe strings (and __html__ objects) as they are."""
    if hasattr(value, "__html__"):
        return value.__html__()
    return _escape(str(value))

"""Showing a new key once: on the page that answers the request that made it.

A Django message would travel in the messages cookie (the default storage), so the secret would sit
in the browser's cookie jar and in any log of request headers. The key page is rendered straight
from the request that created or rotated the key, and marked not to be cached.
"""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers


def key_shown_once(request, *, title, what, keys, back_url, back_label, note=""):
    """The page showing `keys` ([(name, key), …]) once."""
    context = {
        **admin.site.each_context(request),
        "title": title,
        "what": what,
        "keys": keys,
        "back_url": back_url,
        "back_label": back_label,
        "note": note,
    }
    response = TemplateResponse(request, "admin/incidents/key_shown_once.html", context)
    add_never_cache_headers(response)  # Cache-Control: no-store … the page holds a secret
    return response

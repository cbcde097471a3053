"""How the status page's main documents are rendered: /status/ and the Statuspage v2 JSON.

Apart from the views because two callers need them: the views (on a cache miss) and the refresh after
a change (refresh.py), which re-renders the documents being read before anyone asks. Rendered without
the request: the cached copy must hold nothing from whoever asked first.
"""

import json

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from incidents_site import csp

from . import selectors, statuspage

# The public subscription form (subscribers work); the page simply leaves the link out if it is not wired.
SUBSCRIBE_URL_NAMES = ("comms_subscriptions:subscribe",)
JSON = "application/json"
HTML = "text/html; charset=utf-8"
# /status/ shows each open incident's and maintenance's latest updates and links to its own page for the
# rest: an outage may run to hundreds of updates, and the front page is read on phones during it. The
# JSON documents keep every update (Statuspage's format lists them all).
FRONT_PAGE_UPDATES = 5


def subscribe_url():
    for name in SUBSCRIBE_URL_NAMES:
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


def html(template, page, **extra):
    """An HTML page with its Content-Security-Policy, whose hashes of the inline styles are worked out
    here, once per render, instead of by the middleware scanning the page on every request."""
    context = {
        "page": page,
        "page_name": settings.STATUS_PAGE_NAME,
        "subscribe_url": subscribe_url(),
        "history_days": selectors.HISTORY_DAYS,
        "time_zone": statuspage.time_zone_name(),
        **extra,
    }
    body = render_to_string(template, context).encode()
    return 200, HTML, body, {csp.HEADER: csp.policy_header(HttpResponse(body, content_type=HTML))}


def json_body(data, status=200):
    return status, JSON, json.dumps(data, ensure_ascii=False, cls=DjangoJSONEncoder).encode()


def _v2(shape):
    return lambda page: json_body(shape(page))


def _front_page(page):
    return html("comms/status/index.html", page, front_page_updates=FRONT_PAGE_UPDATES)


# Cache key -> (incidents wanted, maintenances wanted, page -> (status, content type, body)). The
# v2 names are also the views' `name` (urls.py). In the order a refresh renders them: the four that
# share the cheapest page first (what monitoring scripts poll), the HTML page with its history next.
DOCUMENTS = {
    "summary": (None, None, _v2(statuspage.summary)),
    "status": (None, None, _v2(statuspage.status)),
    "components": (None, None, _v2(statuspage.components)),
    "incidents-unresolved": (None, None, _v2(statuspage.unresolved)),
    "index": ("history", None, _front_page),
    "incidents": ("recent", None, _v2(statuspage.incidents)),
    "scheduled-maintenances": (None, "all", _v2(statuspage.scheduled_maintenances)),
    "scheduled-maintenances-upcoming": (None, "upcoming", _v2(statuspage.scheduled_maintenances)),
    "scheduled-maintenances-active": (None, "active", _v2(statuspage.scheduled_maintenances)),
}


def renderer(key, pages=None):
    """render() of DOCUMENTS[key] for cache.cached_document(). `pages`, a dict shared by documents
    rendered together, builds each page once (summary, status, components and unresolved show the same),
    and the others on what the first one read (components, unresolved incidents, open maintenances)."""
    incidents, maintenances, shape = DOCUMENTS[key]

    def render():
        wanted = (incidents, maintenances)
        page = pages.get(wanted) if pages is not None else None
        if page is None:
            common = next(iter(pages.values()), None) if pages is not None else None
            page = selectors.status_page(incidents=incidents, maintenances=maintenances, common=common)
            if pages is not None:
                pages[wanted] = page
        return shape(page)

    return render

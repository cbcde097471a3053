"""Public status-page views: no login, nothing per user, the same answer for everyone.

Every document is read through `selectors.status_page()` (the one place that decides what is public),
rendered once per change of the public state and served from the shared cache (cache.py). Responses
carry an `ETag` (If-None-Match answers 304) and `Cache-Control: public, max-age=STATUS_PAGE_MAX_AGE,
stale-while-revalidate=…, stale-if-error=…` for browsers and CDNs. The JSON documents and the widget
answer cross-origin requests (`Access-Control-Allow-Origin: *`, preflights included), as Statuspage
does, so other sites, native apps and the in-app widget can read them.
"""

import functools
import json
from pathlib import Path

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseNotModified
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_cache_control
from django.utils.http import parse_etags

from . import cache, embed, selectors, statuspage
from .feeds import UpdatesFeed

# The public subscription form (subscribers work); the page simply leaves the link out if it is not wired.
SUBSCRIBE_URL_NAMES = ("comms_subscriptions:subscribe",)
JSON = "application/json"
HTML = "text/html; charset=utf-8"
EMBED_SCRIPT = Path(__file__).resolve().parent.parent / "static" / "comms" / "embed.js"
EMBED_SCRIPT_MAX_AGE = 300  # its URL never changes (hosts embed it by name): short, then revalidated


def subscribe_url():
    for name in SUBSCRIBE_URL_NAMES:
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


# ---- answering with a cached document ----------------------------------------------------------------


def _not_modified(request, etag):
    etags = parse_etags(request.META.get("HTTP_IF_NONE_MATCH", ""))
    return "*" in etags or etag.removeprefix("W/") in {e.removeprefix("W/") for e in etags}


def _cors(response):
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = "ETag"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


def _respond(request, document, *, cors, max_age=None):
    if document.status == 200 and _not_modified(request, document.etag):
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(document.body, status=document.status, content_type=document.content_type)
    response["ETag"] = document.etag
    patch_cache_control(
        response,
        public=True,
        max_age=settings.STATUS_PAGE_MAX_AGE if max_age is None else max_age,
        stale_while_revalidate=settings.STATUS_PAGE_STALE_WHILE_REVALIDATE,
        stale_if_error=settings.STATUS_PAGE_STALE_IF_ERROR,
    )
    return _cors(response) if cors else response


def _preflight():
    response = _cors(HttpResponse(status=204))
    response["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
    response["Access-Control-Allow-Headers"] = "If-None-Match, Cache-Control"
    response["Access-Control-Max-Age"] = "86400"
    return response


def public_document(*, cors=False, max_age=None):
    """For views returning a cache.Document: GET and HEAD (and CORS preflights when cors), else 405."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if cors and request.method == "OPTIONS":
                return _preflight()
            if request.method not in ("GET", "HEAD"):
                return HttpResponseNotAllowed(["GET", "HEAD", *(["OPTIONS"] if cors else [])])
            return _respond(request, view(request, *args, **kwargs), cors=cors, max_age=max_age)

        return wrapper

    return decorator


# ---- the documents -----------------------------------------------------------------------------------


def _html(template, page, **extra):
    # Rendered without the request: the cached page must hold nothing from whoever asked first.
    context = {
        "page": page,
        "page_name": settings.STATUS_PAGE_NAME,
        "subscribe_url": subscribe_url(),
        "history_days": selectors.HISTORY_DAYS,
        "time_zone": statuspage.time_zone_name(),
        **extra,
    }
    return 200, HTML, render_to_string(template, context).encode()


def _json(data, status=200):
    return status, JSON, json.dumps(data, ensure_ascii=False, cls=DjangoJSONEncoder).encode()


@public_document()
def index(request):
    return cache.cached_document(
        "index", lambda: _html("comms/status/index.html", selectors.status_page(incidents="history"))
    )


def _detail(kind, public_id):
    def render():
        if kind == "incident":
            page = selectors.status_page(incidents=public_id)
            items = page.incidents
        else:
            page = selectors.status_page(maintenances=public_id)
            items = page.maintenances
        if not items:
            raise Http404(f"No such {kind}.")
        return _html("comms/status/detail.html", page, item=items[0])

    return cache.cached_document(f"{kind}:{public_id}", render)


@public_document()
def incident(request, public_id):
    return _detail("incident", public_id)


@public_document()
def maintenance(request, public_id):
    return _detail("maintenance", public_id)


@public_document()
def feed(request):
    # The feed's links are made from the request's host (as Django's feeds do): one copy per host.
    def render():
        response = UpdatesFeed()(request)
        return response.status_code, response["Content-Type"], response.content

    return cache.cached_document(f"feed:{request.get_host()}", render)


# Statuspage v2 documents: (incidents wanted, maintenances wanted, shape).
DOCUMENTS = {
    "summary": (None, None, statuspage.summary),
    "status": (None, None, statuspage.status),
    "components": (None, None, statuspage.components),
    "incidents": ("recent", None, statuspage.incidents),
    "incidents-unresolved": (None, None, statuspage.unresolved),
    "scheduled-maintenances": (None, "all", statuspage.scheduled_maintenances),
    "scheduled-maintenances-upcoming": (None, "upcoming", statuspage.scheduled_maintenances),
    "scheduled-maintenances-active": (None, "active", statuspage.scheduled_maintenances),
}


@public_document(cors=True)
def document(request, name):
    incidents, maintenances, shape = DOCUMENTS[name]
    return cache.cached_document(
        name, lambda: _json(shape(selectors.status_page(incidents=incidents, maintenances=maintenances)))
    )


def _error(code, message, fields):
    return {"error": {"code": code, "message": message, "fields": fields}}


@public_document(cors=True)
def embed_document(request):
    """The in-app widget's document; a malformed or unknown component is a 400 naming it."""
    try:
        slugs = embed.components_parse(request.GET.get("components", ""))
    except embed.ComponentsError as error:
        body = _json(_error("invalid", str(error), {"components": error.slugs}), 400)
        return cache.rendered("", lambda: body)

    def render():
        try:
            return _json(embed.embed(selectors.status_page(), slugs))
        except embed.ComponentsError as error:
            return _json(_error("unknown_components", str(error), {"components": error.slugs}), 400)

    return cache.cached_document("embed:" + ",".join(slugs), render)


@functools.cache
def _embed_script():
    return cache.rendered("", lambda: (200, "text/javascript; charset=utf-8", EMBED_SCRIPT.read_bytes()))


@public_document(cors=True, max_age=EMBED_SCRIPT_MAX_AGE)
def embed_script(request):
    """The widget itself, under the fixed URL hosts put in their script tag (read once per process)."""
    return _embed_script()

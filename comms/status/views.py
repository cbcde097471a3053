"""Public status-page views: no login, nothing per user, the same answer for everyone.

Every document is read through `selectors.status_page()` (the one place that decides what is public),
rendered once per change of the public state and served from the shared cache (cache.py; /status/
and the v2 documents are rendered in documents.py, and re-rendered right after a change by refresh.py,
before readers ask). Responses
carry an `ETag` (If-None-Match answers 304) and `Cache-Control: public, max-age=STATUS_PAGE_MAX_AGE,
stale-while-revalidate=…, stale-if-error=…` for browsers and CDNs. The JSON documents and the widget
answer cross-origin requests (`Access-Control-Allow-Origin: *`, preflights included), as Statuspage
does, so other sites, native apps and the in-app widget can read them.
"""

import functools
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseNotModified
from django.utils.cache import patch_cache_control
from django.utils.http import parse_etags

from . import cache, embed, selectors
from .documents import html, json_body, renderer
from .feeds import UpdatesFeed

EMBED_SCRIPT = Path(__file__).resolve().parent.parent / "static" / "comms" / "embed.js"
EMBED_SCRIPT_MAX_AGE = 300  # its URL never changes (hosts embed it by name): short, then revalidated


# ---- answering with a cached document ----------------------------------------------------------------


def _not_modified(request, etag):
    etags = parse_etags(request.META.get("HTTP_IF_NONE_MATCH", ""))
    return "*" in etags or etag.removeprefix("W/") in {e.removeprefix("W/") for e in etags}


def _cors(response):
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = "ETag"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


def _accepts_gzip(request):
    """Whether Accept-Encoding allows gzip: named (else `*`) with a quality above 0."""
    qualities = {}
    for coding in request.META.get("HTTP_ACCEPT_ENCODING", "").lower().split(","):
        name, *params = (part.strip() for part in coding.split(";"))
        quality = next((p.partition("=")[2].strip() for p in params if p.partition("=")[0].strip() == "q"), "1")
        try:
            qualities[name] = float(quality)
        except ValueError:
            qualities[name] = 0.0
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


def _respond(request, document, *, cors, max_age=None):
    # The copy gzipped at render time to whoever accepts it; its own ETag, and Vary for caches between.
    gzipped = document.gzipped is not None and _accepts_gzip(request)
    etag = document.gzip_etag if gzipped else document.etag
    if document.status == 200 and _not_modified(request, etag):
        response = HttpResponseNotModified()
    else:
        body = document.gzipped if gzipped else document.body
        response = HttpResponse(body, status=document.status, content_type=document.content_type)
        if gzipped:
            response["Content-Encoding"] = "gzip"
    response["ETag"] = etag
    if document.gzipped is not None:
        response["Vary"] = "Accept-Encoding"
    for name, value in document.headers:
        response[name] = value
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


@public_document()
def index(request):
    return cache.cached_document("index", renderer("index"))


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
        return html("comms/status/detail.html", page, item=items[0])

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


@public_document(cors=True)
def document(request, name):
    """A Statuspage v2 document (documents.DOCUMENTS names them)."""
    return cache.cached_document(name, renderer(name))


def _error(code, message, fields):
    return {"error": {"code": code, "message": message, "fields": fields}}


@public_document(cors=True)
def embed_document(request):
    """The in-app widget's document; a malformed or unknown component is a 400 naming it."""
    try:
        slugs = embed.components_parse(request.GET.get("components", ""))
    except embed.ComponentsError as error:
        body = json_body(_error("invalid", str(error), {"components": error.slugs}), 400)
        return cache.rendered("", lambda: body)

    def render():
        try:
            return json_body(embed.embed(selectors.status_page(), slugs))
        except embed.ComponentsError as error:
            return json_body(_error("unknown_components", str(error), {"components": error.slugs}), 400)

    return cache.cached_document("embed:" + ",".join(slugs), render)


@functools.cache
def _embed_script():
    return cache.rendered("", lambda: (200, "text/javascript; charset=utf-8", EMBED_SCRIPT.read_bytes()))


@public_document(cors=True, max_age=EMBED_SCRIPT_MAX_AGE)
def embed_script(request):
    """The widget itself, under the fixed URL hosts put in their script tag (read once per process)."""
    return _embed_script()

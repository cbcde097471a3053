"""Public status-page views: no login, nothing per user, the same answer for everyone.

Every view reads through `selectors.status_page()` (the one place that decides what is public) and
answers with `Cache-Control: public, max-age=STATUS_PAGE_MAX_AGE`; the JSON also with
`Access-Control-Allow-Origin: *`, as Statuspage does, so browser widgets on other sites can read it.
"""

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from . import selectors, statuspage

# The public subscription form (subscribers work); the page simply leaves the link out if it is not wired.
SUBSCRIBE_URL_NAMES = ("comms_subscriptions:subscribe",)


def subscribe_url():
    for name in SUBSCRIBE_URL_NAMES:
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


def _cacheable(response):
    patch_cache_control(response, public=True, max_age=settings.STATUS_PAGE_MAX_AGE)
    return response


def _context(page, **extra):
    return {
        "page": page,
        "page_name": settings.STATUS_PAGE_NAME,
        "subscribe_url": subscribe_url(),
        "history_days": selectors.HISTORY_DAYS,
        "time_zone": statuspage.time_zone_name(),
        **extra,
    }


@require_safe
def index(request):
    page = selectors.status_page(incidents="history")
    return _cacheable(render(request, "comms/status/index.html", _context(page)))


@require_safe
def incident(request, public_id):
    page = selectors.status_page(incidents=public_id)
    if not page.incidents:
        raise Http404("No such incident.")
    return _cacheable(render(request, "comms/status/detail.html", _context(page, item=page.incidents[0])))


@require_safe
def maintenance(request, public_id):
    page = selectors.status_page(maintenances=public_id)
    if not page.maintenances:
        raise Http404("No such maintenance.")
    return _cacheable(render(request, "comms/status/detail.html", _context(page, item=page.maintenances[0])))


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


@require_safe
def document(request, name):
    incidents, maintenances, shape = DOCUMENTS[name]
    page = selectors.status_page(incidents=incidents, maintenances=maintenances)
    response = JsonResponse(shape(page), json_dumps_params={"ensure_ascii": False})
    response["Access-Control-Allow-Origin"] = "*"
    return _cacheable(response)

"""The small public JSON document the in-app widget (comms/static/comms/embed.js) reads.

`GET /status/api/embed.json?components=checkout,api`: the unresolved public incidents and the active
maintenances that affect those components (public service slugs; every one when none is given), with
their public name, status and link. Built only from the public objects of `selectors.status_page()`.
"""

import re

from django.conf import settings

from .statuspage import time

MAX_COMPONENTS = 50
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


class ComponentsError(ValueError):
    def __init__(self, message, slugs=()):
        super().__init__(message)
        self.slugs = list(slugs)


def components_parse(value):
    """The `components` parameter as a sorted tuple of distinct slugs; ComponentsError when malformed."""
    slugs = sorted({part.strip() for part in (value or "").split(",") if part.strip()})
    bad = [slug for slug in slugs if not SLUG.match(slug)]
    if bad:
        raise ComponentsError("Component names are service slugs: letters, digits, '-' and '_'.", bad[:10])
    if len(slugs) > MAX_COMPONENTS:
        raise ComponentsError(f"At most {MAX_COMPONENTS} components.")
    return tuple(slugs)


def _item(item, kind, wanted):
    latest = item.updates[0] if item.updates else None
    return {
        "id": item.id,
        "kind": kind,
        "name": item.name,
        "status": item.status,
        "status_label": item.status_label,
        "impact": item.impact if kind == "incident" else "maintenance",
        "url": item.url,
        "updated_at": time(item.updated_at),
        "latest_update_id": latest.id if latest else None,
        "components": [c.slug for c in item.components if wanted is None or c.pk in wanted],
    }


def embed(page, slugs):
    """The document for these slugs (a tuple, maybe empty); ComponentsError names any that is not public."""
    by_slug = {c.slug: c for c in page.components}
    unknown = [slug for slug in slugs if slug not in by_slug]
    if unknown:
        raise ComponentsError("Not a component of this status page.", unknown)
    wanted = {by_slug[slug].pk for slug in slugs} if slugs else None

    def affects(item):
        return wanted is None or any(c.pk in wanted for c in item.components)

    components = [by_slug[slug] for slug in slugs] if slugs else page.components
    return {
        "page": {"name": settings.STATUS_PAGE_NAME, "url": settings.SITE_URL + "/status/"},
        "components": [
            {"slug": c.slug, "name": c.name, "status": c.status, "status_label": c.status_label} for c in components
        ],
        "incidents": [_item(i, "incident", wanted) for i in page.unresolved if affects(i)],
        "maintenances": [_item(m, "maintenance", wanted) for m in page.active_maintenances if affects(m)],
    }

"""Cached public documents: during an outage everyone refreshes the status page at once.

Every public document (the HTML pages, the Statuspage v2 JSON, the embed JSON) is rendered once per
*public state version* and kept in the shared cache (CACHES["default"]; Redis in production), so a
request in the steady state is one cache round trip: `get_many` of the version and the document.

- The version is a random token in one database row (StatusPageVersion), replaced right after the
  commit of every change the public may see: `status_page_changed()`, called by the receivers in
  comms/status/invalidation.py. Code that changes public state with a queryset `.update()` (no
  signal) calls it itself.
- The cache keeps the token for VERSION_TTL (1 s) only. A process whose cache is not shared (the
  local-memory default) or a cache delete that got lost reads the token from the database at most
  once a second, so a change shows on every document within about a second either way.
- A document is stored with the token read *before* rendering it: a change that commits during the
  render makes the next request render again, never the reverse.
- While one process re-renders a stale document the others keep serving the stale copy (a lock in
  the cache), so a change during a spike costs one render, not one per waiting request.
- Inside a transaction (a test, or code reading what it just wrote) the cache is neither read nor
  written: the connection may see changes that are not committed, or that will be rolled back.
- If the cache is unreachable, documents are rendered from the database on each request.
"""

import hashlib
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from .models import StatusPageVersion

log = logging.getLogger(__name__)

VERSION_KEY = "status-page:version"
VERSION_TTL = 1  # seconds; integer: Redis expiries are whole seconds
DOCUMENT_KEY = "status-page:document:{}"
RENDER_LOCK_KEY = "status-page:rendering:{}"
RENDER_LOCK_SECONDS = 10
_ERROR = object()


@dataclass(frozen=True)
class Document:
    """One rendered public document, as cached: the token it was rendered under, and the response."""

    version: str
    status: int
    content_type: str
    body: bytes
    etag: str


def status_page_changed():
    """Something the public status page shows has changed: every cached document is stale once the
    current transaction commits (at once outside a transaction). Cheap; calling it twice is harmless."""
    transaction.on_commit(_new_version, robust=True)


def _new_version():
    token, now = uuid.uuid4().hex, timezone.now()
    if not StatusPageVersion.objects.filter(pk=1).update(token=token, changed_at=now):
        # The row is made on first use (a flushed test database has none); a concurrent creator's
        # token is as new as ours, so losing the race is fine.
        StatusPageVersion.objects.bulk_create(
            [StatusPageVersion(pk=1, token=token, changed_at=now)], ignore_conflicts=True
        )
    _cache_call(cache.delete, VERSION_KEY)


def _database_version():
    return StatusPageVersion.objects.filter(pk=1).values_list("token", flat=True).first() or ""


def _cache_call(method, *args):
    """A cache operation that never fails the request: the database is the fallback."""
    try:
        return method(*args)
    except Exception:  # noqa: BLE001 - any backend's connection error
        log.warning("status page cache unavailable; rendering from the database", exc_info=True)
        return _ERROR


def rendered(version, render):
    """render() -> (status, content_type, body bytes) as a Document with its ETag (a hash of the body)."""
    status, content_type, body = render()
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    return Document(version, status, content_type, body, etag)


def cached_document(key, render):
    """The public document `key`, from the cache when the public state has not changed since it was
    rendered, else from render() (see rendered()) and stored for the next requests."""
    if transaction.get_connection().in_atomic_block:
        return rendered("", render)
    document_key = DOCUMENT_KEY.format(key)
    found = _cache_call(cache.get_many, [VERSION_KEY, document_key])
    if found is _ERROR:
        return rendered("", render)
    version = found.get(VERSION_KEY)
    if version is None:
        version = _database_version()
        _cache_call(cache.set, VERSION_KEY, version, VERSION_TTL)
    document = found.get(document_key)
    if document is not None and document.version == version:
        return document
    lock_key = RENDER_LOCK_KEY.format(key)
    if document is not None and _cache_call(cache.add, lock_key, 1, RENDER_LOCK_SECONDS) is False:
        return document  # another process is rendering the new one
    try:
        document = rendered(version, render)
    except Exception:
        # Gone (a 404: restricted since, say) or broken: nobody may keep serving the old copy.
        _cache_call(cache.delete_many, [document_key, lock_key])
        raise
    _cache_call(cache.set, document_key, document, settings.STATUS_PAGE_CACHE_SECONDS)
    _cache_call(cache.delete, lock_key)
    return document

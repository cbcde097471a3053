"""Cached public documents: during an outage everyone refreshes the status page at once.

Every public document (the HTML pages, the Statuspage v2 JSON, the embed JSON) is rendered once per
*public state version* and kept in the shared cache (CACHES["default"]; Redis in production), so a
request in the steady state is one cache round trip: `get_many` of the version and the document.

- The version is a random token in one database row (StatusPageVersion), replaced right after the
  commit of every change the public may see (refresh.py; the receivers in invalidation.py say what
  counts).
- The cache keeps the token for VERSION_TTL (1 s) only. A process whose cache is not shared (the
  local-memory default) or a cache delete that got lost reads the token from the database at most
  once a second, so a change shows on every document within about a second either way.
- A document is stored with the token read *before* rendering it: a change that commits during the
  render makes the next request render again, never the reverse.
- Readers never wait for a render they need not do. After a change, the process that made it
  re-renders the documents being read (refresh()) while holding their render locks, so readers keep
  serving the previous copy until the new one is in. Otherwise (a document past
  STATUS_PAGE_CACHE_SECONDS, or a change whose refresh ran elsewhere) one reader renders under the
  lock and the others serve the previous copy; with no copy at all they wait briefly for that one
  render rather than each doing it.
- Inside a transaction (a test, or code reading what it just wrote) the cache is neither read nor
  written: the connection may see changes that are not committed, or that will be rolled back.
- If the cache is unreachable, documents are rendered from the database on each request.
- What a request would otherwise redo on the same bytes is done once, at render time: the body's ETag,
  its gzipped copy (for clients and CDNs that accept gzip), headers worked out from it (the HTML
  pages' Content-Security-Policy).
"""

import gzip
import hashlib
import logging
import time
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
RENDER_LOCK_SECONDS = 5  # a renderer that died blocks nobody longer than this
# A document past STATUS_PAGE_CACHE_SECONDS is kept this much longer, served while it is re-rendered.
STALE_KEEP_SECONDS = 60
COLD_WAIT_SECONDS = 2  # with no copy at all, how long a reader waits for another's render
COLD_POLL_SECONDS = 0.02
_ERROR = object()
GZIP_MIN_BYTES = 200  # shorter bodies gain nothing from compression (as Django's GZipMiddleware judges)
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Document:
    """One rendered public document, as cached: the token it was rendered under, and the response."""

    version: str
    status: int
    content_type: str
    body: bytes
    etag: str
    rendered_at: float = 0.0  # time.time(); a default so that copies cached by older code count as old
    # Response headers worked out from the body once, at render time (the HTML pages' CSP hashes their
    # inline styles: a scan of the whole page that would otherwise run on every request).
    headers: tuple = ()
    # The body gzipped once, at render time, for clients and CDNs that accept it (None: too small to gain).
    gzipped: bytes | None = None

    @property
    def gzip_etag(self):
        """The gzipped representation's own ETag (a strong ETag names one representation's bytes)."""
        return self.etag[:-1] + '-gzip"'


def new_version():
    """A new token for the public state (every cached document is stale from now on); returns it."""
    token, now = uuid.uuid4().hex, timezone.now()
    if not StatusPageVersion.objects.filter(pk=1).update(token=token, changed_at=now):
        # The row is made on first use (a flushed test database has none); a concurrent creator's
        # token is as new as ours, so losing the race is fine.
        StatusPageVersion.objects.bulk_create(
            [StatusPageVersion(pk=1, token=token, changed_at=now)], ignore_conflicts=True
        )
    _cache_call(cache.delete, VERSION_KEY)
    return token


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
    """render() -> (status, content_type, body bytes[, {header: value}]) as a Document with its ETag (a
    hash of the body) and those headers."""
    status, content_type, body, *headers = render()
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = tuple(headers[0].items()) if headers else ()
    gzipped = gzip.compress(body, GZIP_LEVEL, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    return Document(version, status, content_type, body, etag, time.time(), headers, gzipped)


def _is_fresh(document, version):
    return document.version == version and time.time() - document.rendered_at < settings.STATUS_PAGE_CACHE_SECONDS


def _store(key, document):
    timeout = settings.STATUS_PAGE_CACHE_SECONDS + STALE_KEEP_SECONDS
    _cache_call(cache.set, DOCUMENT_KEY.format(key), document, timeout)
    _cache_call(cache.delete, RENDER_LOCK_KEY.format(key))


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
    if document is not None and _is_fresh(document, version):
        return document
    lock_key = RENDER_LOCK_KEY.format(key)
    if _cache_call(cache.add, lock_key, 1, RENDER_LOCK_SECONDS) is False:
        # Another process is rendering it: its previous copy, else that render when it lands.
        document = document or _wait_for(document_key)
        if document is not None:
            return document
    try:
        document = rendered(version, render)
    except Exception:
        # Gone (a 404: restricted since, say) or broken: nobody may keep serving the old copy.
        _cache_call(cache.delete_many, [document_key, lock_key])
        raise
    _store(key, document)
    return document


def _wait_for(document_key):
    deadline = time.monotonic() + COLD_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(COLD_POLL_SECONDS)
        document = _cache_call(cache.get, document_key)
        if document is _ERROR:
            return None
        if document is not None:
            return document
    return None  # that render is slow or died: render it here


def refresh(renders):
    """After a change has committed: a new version, and every document of `renders` (key -> render)
    that is in the cache (someone reads it) re-rendered under it here, once, before readers ask. Their
    locks are taken before the version changes, so until each new copy is in, readers serve the old one."""
    if transaction.get_connection().in_atomic_block:
        new_version()  # callbacks run inside a test's transaction: nothing it sees may be cached
        return
    cached = _cache_call(cache.get_many, [DOCUMENT_KEY.format(key) for key in renders])
    read = [key for key in renders if cached is not _ERROR and DOCUMENT_KEY.format(key) in cached]
    locks = [RENDER_LOCK_KEY.format(key) for key in read]
    _cache_call(cache.set_many, dict.fromkeys(locks, 1), RENDER_LOCK_SECONDS)
    try:
        version = new_version()
    except Exception:
        _cache_call(cache.delete_many, locks)
        raise
    for key in read:
        try:
            document = rendered(version, renders[key])
        except Exception:  # noqa: BLE001 - the next reader renders it (and fails) itself
            log.exception("status page: re-rendering %s after a change failed", key)
            _cache_call(cache.delete, RENDER_LOCK_KEY.format(key))
            continue
        _store(key, document)

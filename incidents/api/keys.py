"""API keys: issue, check and revoke. The admin, the management command and the API all use these.

A key reads ``inc_<prefix>_<secret>``. The prefix finds the row; only a SHA-256 of the whole key is
stored, so a database dump does not leak usable keys, and the key is shown once when it is issued.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.utils import timezone

from incidents.models import ApiKey

KEY_PREFIX = "inc"
# last_used_at is a hint for people tidying up keys, not an audit log: at most one write a minute.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(raw_key):
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_issue(*, api_key):
    """Give an unsaved key (name and user set) its secret, save it, and return the key in clear."""
    prefix = secrets.token_hex(6)
    raw_key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key.prefix = prefix
    api_key.hashed_secret = _hash(raw_key)
    api_key.save()
    return raw_key


def api_key_create(*, name, user):
    """Returns (api_key, raw_key). The raw key is not stored and cannot be shown again."""
    api_key = ApiKey(name=name, user=user)
    return api_key, api_key_issue(api_key=api_key)


def api_key_revoke(*, api_key):
    """Revoking twice keeps the first time."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_key_get_by_raw(raw_key):
    """The active key matching raw_key, with its user loaded, or None."""
    kind, _, rest = raw_key.partition("_")
    prefix, _, secret = rest.partition("_")
    if kind != KEY_PREFIX or not prefix or not secret:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.hashed_secret, _hash(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key

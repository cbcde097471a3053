"""API keys: issue, check and revoke. The admin, the management command and the API all use these.

A key reads ``inc_<prefix>_<secret>``. The prefix finds the row; only a SHA-256 of the whole key is
stored, so a database dump does not leak usable keys, and the key is shown once when it is issued.
"""

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.db.models.signals import m2m_changed, post_delete, post_save
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
    api_key_cache_clear()


# A web process trusts a key it has checked, with its user and that user's permissions, for
# API_KEY_CACHE_SECONDS: three queries fewer on every request. A revoked key, a deactivated user or a
# changed permission reaches every process within that time, and at once the process that made the change
# (saving a key, user, group or permission clears this cache), as alert ingestion does with its keys.
_key_cache = {}  # SHA-256 of the key -> (ApiKey with its user, monotonic time it was read)
_KEY_CACHE_MAX = 10_000


def api_key_cache_clear(**_signal_kwargs):
    _key_cache.clear()


def api_key_get_by_raw(raw_key):
    """The active key matching raw_key, with its user (and the user's permissions) loaded, or None."""
    kind, _, rest = raw_key.partition("_")
    prefix, _, secret = rest.partition("_")
    if kind != KEY_PREFIX or not prefix or not secret:
        return None
    digest = _hash(raw_key)
    cached = _key_cache.get(digest)
    if cached is not None and time.monotonic() - cached[1] < settings.API_KEY_CACHE_SECONDS:
        return cached[0]
    api_key = _api_key_checked(prefix, raw_key)
    if api_key is not None and settings.API_KEY_CACHE_SECONDS > 0:
        _load_permissions(api_key.user)
        if len(_key_cache) >= _KEY_CACHE_MAX:
            _key_cache.clear()
        _key_cache[digest] = (api_key, time.monotonic())
    return api_key


def _load_permissions(user):
    """The user's permissions, direct and through groups, in one query (ModelBackend takes two), kept on the
    user object where ModelBackend.has_perm looks for them."""
    if user.is_superuser or not user.is_active:
        return  # has_perm answers without them
    from django.contrib.auth.models import Permission

    rows = (
        Permission.objects.filter(Q(user=user) | Q(group__user=user))
        .values_list("content_type__app_label", "codename")
        .distinct()
    )
    user._perm_cache = {f"{app_label}.{codename}" for app_label, codename in rows}


def _api_key_checked(prefix, raw_key):
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.hashed_secret, _hash(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def _connect_cache_invalidation():
    from django.contrib.auth.models import Group, Permission

    user_model = get_user_model()
    for model in (ApiKey, user_model, Group, Permission):
        post_save.connect(api_key_cache_clear, sender=model, dispatch_uid=f"api-key-cache-{model._meta.label}")
        post_delete.connect(api_key_cache_clear, sender=model, dispatch_uid=f"api-key-cache-del-{model._meta.label}")
    for through in (user_model.groups.through, user_model.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(api_key_cache_clear, sender=through, dispatch_uid=f"api-key-cache-{through._meta.label}")


_connect_cache_invalidation()

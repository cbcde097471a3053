"""Idempotency-Key on API POSTs: a retry gets the first answer and changes nothing.

The key's row is inserted in the same transaction as the operation it guards (see
incidents.api.base.ApiViewMixin.dispatch), so the row and the incident commit together or not at all.
A concurrent request with the same key waits on the unique index until the first commits, then
replays its answer. Only 2xx answers are kept: after a 4xx nothing was done, and the client may retry.
Keys live API_IDEMPOTENCY_TTL seconds (24 h); expired rows are pruned as requests come in.
"""

import hashlib
import json
import re
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework import exceptions, status

from incidents.models import ApiKey, IdempotencyKey

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[!-~]{1,255}$"  # visible ASCII, as in the IETF draft's examples (UUIDs, tokens)
REPLAYED_HEADER = "Idempotent-Replayed"
KEPT_HEADERS = ("Content-Type", "Location", "ETag")
PRUNE_BATCH = 200


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used with a different request: use a new key for a new request."
    default_code = "idempotency_key_reused"


class Replay(Exception):
    """Raised from the view's initial(): answer with the stored response instead of running the handler."""

    def __init__(self, response):
        super().__init__("replay")
        self.response = response


def requested_key(request):
    """The Idempotency-Key of a POST, None without one; a 400 when it is not 1-255 visible ASCII characters."""
    if request.method != "POST":
        return None
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not re.fullmatch(KEY_PATTERN, key):
        raise exceptions.ValidationError({HEADER: ["Use 1 to 255 visible ASCII characters, e.g. a UUID."]})
    return key


def scope_of(request):
    if isinstance(request.auth, ApiKey):
        return f"key-{request.auth.pk}"
    return f"user-{request.user.pk}"


def request_hash(request):
    """The same request twice hashes the same, whatever the JSON's key order or spacing."""
    body = request._request.body  # the API middleware has read and checked it
    try:
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        pass
    digest = hashlib.sha256(f"{request.method} {request._request.get_full_path()}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _cutoff():
    return timezone.now() - timedelta(seconds=settings.API_IDEMPOTENCY_TTL)


def prune_expired():
    """Delete a batch of expired keys; rows another request is deleting are skipped, never waited for."""
    with transaction.atomic():
        expired = list(
            IdempotencyKey.objects.filter(created_at__lt=_cutoff())
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:PRUNE_BATCH]
        )
        if expired:
            IdempotencyKey.objects.filter(pk__in=expired).delete()


def _replay(row):
    response = HttpResponse(row.body, status=row.status_code)
    for name, value in row.headers.items():
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


def claim(request, key):
    """In the caller's transaction: the new row for this key, or Replay / KeyReused for a key already used."""
    scope, fingerprint = scope_of(request), request_hash(request)
    IdempotencyKey.objects.filter(scope=scope, key=key, created_at__lt=_cutoff()).delete()
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(scope=scope, key=key, request_hash=fingerprint, status_code=0)
    except IntegrityError:
        pass  # another request with this key committed first (we waited for it on the unique index)
    row = IdempotencyKey.objects.get(scope=scope, key=key)
    if row.request_hash != fingerprint:
        raise KeyReused()
    raise Replay(_replay(row))


def settle(row, response):
    """Keep a 2xx answer for replays; after anything else, free the key (nothing was done)."""
    if not 200 <= response.status_code < 300:
        row.delete()
        return
    if hasattr(response, "render"):
        response.render()
    row.status_code = response.status_code
    row.headers = {name: str(response[name]) for name in KEPT_HEADERS if name in response}
    row.body = response.content.decode(response.charset or "utf-8")
    row.save(update_fields=["status_code", "headers", "body"])

"""Alert ingestion endpoints: the senders' own formats, authenticated by the integration key.

Plain Django views rather than DRF ones: the credential is the integration key (not an API key),
the bodies are the senders' formats, and the PagerDuty endpoint answers exactly as PagerDuty does.
Everything else happens in incidents.ingestion.
"""

from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from incidents import ingestion
from incidents.models import Integration
from incidents.ratelimit import retry_after

from .errors import error_body

Kind = Integration.Kind

MAX_BODY_BYTES = settings.INGEST_MAX_BODY_BYTES
PAGERDUTY_MAX_BODY_BYTES = 512 * 1024  # PagerDuty's own limit


def _read_body(request, limit):
    """The body, or None when it is over the limit (read directly: Django's own cap is lower)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


def _client(request):
    return {"headers": request.headers, "remote_addr": request.META.get("REMOTE_ADDR")}


def _too_large(request, kind, limit):
    message = f"The body is larger than {limit // 1024} KB."
    ingestion.payload_store(kind=kind, body=b"", error=message, **_client(request))
    return message


def _webhook(request, kind):
    if request.method != "POST":
        response = JsonResponse(error_body("method_not_allowed", "Only POST is accepted here."), status=405)
        response["Allow"] = "POST"
        return response
    body = _read_body(request, MAX_BODY_BYTES)
    if body is None:
        return JsonResponse(error_body("payload_too_large", _too_large(request, kind, MAX_BODY_BYTES)), status=413)
    try:
        payload, result = ingestion.post_receive(
            kind=kind, body=body, key=ingestion.bearer_key(request.headers.get("Authorization")), **_client(request)
        )
    except ingestion.IngestionError as exc:
        response = JsonResponse(
            error_body(exc.code, str(exc), {"body": exc.errors} if exc.errors else None), status=exc.status_code
        )
        if exc.status_code == 401:
            response["WWW-Authenticate"] = 'Bearer realm="integrations"'
        elif exc.status_code == 429:
            response["Retry-After"] = str(retry_after(60))
        return response
    return JsonResponse(
        {
            "status": "accepted",
            "payload": payload.pk,
            "group": result.group.pk,
            "incident": result.incident_id,
            "incident_created": result.incident_created,
            "alerts": {
                "new": result.new,
                "resolved": result.resolved,
                "acknowledged": result.acknowledged,
                "unchanged": result.unchanged,
            },
        }
    )


@csrf_exempt
@transaction.non_atomic_requests
def alertmanager_webhook(request):
    return _webhook(request, Kind.ALERTMANAGER)


@csrf_exempt
@transaction.non_atomic_requests
def grafana_webhook(request):
    return _webhook(request, Kind.GRAFANA)


def _pagerduty_invalid(errors, status=400):
    return JsonResponse(
        {"status": "invalid event", "message": "Event object is invalid", "errors": errors}, status=status
    )


@csrf_exempt
@transaction.non_atomic_requests
def pagerduty_enqueue(request):
    """PagerDuty Events API v2, request and response bodies unchanged; routing_key is the credential."""
    if request.method != "POST":
        response = _pagerduty_invalid(["Only POST is accepted here."], status=405)
        response["Allow"] = "POST"
        return response
    body = _read_body(request, PAGERDUTY_MAX_BODY_BYTES)
    if body is None:
        return _pagerduty_invalid([_too_large(request, Kind.PAGERDUTY, PAGERDUTY_MAX_BODY_BYTES)])
    try:
        _payload, result = ingestion.post_receive(kind=Kind.PAGERDUTY, body=body, **_client(request))
    except ingestion.TooManyRequests as exc:
        response = _pagerduty_invalid([exc.message], status=429)  # senders retry a 429
        response["Retry-After"] = str(retry_after(60))
        return response
    except ingestion.IngestionError as exc:
        return _pagerduty_invalid(exc.errors or [exc.message])
    return JsonResponse({"status": "success", "message": "Event processed", "dedup_key": result.group_key}, status=202)

"""Outbound webhooks for integrators: events, Standard Webhooks signing, the SSRF guard, delivery.

Every change to an incident writes one timeline event; once its transaction has committed,
`incidents.signals.timeline_event_committed` fires and the receiver below turns it into an event
(`incident.created`, `incident.status_changed`, `update.published`, `review.published`, or
`incident.updated` for every other change), writes one WebhookDelivery per subscribed endpoint
(unique per endpoint and event id) and enqueues its sending. A rolled-back change never fires.

Sending claims the row (pending → sending, a conditional UPDATE), so a duplicated message does
nothing; it resolves the host, refuses loopback, link-local, private and other non-public addresses
unless the endpoint allows them, and connects to the very address it checked (no second lookup for
DNS rebinding to slip through; the Host header and TLS SNI/certificate check keep the name).
2xx is delivered; 5xx, 408, 429, timeouts and connection errors are retried with exponential backoff;
other answers (redirects are not followed) fail at once.
"""

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from incidents.models import TimelineEvent, references_hidden_from, references_redacted, sees_all_incidents
from incidents.signals import timeline_event_committed

from .enqueue import task_enqueue
from .models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

Event = WebhookEndpoint.Event
State = WebhookDelivery.State
Kind = TimelineEvent.Kind
TEST_EVENT = "webhook.test"
ALLOW_PRIVATE_PERMISSION = "comms.allow_private_webhook_destination"
RESPONSE_EXCERPT_BYTES = 2048
# A countdown longer than this is left to the beat sweep (no long ETAs on Redis).
MAX_COUNTDOWN_SECONDS = 300
# A row still "sending" after this long belongs to a worker that died: it is sent again.
SENDING_LEASE = timedelta(minutes=5)
MSG_NAMESPACE = uuid.UUID("5b2a6d0e-6c1f-4f6e-9d7a-0c3e8f1d2b47")


def _setting(name, default):
    return getattr(settings, name, default)


class WebhookError(Exception):
    """Something about a webhook that the person (or the delivery log) should read."""


class DestinationRefused(WebhookError):
    """The URL points where webhooks may not go (not http(s), or a non-public address)."""


# ---- who may do what ------------------------------------------------------------------------------


def can_allow_private_destination(user):
    return bool(user and user.is_active and (user.is_superuser or user.has_perm(ALLOW_PRIVATE_PERMISSION)))


def can_include_restricted(user):
    return bool(user and sees_all_incidents(user))


# ---- signing (Standard Webhooks) ------------------------------------------------------------------


def webhook_signature(*, secret, msg_id, timestamp, body):
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`, keyed with the secret's base64-decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    if isinstance(body, str):
        body = body.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# ---- the SSRF guard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    target: str  # path and query
    addresses: tuple  # every address the host resolved to, all checked


NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are IPv4
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local use: never a public destination


def _embedded_ipv4(ip):
    """(IPv4 address, how) for an IPv6 address that reaches an IPv4 one: mapped, 6to4, Teredo or NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, None
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip.teredo is not None:
        return ip.teredo[1], "Teredo"  # (server, client): the client is the host reached
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    return None, None


def address_refusal(address):
    """Why webhooks may not go to this IP address (None when it is a public one)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        if ip in NAT64_LOCAL:
            return "local-use NAT64"
        embedded, how = _embedded_ipv4(ip)
        if embedded is not None:
            reason = address_refusal(str(embedded))
            if reason is None or how is None:
                return reason
            return f"{reason} ({how} form of {embedded})"
    for attribute, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_unspecified", "unspecified"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attribute):
            return label
    if not ip.is_global:
        return "non-public"
    return None


def host_resolve(host, port):
    """Every address of `host` (a module-level function so tests can stand in for DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(info[4][0] for info in infos))


def _resolve(host, port):
    try:
        addresses = host_resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise WebhookError(f"The host {host} does not resolve ({exc}).") from None
    if not addresses:
        raise WebhookError(f"The host {host} does not resolve.")
    return addresses


def destination_check(url, *, allow_private=False):
    """Where a POST to `url` would go, with every address checked; DestinationRefused if not allowed.

    A host that does not resolve (now) is a WebhookError but not a refusal: sending retries it.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"This is not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("Only http and https URLs are allowed.")
    if not parts.hostname:
        raise DestinationRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("Credentials in the URL (user:password@) are not allowed.")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = (host,)
    except ValueError:
        addresses = _resolve(host, port)
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                named = host if host == address else f"{host} resolves to {address}, which"
                raise DestinationRefused(
                    f"{named} is a {reason} address: webhooks may not go there unless an administrator "
                    "allows private destinations for this endpoint."
                )
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return Destination(parts.scheme, host, port, target, addresses)


def _connection(destination, address, timeout):
    """An HTTP(S) connection that talks to `address` while naming the host (Host header, SNI, certificate)."""
    if destination.scheme == "https":
        connection = http.client.HTTPSConnection(
            destination.host, destination.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(destination.host, destination.port, timeout=timeout)

    def pinned(_address, timeout=None, source_address=None):
        return socket.create_connection((address, destination.port), timeout, source_address)

    connection._create_connection = pinned
    return connection


def destination_post(destination, body, headers, timeout):
    """(status, body excerpt, Location) of a POST to the first checked address that accepts a connection.

    `timeout` bounds the whole delivery, not each read: a receiver that answers a byte every few seconds
    is cut off when the time is up (its socket is shut down) and this raises TimeoutError.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    for address in destination.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection = _connection(destination, address, remaining)
        expired = threading.Event()

        def cut_off(connection=connection, expired=expired):
            expired.set()
            if connection.sock is not None:
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read
                except OSError:
                    pass

        timer = threading.Timer(remaining, cut_off)
        timer.daemon = True
        timer.start()
        try:
            try:
                connection.connect()
            except OSError as exc:
                if expired.is_set() or isinstance(exc, TimeoutError):
                    raise TimeoutError(f"No answer within {timeout} s.") from None
                last_error = exc
                continue
            connection.request("POST", destination.target, body=body, headers=headers)
            response = connection.getresponse()
            excerpt = response.read(RESPONSE_EXCERPT_BYTES)
            if expired.is_set():
                raise TimeoutError(f"No complete answer within {timeout} s.")
            return response.status, excerpt.decode("utf-8", "replace"), response.getheader("Location")
        except (OSError, http.client.HTTPException):
            if expired.is_set():
                raise TimeoutError(f"No complete answer within {timeout} s.") from None
            raise
        finally:
            timer.cancel()
            connection.close()
    if last_error is not None:
        raise last_error
    if destination.addresses:
        raise TimeoutError(f"No answer within {timeout} s.")
    raise OSError("No address to connect to.")


# ---- endpoints ------------------------------------------------------------------------------------

ENDPOINT_FIELDS = ("url", "description", "events", "is_active", "allow_private_destination", "include_restricted")


def webhook_endpoint_clean(*, endpoint, actor, original=None):
    """Validate an endpoint about to be saved by `actor` (original: its saved values, None when new).

    Raises ValidationError with per-field messages: unknown events, a URL that is not allowed, or
    a flag this person may not set.
    """
    errors = {}
    events = endpoint.events
    if not isinstance(events, list) or not events:
        errors["events"] = "Choose at least one event."
    elif unknown := [e for e in events if e not in Event.values]:
        errors["events"] = f"Unknown events: {', '.join(map(str, unknown))}."
    else:
        endpoint.events = [e for e in Event.values if e in events]  # canonical order, no repeats
    was_private = bool(original and original.allow_private_destination)
    if endpoint.allow_private_destination and not was_private and not can_allow_private_destination(actor):
        errors["allow_private_destination"] = "Only an administrator can allow private destinations."
    was_restricted = bool(original and original.include_restricted)
    if endpoint.include_restricted and not was_restricted and not can_include_restricted(actor):
        errors["include_restricted"] = "Only people who see all restricted incidents can include them."
    changed = original is None or (original.url, original.allow_private_destination) != (
        endpoint.url,
        endpoint.allow_private_destination,
    )
    if changed and "url" not in errors:
        # A non-administrator editing the URL of an endpoint an administrator opened to private
        # addresses must not use that to reach one.
        allow = endpoint.allow_private_destination and (
            can_allow_private_destination(actor) or (original is not None and original.url == endpoint.url)
        )
        try:
            destination_check(endpoint.url, allow_private=allow)
        except WebhookError as exc:
            errors["url"] = str(exc)
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def webhook_endpoint_create(*, actor, url, events, description="", is_active=True, **flags):
    endpoint = WebhookEndpoint(url=url, events=list(events), description=description, is_active=is_active, **flags)
    webhook_endpoint_clean(endpoint=endpoint, actor=actor)
    endpoint.save()
    return endpoint


@transaction.atomic
def webhook_endpoint_update(*, endpoint, actor, **changes):
    unknown = set(changes) - set(ENDPOINT_FIELDS)
    if unknown:
        raise TypeError(f"Not editable: {', '.join(sorted(unknown))}")
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    original = WebhookEndpoint(**{name: getattr(endpoint, name) for name in ENDPOINT_FIELDS})
    changes = {name: value for name, value in changes.items() if getattr(endpoint, name) != value}
    if not changes:
        return endpoint
    for name, value in changes.items():
        setattr(endpoint, name, value)
    webhook_endpoint_clean(endpoint=endpoint, actor=actor, original=original)
    endpoint.save(update_fields=list(changes))
    return endpoint


@transaction.atomic
def webhook_endpoint_secret_rotate(*, endpoint):
    from .models import webhook_secret_generate

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret=webhook_secret_generate())
    endpoint.refresh_from_db(fields=["secret"])
    return endpoint


def webhook_endpoint_delete(*, endpoint):
    endpoint.delete()  # its delivery log goes with it


# ---- events ---------------------------------------------------------------------------------------

KIND_EVENTS = {
    Kind.DECLARED: Event.INCIDENT_CREATED,
    Kind.STATUS_CHANGED: Event.INCIDENT_STATUS_CHANGED,
    Kind.UPDATE_PUBLISHED: Event.UPDATE_PUBLISHED,
}


def event_type_for(event):
    if event.kind == Kind.REVIEW:
        published = isinstance(event.data, dict) and event.data.get("action") == "published"
        return Event.REVIEW_PUBLISHED if published else Event.INCIDENT_UPDATED
    return KIND_EVENTS.get(event.kind, Event.INCIDENT_UPDATED)


def _msg_id(event):
    """The webhook-id of a timeline event's message: the same for every endpoint and every retry."""
    return "msg_" + uuid.uuid5(MSG_NAMESPACE, f"{settings.SITE_URL}/timeline/{event.pk}").hex


def _dumps(payload):
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))


def incident_snapshot(incident, *, hidden=frozenset()):
    def link(other):
        return None if other is None or other.reference in hidden else other.reference

    return {
        "id": incident.pk,
        "reference": incident.reference,
        "title": incident.title,
        "summary": incident.summary,
        "status": incident.status,
        "severity": incident.severity.label,
        "severity_level": incident.severity.level,
        "services": sorted(service.slug for service in incident.services.all()),
        "restricted": incident.is_restricted,
        "commander": incident.commander.get_username() if incident.commander else None,
        "recurrence_of": link(incident.recurrence_of),
        "duplicate_of": link(incident.duplicate_of),
        "started_at": incident.started_at,
        "detected_at": incident.detected_at,
        "acknowledged_at": incident.acknowledged_at,
        "mitigated_at": incident.mitigated_at,
        "resolved_at": incident.resolved_at,
        "closed_at": incident.closed_at,
        "url": settings.SITE_URL + reverse("admin:incidents_incident_change", args=[incident.pk]),
    }


def _published_update(event):
    """The published update behind an update_published event, when the event names it."""
    from .models import Update

    data = event.data if isinstance(event.data, dict) else {}
    update_id = data.get("update_id", data.get("update"))
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None
    update = Update.objects.filter(pk=update_id, incident_id=event.incident_id).first()
    if update is None:
        return None
    return {
        "id": update.pk,
        "audience": update.audience,
        "public_status": update.public_status,
        "title": getattr(update, "title", ""),
        "body": update.body,
        "body_html": update.body_html,
        "published_at": update.published_at,
        "corrects": getattr(update, "corrects_id", None),
    }


def _review(data):
    """The review behind a review.published event, with a link to it in the admin."""
    review = dict(data)
    review_id = data.get("review_id")
    if isinstance(review_id, int) and not isinstance(review_id, bool):
        try:
            review["url"] = settings.SITE_URL + reverse("admin:postmortems_review_change", args=[review_id])
        except NoReverseMatch:
            pass
    return review


def event_payload(event, event_type, *, hide_restricted):
    """The body of an event: {"type", "timestamp", "data": {"incident": snapshot, "timeline_event", …}}.

    With hide_restricted, links and references to restricted incidents are left out (None).
    """
    hidden = references_hidden_from(AnonymousUser(), [event]) if hide_restricted else set()
    incident = event.incident
    if hide_restricted:
        hidden |= {
            other.reference
            for other in (incident.recurrence_of, incident.duplicate_of)
            if other and other.is_restricted
        }
    data = references_redacted(event.data, hidden) if isinstance(event.data, dict) else {}
    payload_data = {
        "incident": incident_snapshot(incident, hidden=hidden),
        "timeline_event": {
            "id": event.pk,
            "kind": event.kind,
            "occurred_at": event.occurred_at,
            "actor": event.actor.get_username() if event.actor else None,
            "body": event.body,
            "data": data,
        },
    }
    if event_type == Event.INCIDENT_STATUS_CHANGED:
        payload_data["from"], payload_data["to"] = data.get("from"), data.get("to")
    elif event_type == Event.UPDATE_PUBLISHED:
        payload_data["update"] = _published_update(event)
    elif event_type == Event.REVIEW_PUBLISHED:
        payload_data["review"] = _review(data)
    return {"type": str(event_type), "timestamp": event.occurred_at, "data": payload_data}


def webhook_events_emit(*, event_id):
    """Deliveries for a committed timeline event, one per subscribed endpoint; sending is enqueued.

    Runs after the change committed. Emitting the same event again creates nothing new.
    """
    endpoints = list(WebhookEndpoint.objects.filter(is_active=True))
    if not endpoints:
        return []
    event = (
        TimelineEvent.objects.select_related(
            "actor", "incident__severity", "incident__commander", "incident__recurrence_of", "incident__duplicate_of"
        )
        .filter(pk=event_id)
        .first()
    )
    if event is None:
        return []
    event_type = event_type_for(event)
    incident = event.incident
    targets = [
        endpoint
        for endpoint in endpoints
        if event_type in endpoint.events and (endpoint.include_restricted or not incident.is_restricted)
    ]
    if not targets:
        return []
    msg_id = _msg_id(event)
    already = set(WebhookDelivery.objects.filter(event_id=msg_id).values_list("endpoint_id", flat=True))
    targets = [endpoint for endpoint in targets if endpoint.pk not in already]
    if not targets:
        return []  # emitted before (a repeated signal): nothing new
    bodies = {}
    rows = []
    now = timezone.now()
    for endpoint in targets:
        hide = not endpoint.include_restricted
        if hide not in bodies:
            bodies[hide] = _dumps(event_payload(event, event_type, hide_restricted=hide))
        rows.append(
            WebhookDelivery(
                endpoint=endpoint,
                incident=incident,
                event_id=msg_id,
                event_type=event_type,
                body=bodies[hide],
                next_attempt_at=now,
            )
        )
    with transaction.atomic():
        WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
        ids = list(
            WebhookDelivery.objects.filter(
                event_id=msg_id, endpoint__in=targets, state=State.PENDING, attempts=0
            ).values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: _enqueue(ids))
    return ids


@receiver(timeline_event_committed, dispatch_uid="comms.webhooks.timeline_event_committed")
def _on_timeline_event_committed(sender, event_id, incident_id, kind, **kwargs):
    # Never let a webhook problem break the change that was just committed (or the callbacks after it).
    try:
        webhook_events_emit(event_id=event_id)
    except Exception:
        logger.exception("Could not create webhook deliveries for timeline event %s", event_id)


@transaction.atomic
def webhook_test_send(*, endpoint):
    """A `webhook.test` event for one endpoint (whatever it subscribes to), sent like any other."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = timezone.now()
    body = _dumps(
        {
            "type": TEST_EVENT,
            "timestamp": now,
            "data": {
                "endpoint": {"id": endpoint.pk, "url": endpoint.url},
                "message": "A test event: the endpoint is reachable and verifies signatures.",
            },
        }
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event_id=msg_id, event_type=TEST_EVENT, body=body, next_attempt_at=now
    )
    transaction.on_commit(lambda: _enqueue([delivery.pk]))
    return delivery


# ---- delivery -------------------------------------------------------------------------------------


def _enqueue(delivery_ids, countdown=None):
    """Hand deliveries to Celery. When the broker is down they stay pending and the sweep sends them later."""
    for delivery_id in delivery_ids:
        if not task_enqueue(
            "webhook_delivery_send", delivery_id, countdown=countdown, what=f"webhook deliveries {delivery_ids}"
        ):
            return False
    return True


def retry_delay(attempts):
    """Seconds to wait after the attempts-th failed attempt: base, 4×base, 16×base, …"""
    return _setting("WEBHOOK_RETRY_BASE_SECONDS", 30) * 4 ** (attempts - 1)


def _finish(delivery, **fields):
    """Record an attempt's outcome on the row this worker claimed."""
    WebhookDelivery.objects.filter(pk=delivery.pk, state=State.SENDING).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)
    return delivery


def _failed_attempt(delivery, *, error, status=None, response_body=""):
    max_attempts = _setting("WEBHOOK_MAX_ATTEMPTS", 6)
    fields = {"error": error, "response_status_code": status, "response_body": response_body}
    if delivery.attempts >= max_attempts:
        return _finish(
            delivery,
            state=State.FAILED,
            next_attempt_at=None,
            **{**fields, "error": f"{error} Gave up after {delivery.attempts} attempts."},
        )
    delay = retry_delay(delivery.attempts)
    _finish(delivery, state=State.PENDING, next_attempt_at=timezone.now() + timedelta(seconds=delay), **fields)
    if delay <= MAX_COUNTDOWN_SECONDS:
        transaction.on_commit(lambda: _enqueue([delivery.pk], countdown=delay))
    return delivery


def webhook_delivery_send(*, delivery_id):
    """Send one delivery if it is pending and due; a duplicate message (or a sent one) does nothing.

    Returns the delivery after this attempt, or None when there was nothing to do.
    """
    now = timezone.now()
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, state=State.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + timedelta(seconds=5)))
        .update(state=State.SENDING, attempts=F("attempts") + 1, last_attempt_at=now)
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "incident").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        return _finish(delivery, state=State.FAILED, next_attempt_at=None, error="Not sent: the endpoint is disabled.")
    if delivery.incident is not None and delivery.incident.is_restricted and not endpoint.include_restricted:
        return _finish(
            delivery, state=State.FAILED, next_attempt_at=None, error="Not sent: the incident is restricted now."
        )
    try:
        destination = destination_check(endpoint.url, allow_private=endpoint.allow_private_destination)
    except DestinationRefused as exc:
        return _finish(delivery, state=State.FAILED, next_attempt_at=None, error=f"Refused: {exc}")
    except WebhookError as exc:
        return _failed_attempt(delivery, error=str(exc))
    body = delivery.body.encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "incidents-webhooks/1",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(
            secret=endpoint.secret, msg_id=delivery.event_id, timestamp=timestamp, body=body
        ),
    }
    timeout = _setting("WEBHOOK_TIMEOUT_SECONDS", 10)
    try:
        status, excerpt, location = destination_post(destination, body, headers, timeout)
    except TimeoutError:
        return _failed_attempt(delivery, error=f"No answer within {timeout} s.")
    except (OSError, http.client.HTTPException) as exc:
        return _failed_attempt(delivery, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    excerpt = excerpt[:1000]
    if 200 <= status < 300:
        return _finish(
            delivery,
            state=State.DELIVERED,
            delivered_at=timezone.now(),
            next_attempt_at=None,
            response_status_code=status,
            response_body=excerpt,
            error="",
        )
    if status >= 500 or status in (408, 429):
        return _failed_attempt(delivery, error=f"HTTP {status}.", status=status, response_body=excerpt)
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed (Location: {location or '—'}); fix the URL."
    else:
        error = f"HTTP {status}: the receiver refused it; not retried."
    return _finish(
        delivery,
        state=State.FAILED,
        next_attempt_at=None,
        response_status_code=status,
        response_body=excerpt,
        error=error,
    )


def webhook_delivery_retry(*, delivery):
    """Send a failed delivery again from the start of its backoff schedule (an administrator's action)."""
    retried = WebhookDelivery.objects.filter(pk=delivery.pk, state=State.FAILED).update(
        state=State.PENDING, attempts=0, next_attempt_at=timezone.now(), error=""
    )
    if retried:
        transaction.on_commit(lambda: _enqueue([delivery.pk]))
    return bool(retried)


def webhook_deliveries_sweep(*, now=None, grace=timedelta(seconds=60), limit=500):
    """Re-enqueue deliveries that are due (lost messages, broker down, long backoffs); free stuck ones.

    A row still "sending" past the lease was being sent by a worker that died: it is sent again (the
    receiver may see that message twice, with the same webhook-id).
    """
    now = now or timezone.now()
    WebhookDelivery.objects.filter(state=State.SENDING, last_attempt_at__lt=now - SENDING_LEASE).update(
        state=State.PENDING, next_attempt_at=F("last_attempt_at"), error="The worker stopped while sending: sent again."
    )
    due = list(
        WebhookDelivery.objects.filter(state=State.PENDING, next_attempt_at__lte=now - grace)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    if due:
        _enqueue(due)
    return due

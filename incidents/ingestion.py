"""Alert ingestion: the senders' own formats in, incidents out.

Three formats arrive unchanged: the Prometheus Alertmanager webhook, Grafana's webhook contact
point (the Alertmanager body plus a few fields) and the PagerDuty Events API v2. Each post goes
through the same steps:

1. ``post_receive`` keeps the body exactly as it came (an ``AlertPayload`` row, committed on its
   own, so a rejected post is kept too), authenticates the integration key and parses the body
   into a ``ParsedPost``: one group key and the alerts it describes.
2. ``alerts_apply`` compares the alerts with the ones already tracked for the group (one per
   integration and sender group key). Most posts are repeats and change nothing: they are accepted
   after one read. Otherwise the group row is locked (created first if new, so that a storm of
   posts for one group opens one incident), the comparison is made again under the lock, and the
   group's incident is opened, updated or resolved through the incident services, in one
   transaction.

Decisions the rules below encode:
- An alert is one firing episode: (group, fingerprint, startsAt). A re-fire has a new startsAt and
  is a new alert; an episode only ever moves from firing to resolved.
- An alert is resolved only by a post that says so. One that is merely absent (a truncated or
  partial post) stays firing.
- One open incident per group. A new firing alert while the group's incident is closed, resolved
  or dismissed opens a new incident, linked as a recurrence of the previous one (unless that one
  was dismissed). Alerts that are still firing move to the new incident.
- When every alert tracked for the group has resolved, the incident moves to the integration's
  ``resolve_to`` status, dated when the last alert ended.
- Severity comes from the sender (labels.severity, PagerDuty payload.severity) through the mapping
  in ``DEFAULT_LEVELS`` plus the integration's overrides; a group takes its worst firing alert.
  Ingestion only ever raises severity, and only when a new or changed alert is worse than the
  incident: it never lowers one, so nothing a person set is undone, and re-sends of the same
  alerts do not fight a person who lowered it.
- ``Integration.open_mode``: "triage" (the default) declares the incident and leaves it Detected,
  waiting for a responder to acknowledge, triage or dismiss it; "respond" declares it and moves it
  straight to Responding, for senders whose alerts are known to be real incidents. Either way the
  system is the actor, so acknowledged_at (MTTA) waits for a person.
- A mitigated incident whose group fires a new alert goes back to Responding.
- PagerDuty's acknowledge is recorded on the timeline and on the alert, but it is not a person's
  acknowledgement of the incident. Acknowledge or resolve with nothing open is accepted and dropped.
- Every post is answered synchronously (there is no queue): the work per post is small, and a 5xx
  makes Alertmanager retry, so nothing is lost if the database is briefly unavailable.
"""

import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import services
from .models import Alert, AlertGroup, AlertPayload, Incident, Integration, Severity, TimelineEvent
from .ratelimit import rate_limit_hit
from .timebounds import OUT_OF_RANGE, within_bounds

Kind = Integration.Kind

# ---- errors ---------------------------------------------------------------------------------------


class IngestionError(Exception):
    """A post the endpoint refuses. The message (and `errors`) are meant for whoever set up the sender."""

    status_code = 400
    code = "invalid"

    def __init__(self, message, errors=(), integration=None):
        super().__init__(message)
        self.message = message
        self.errors = list(errors)
        self.integration = integration  # the integration the post is recorded under, if known

    def __str__(self):
        return " ".join(part for part in (self.message, *self.errors) if part)


class NotAuthenticated(IngestionError):
    status_code = 401
    code = "not_authenticated"


class Forbidden(IngestionError):
    status_code = 403
    code = "permission_denied"


class PayloadInvalid(IngestionError):
    status_code = 400
    code = "invalid_payload"


class PayloadTooLarge(IngestionError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(IngestionError):
    status_code = 429
    code = "throttled"


# ---- integrations and their keys ------------------------------------------------------------------


def _key_hash(key):
    # Keys are 128 random bits: a plain SHA-256 is enough, and cheap enough for every post.
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key():
    """32 hex characters: the shape of a PagerDuty routing key, so senders that check it accept it."""
    return secrets.token_hex(16)


@transaction.atomic
def integration_create(
    *, kind, name, services=(), open_mode=None, resolve_to=None, severity_overrides=None, signing_secret=""
):
    """Create an integration and return (integration, key). The key is not stored: show it now."""
    integration = Integration(
        kind=Kind(kind),
        name=name,
        severity_overrides=severity_overrides or {},
        signing_secret=signing_secret,
        open_mode=open_mode or Integration.OpenMode.TRIAGE,
        resolve_to=resolve_to or Integration.ResolveTo.RESOLVED,
    )
    key = integration_key_set(integration)
    integration.services.set(services)
    return integration, key


@transaction.atomic
def integration_key_rotate(*, integration):
    """Give the integration a new key (the old one stops working at once) and return it."""
    integration = Integration.objects.select_for_update().get(pk=integration.pk)
    return integration_key_set(integration)


def integration_key_set(integration):
    """Save the integration with a new key and return the key (only its prefix and hash are kept)."""
    integration_cache_clear()
    for _ in range(5):
        key = _new_key()
        integration.key_prefix = key[: Integration.KEY_PREFIX_LENGTH]
        integration.key_hash = _key_hash(key)
        try:
            with transaction.atomic():
                integration.save()
            return key
        except IntegrityError:
            # A prefix already in use (1 in 4 billion); a duplicate name is the caller's mistake.
            if Integration.objects.filter(name=integration.name).exclude(pk=integration.pk).exists():
                raise
    raise IntegrityError("Could not find an unused key prefix.")


# Every post authenticates; a process remembers the keys it has matched for a few seconds, so a
# rotated key, a disabled integration or changed settings take up to this long to reach every web
# process (at once in the process that made the change).
KEY_CACHE_SECONDS = settings.INGEST_KEY_CACHE_SECONDS
_key_cache = {}  # key hash -> (integration, monotonic time it was read)


def integration_cache_clear():
    _key_cache.clear()


def _integration_for(key):
    digest = _key_hash(key)
    cached = _key_cache.get(digest)
    if cached is not None and time.monotonic() - cached[1] < KEY_CACHE_SECONDS:
        return cached[0]
    integration = Integration.objects.filter(key_prefix=key[: Integration.KEY_PREFIX_LENGTH]).first()
    if integration is None or not hmac.compare_digest(integration.key_hash, digest):
        return None
    _key_cache[digest] = (integration, time.monotonic())
    return integration


def integration_authenticate(*, kind, key):
    """The active integration of this kind that the key belongs to."""
    if not key:
        if kind == Kind.PAGERDUTY:
            raise NotAuthenticated("routing_key is missing: it must be the key of a PagerDuty integration.")
        raise NotAuthenticated("Authentication is missing: send the integration key as 'Authorization: Bearer <key>'.")
    integration = _integration_for(key)
    if integration is None:
        what = "routing_key" if kind == Kind.PAGERDUTY else "The key"
        raise NotAuthenticated(f"{what} does not match any integration.")
    if integration.kind != kind:
        raise Forbidden(
            f"This key belongs to the {integration.get_kind_display()} integration “{integration.name}”; "
            f"post to /api/v1/integrations/{integration.kind}/ instead.",
            integration=integration,
        )
    if not integration.is_active:
        raise Forbidden(f"The integration “{integration.name}” is disabled.", integration=integration)
    return integration


GRAFANA_SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"
GRAFANA_TIMESTAMP_HEADER = "X-Grafana-Alerting-Timestamp"
SIGNATURE_MAX_AGE = timedelta(minutes=5)


def grafana_signature_verify(*, integration, body, signature, timestamp=None):
    """Grafana's optional HMAC: hex HMAC-SHA256 of the body, or of "<timestamp>:<body>"."""
    if not integration.signing_secret:
        return
    if not signature:
        raise NotAuthenticated(
            f"This integration requires a signed body: the {GRAFANA_SIGNATURE_HEADER} header is missing."
        )
    message = f"{timestamp}:".encode() + body if timestamp else body
    expected = hmac.new(integration.signing_secret.encode(), message, hashlib.sha256).hexdigest()
    # Bytes: compare_digest refuses str with non-ASCII characters, and a header can hold any Latin-1 one.
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise NotAuthenticated(f"{GRAFANA_SIGNATURE_HEADER} does not match the body and the integration's secret.")
    if timestamp and timestamp.isascii() and timestamp.isdigit():
        # Seconds, or milliseconds; longer is no time of ours (and too large to compare with one).
        seconds = int(timestamp) / (1000 if len(timestamp) > 11 else 1) if len(timestamp) <= 13 else float("inf")
        if abs(time.time() - seconds) > SIGNATURE_MAX_AGE.total_seconds():
            raise NotAuthenticated(
                f"{GRAFANA_TIMESTAMP_HEADER} is more than five minutes away from now: a replayed post?"
            )


# ---- severity mapping -----------------------------------------------------------------------------

# INTEGRATIONS.md: Alertmanager and Grafana `labels.severity`, compared case-insensitively.
DEFAULT_LEVELS = {
    **dict.fromkeys(("critical", "page", "emergency", "fatal", "p1", "sev1"), 1),
    **dict.fromkeys(("error", "high", "major", "p2", "sev2"), 2),
    **dict.fromkeys(("warning", "warn", "medium", "minor", "p3", "sev3"), 3),
    **dict.fromkeys(("info", "low", "none", "p4", "p5", "sev4"), 4),
}
PAGERDUTY_LEVELS = {"critical": 1, "error": 2, "warning": 3, "info": 4}
DEFAULT_LEVEL = 3  # missing or unknown severity


def severity_levels(integration):
    """The value → level table for an integration: the sender's defaults, then its overrides."""
    table = dict(PAGERDUTY_LEVELS if integration.kind == Kind.PAGERDUTY else DEFAULT_LEVELS)
    table.update({str(k).strip().lower(): int(v) for k, v in (integration.severity_overrides or {}).items()})
    return table


def severity_for_level(level):
    """The Severity row for a level; if administrators removed that level, the nearest one."""
    return (
        Severity.objects.filter(level__gte=level).order_by("level").first()
        or Severity.objects.order_by("-level").first()
    )


# ---- parsing --------------------------------------------------------------------------------------


@dataclass
class ParsedAlert:
    fingerprint: str
    status: str  # firing, resolved, or acknowledged (PagerDuty)
    level: int
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    starts_at: datetime | None = None  # None: the fingerprint's current episode, or a new one from now
    ends_at: datetime | None = None
    summary: str = ""
    details: dict = field(default_factory=dict)
    began_at: datetime | None = None  # when impact began, if the sender says (PagerDuty payload.timestamp)


@dataclass
class ParsedPost:
    group_key: str
    alerts: list
    partial: bool = False
    title: str = ""
    description: str = ""
    labels: dict = field(default_factory=dict)
    dedup_key: str | None = None


_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_time(value, where):
    """RFC 3339 with any number of fraction digits and any offset. Go's zero time (year 1) is None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadInvalid("", [f"{where} must be an RFC 3339 time string, not {type(value).__name__}."])
    match = _TIME_RE.match(value.strip())
    if not match:
        raise PayloadInvalid("", [f"{where}: {value[:60]!r} is not an RFC 3339 time (e.g. 2024-03-01T02:09:00Z)."])
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if int(year) <= 1:
        return None
    try:
        if offset in (None, "Z", "z"):
            tz = UTC
        else:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            tz = dt_timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0)))
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        ).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # e.g. an offset of 24 hours or more; past year 9999 in UTC
        raise PayloadInvalid("", [f"{where}: {value[:60]!r} is not a valid time ({exc})."]) from None
    if not within_bounds(parsed):
        raise PayloadInvalid("", [f"{where}: {value[:60]!r} is out of range. {OUT_OF_RANGE}"])
    return parsed


def label_fingerprint(labels):
    """Prometheus' fingerprint of a label set (FNV-1a 64 over sorted names and values), as 16 hex digits.

    The same value Alertmanager sends in `fingerprint`, so a body from an older sender that lacks it
    tracks the alert under the same identity.
    """
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ 0xFF) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _string_map(value, where, errors, required=False):
    if value is None:
        if required:
            errors.append(f"{where} is missing.")
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where} must be an object of names to strings.")
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _severity_value(labels):
    value = labels.get("severity")
    if value is None:
        value = next((v for k, v in labels.items() if k.lower() == "severity"), "")
    return value.strip().lower()


def _render_labels(labels):
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


ALERTMANAGER_DETAIL_FIELDS = {
    "generatorURL": "generator_url",
    # Grafana's additions.
    "silenceURL": "silence_url",
    "dashboardURL": "dashboard_url",
    "panelURL": "panel_url",
    "imageURL": "image_url",
    "values": "values",
    "valueString": "value_string",
}


def parse_alertmanager(data, *, levels, now):
    """An Alertmanager (`version` 4) or Grafana (`version` 1) webhook body."""
    if not isinstance(data, dict):
        raise PayloadInvalid("The body must be a JSON object (an Alertmanager or Grafana webhook message).")
    errors = []
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        errors.append("alerts is missing or is not a list.")
        raw_alerts = []
    group_labels = _string_map(data.get("groupLabels"), "groupLabels", errors)
    group_key = data.get("groupKey")
    if isinstance(group_key, int | float) and not isinstance(group_key, bool):
        group_key = str(group_key)
    if group_key in (None, "") and isinstance(data.get("groupLabels"), dict):
        group_key = "{}:" + _render_labels(group_labels)  # what Alertmanager itself would have sent
    if not isinstance(group_key, str) or not group_key:
        errors.append("groupKey is missing (and there are no groupLabels to derive it from).")
    truncated = data.get("truncatedAlerts")
    partial = isinstance(truncated, int) and not isinstance(truncated, bool) and truncated > 0

    alerts = []
    for i, raw in enumerate(raw_alerts):
        where = f"alerts[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where} must be an object.")
            continue
        labels = _string_map(raw.get("labels"), f"{where}.labels", errors, required=True)
        annotations = _string_map(raw.get("annotations"), f"{where}.annotations", errors)
        try:
            starts_at = parse_time(raw.get("startsAt"), f"{where}.startsAt")
            ends_at = parse_time(raw.get("endsAt"), f"{where}.endsAt")
        except PayloadInvalid as exc:
            errors.extend(exc.errors)
            continue
        status = raw.get("status")
        if status is None:
            status = "resolved" if ends_at is not None and ends_at <= now else "firing"
        if not isinstance(status, str) or status.lower() not in ("firing", "resolved"):
            errors.append(f"{where}.status must be 'firing' or 'resolved', not {status!r}.")
            continue
        fingerprint = raw.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint.strip():
            fingerprint = label_fingerprint(labels)
        details = {ours: raw[theirs] for theirs, ours in ALERTMANAGER_DETAIL_FIELDS.items() if raw.get(theirs)}
        alerts.append(
            ParsedAlert(
                fingerprint=fingerprint.strip()[:255],
                status=status.lower(),
                level=levels.get(_severity_value(labels), DEFAULT_LEVEL),
                labels=labels,
                annotations=annotations,
                starts_at=starts_at,
                ends_at=ends_at,
                summary=(annotations.get("summary") or annotations.get("message") or labels.get("alertname") or "")[
                    :1024
                ],
                details=details,
            )
        )
    if errors:
        raise PayloadInvalid("The body is not a valid webhook message.", errors)

    common_labels = data.get("commonLabels") if isinstance(data.get("commonLabels"), dict) else {}
    common_annotations = data.get("commonAnnotations") if isinstance(data.get("commonAnnotations"), dict) else {}
    firing = [a for a in alerts if a.status == "firing"] or alerts
    name = str(common_labels.get("alertname") or group_labels.get("alertname") or "")
    summary = str(common_annotations.get("summary") or (firing[0].annotations.get("summary", "") if firing else ""))
    if name and summary and name.lower() not in summary.lower():
        title = f"{name}: {summary}"
    else:
        title = summary or name
    if not title and isinstance(data.get("title"), str):
        title = re.sub(r"^\[[A-Z]+(:\d+)?\]\s*", "", data["title"])  # Grafana's "[FIRING:1] …"
    description = str(
        common_annotations.get("description")
        or common_annotations.get("message")
        or (firing[0].annotations.get("description", "") if firing else "")
    )
    return ParsedPost(
        group_key=group_key[:10_000],
        alerts=alerts,
        partial=partial,
        title=title or f"Alert group {group_key}",
        description=description,
        labels=group_labels,
    )


PAGERDUTY_ACTIONS = ("trigger", "acknowledge", "resolve")


def parse_pagerduty(data, *, levels, now):
    """A PagerDuty Events API v2 event. The routing_key was checked before."""
    errors = []
    action = data.get("event_action")
    if action not in PAGERDUTY_ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(PAGERDUTY_ACTIONS)}.")
    dedup_key = data.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters.")
    elif not dedup_key:
        if action == "trigger":
            dedup_key = uuid.uuid4().hex
        elif action in PAGERDUTY_ACTIONS:
            errors.append(f"'dedup_key' is required to {action}.")

    payload = data.get("payload")
    level, summary, labels, details, began_at = DEFAULT_LEVEL, "", {}, {}, None
    if action == "trigger":
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or is not an object.")
            payload = {}
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors.append("'payload.summary' is missing.")
        elif len(summary) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters.")
        source = payload.get("source")
        if not isinstance(source, str) or not source.strip():
            errors.append("'payload.source' is missing.")
        severity = payload.get("severity")
        if not isinstance(severity, str) or severity.strip().lower() not in levels:
            errors.append(f"'payload.severity' must be one of {', '.join(sorted(levels, key=levels.get))}.")
        else:
            level = levels[severity.strip().lower()]
        try:
            began_at = parse_time(payload.get("timestamp"), "'payload.timestamp'")
        except PayloadInvalid as exc:
            errors.extend(exc.errors)
        for name in ("component", "group", "class"):
            if payload.get(name) is not None and not isinstance(payload.get(name), str):
                errors.append(f"'payload.{name}' must be a string.")
        for name in ("links", "images"):
            if data.get(name) is not None and not isinstance(data.get(name), list):
                errors.append(f"'{name}' must be a list.")
        if errors:
            raise PayloadInvalid("Event object is invalid", errors)
        labels = {k: payload[k] for k in ("source", "component", "group", "class") if payload.get(k)}
        labels["severity"] = severity.strip().lower()
        details = {
            k: v
            for k, v in (
                ("custom_details", payload.get("custom_details")),
                ("client", data.get("client")),
                ("client_url", data.get("client_url")),
                ("links", data.get("links")),
                ("images", data.get("images")),
                ("timestamp", payload.get("timestamp")),
            )
            if v
        }
    if errors:
        raise PayloadInvalid("Event object is invalid", errors)

    status = {"trigger": "firing", "acknowledge": "acknowledged", "resolve": "resolved"}[action]
    summary = (summary or "").strip()
    alert = ParsedAlert(
        fingerprint=dedup_key,
        status=status,
        level=level,
        labels=labels,
        annotations={"summary": summary} if summary else {},
        ends_at=now if status == "resolved" else None,
        summary=summary,
        details=details,
        began_at=began_at,
    )
    custom = details.get("custom_details")
    description = json.dumps(custom, indent=2, sort_keys=True)[:4000] if custom else ""
    return ParsedPost(
        group_key=dedup_key, alerts=[alert], title=summary, description=description, labels=labels, dedup_key=dedup_key
    )


def post_parse(*, integration, data, now=None):
    now = now or timezone.now()
    levels = severity_levels(integration)
    if integration.kind == Kind.PAGERDUTY:
        return parse_pagerduty(data, levels=levels, now=now)
    return parse_alertmanager(data, levels=levels, now=now)


# ---- receiving a post -----------------------------------------------------------------------------

KEPT_HEADERS = (
    "User-Agent",
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Request-Id",
    GRAFANA_SIGNATURE_HEADER,
    GRAFANA_TIMESTAMP_HEADER,
)


def headers_kept(headers):
    """The headers worth keeping with a payload: never a credential, only which key was tried."""
    kept = {name: headers[name] for name in KEPT_HEADERS if headers.get(name)}
    authorization = headers.get("Authorization", "").strip()
    if authorization:
        scheme, _, key = authorization.partition(" ")
        if not key:  # no scheme: the whole value is the credential
            scheme, key = "", scheme
        kept["Authorization"] = f"{scheme[:20]} {key.strip()[: Integration.KEY_PREFIX_LENGTH]}…".lstrip()
    return kept


# PagerDuty's credential travels in the body: only its first characters are stored.
ROUTING_KEY_RE = re.compile(r'("routing_key"\s*:\s*")((?:[^"\\]|\\.){0,8})(?:[^"\\]|\\.)*(")')


def routing_key_redacted(text):
    """The body with every routing_key value cut to its first 8 characters (as the key prefix is shown)."""
    return ROUTING_KEY_RE.sub(r"\1\2…\3", text) if '"routing_key"' in text else text


def bearer_key(authorization):
    scheme, _, key = (authorization or "").strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def _body_text(body):
    """The body as text. Valid JSON is valid UTF-8 without NUL bytes, so it is kept exactly."""
    try:
        text, error = body.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        text, error = (
            body.decode("utf-8", "backslashreplace"),
            f"The body is not UTF-8 ({exc.reason} at byte {exc.start}).",
        )
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        text, error = text.replace("\x00", "\\x00"), error or "The body contains NUL bytes."
    return text, error


def _no_constants(name):
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text):
    value = float(text)
    if math.isinf(value):  # 1e400 is JSON, but stored it would be Infinity, which is not
        raise PayloadInvalid(f"The body has a number too large to store: {text[:40]}.")
    return value


# Deeper than any sender nests (Alertmanager: 4), and far enough below Python's recursion limit that
# storing, encoding or printing what was parsed cannot hit it (parsing itself stops short of it).
MAX_JSON_DEPTH = 100


def _too_deep(data, limit=MAX_JSON_DEPTH):
    """Whether parsed JSON nests containers more than `limit` deep (level by level: no recursion)."""
    level = [data]
    for _ in range(limit):
        below = []
        for value in level:
            if value.__class__ is dict:
                below += value.values()
            elif value.__class__ is list:
                below += value
        if not below:
            return False
        level = below
    return any(value.__class__ in (dict, list) for value in level)


def json_load(text):
    """Parse a body, refusing what JSON allows but the database cannot store."""
    try:
        data = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise PayloadInvalid("The body is nested too deeply.") from None
    except ValueError as exc:
        raise PayloadInvalid(f"The body is not JSON: {exc}.") from None
    # Counting brackets is cheap and bounds the depth: most bodies need no walk.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _too_deep(data):
        raise PayloadInvalid(f"The body is nested more than {MAX_JSON_DEPTH} deep.")
    if "\\u0000" in text:
        raise PayloadInvalid("The body contains \\u0000, which cannot be stored.")
    if "\\ud" in text.lower():
        try:  # lone surrogates cannot be encoded, let alone stored
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise PayloadInvalid("The body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff).") from None
    return data


def payload_store(*, kind, body, headers, remote_addr=None, error=""):
    """Keep a post as received, committed on its own so that a later rejection cannot lose it."""
    text, encoding_error = _body_text(body)
    return _payload_save(kind=kind, text=text, headers=headers, remote_addr=remote_addr, error=error), encoding_error


def _payload_save(*, kind, text, headers, remote_addr=None, error=""):
    payload = AlertPayload(
        kind=kind,
        body=routing_key_redacted(text) if kind == Kind.PAGERDUTY else text,
        headers=headers_kept(headers),
        remote_addr=remote_addr or None,
        status=AlertPayload.Status.REJECTED if error else AlertPayload.Status.RECEIVED,
        error=error,
    )
    if error or connection.vendor != "postgresql" or connection.in_atomic_block:
        payload.save()  # autocommit, or the caller's transaction
    else:
        _insert_commit_later(payload)
    return payload


_PAYLOAD_COLUMNS = ("kind", "received_at", "remote_addr", "headers", "body", "status", "error")


@functools.cache
def _insert_statement():
    fields = [AlertPayload._meta.get_field(name) for name in _PAYLOAD_COLUMNS]
    quote = connection.ops.quote_name
    sql = (
        "BEGIN; SET LOCAL synchronous_commit TO OFF; "
        f"INSERT INTO {quote(AlertPayload._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(AlertPayload._meta.pk.column)}; COMMIT"
    )
    return sql, fields


def _insert_commit_later(payload):
    """INSERT the row in its own transaction, in one round trip, without waiting for the disk.

    Safe because every answer to the sender comes after a later synchronous commit on this
    connection (the post's result, or its rejection), which flushes this one too. PostgreSQL only,
    and only outside any transaction of the caller's (Django's cursors bind parameters client-side,
    so the statements travel together).
    """
    sql, fields = _insert_statement()
    params = [field.get_db_prep_save(getattr(payload, field.attname), connection) for field in fields]
    with connection.cursor() as cursor:
        try:
            cursor.execute(sql, params)
            while cursor.description is None:  # BEGIN and SET answer no rows; the INSERT does
                cursor.nextset()
            payload.pk = cursor.fetchone()[0]
        except Exception:
            try:
                cursor.execute("ROLLBACK")  # the explicit BEGIN is still open if a statement failed
            except Exception:  # noqa: BLE001  the connection itself is gone: the first error is the one to report
                pass
            raise
    payload._state.adding, payload._state.db = False, connection.alias
    return payload


def _payload_mark(payload, status, error="", integration=None):
    AlertPayload.objects.filter(pk=payload.pk).update(
        status=status, error=error[:10_000], integration=integration or payload.integration
    )
    payload.status, payload.error = status, error


def post_receive(*, kind, body, headers, remote_addr=None, key=None):
    """Keep, authenticate, parse and apply one post. Returns (payload, IngestResult).

    Raises an IngestionError (the payload is kept, marked rejected) for anything the sender must fix.
    `key` is the bearer key for Alertmanager and Grafana; PagerDuty's routing_key is in the body.
    """
    kind = Kind(kind)
    text, encoding_error = _body_text(body)
    if kind != Kind.PAGERDUTY:
        # The key is in a header: a post without a valid one is refused before its body is stored whole.
        try:
            integration_authenticate(kind=kind, key=key)
        except NotAuthenticated as exc:
            _unauthenticated_record(exc, kind=kind, text=text, headers=headers, remote_addr=remote_addr)
            raise
        except Forbidden:
            pass  # a known key: recorded whole below, and refused there
    payload = _payload_save(kind=kind, text=text, headers=headers, remote_addr=remote_addr)
    integration = data = None
    try:
        if encoding_error:
            raise PayloadInvalid(encoding_error)
        data = json_load(text)
        if kind == Kind.PAGERDUTY:
            if not isinstance(data, dict):
                raise PayloadInvalid("Event object is invalid", ["The body must be a JSON object."])
            key = data.get("routing_key")
            if key is not None and not isinstance(key, str):
                raise PayloadInvalid("Event object is invalid", ["'routing_key' must be a string."])
        integration = integration_authenticate(kind=kind, key=key)
        payload.integration = integration
        if kind == Kind.GRAFANA:
            grafana_signature_verify(
                integration=integration,
                body=body,
                signature=headers.get(GRAFANA_SIGNATURE_HEADER),
                timestamp=headers.get(GRAFANA_TIMESTAMP_HEADER),
            )
        post = post_parse(integration=integration, data=data)
        result = alerts_apply(integration=integration, post=post, payload=payload)
    except NotAuthenticated as exc:
        _unauthenticated_record(
            exc,
            kind=kind,
            text=text,
            headers=headers,
            remote_addr=remote_addr,
            payload=payload,
            integration=integration,
        )
        raise
    except IngestionError as exc:
        _payload_mark(payload, AlertPayload.Status.REJECTED, str(exc), integration or exc.integration)
        _group_link(payload, integration or exc.integration, data)
        raise
    except Exception as exc:
        _payload_mark(payload, AlertPayload.Status.FAILED, f"{type(exc).__name__}: {exc}", integration)
        raise
    return payload, result


# Anyone can post to the endpoints: what fails authentication is kept only as a bounded prefix (enough
# to see what a misconfigured sender sends), and past a few a minute from one address not at all.
UNAUTHENTICATED_KEEP_BYTES = 64 * 1024


def _unauthenticated_record(exc, *, kind, text, headers, remote_addr, payload=None, integration=None):
    """Keep at most a prefix of a post that failed authentication, or nothing once its address is over the limit."""
    if rate_limit_hit(
        scope="ingest-unauthenticated",
        client=remote_addr or "unknown",
        limit=settings.INGEST_UNAUTHENTICATED_PER_MINUTE,
        period=60,
    ):
        if payload is not None:
            AlertPayload.objects.filter(pk=payload.pk).delete()
        raise TooManyRequests(
            "Too many posts that failed authentication from this address: try again in a minute."
        ) from exc
    kept = text[:UNAUTHENTICATED_KEEP_BYTES].encode()[:UNAUTHENTICATED_KEEP_BYTES].decode("utf-8", "ignore")
    error = str(exc) + (f" Only the first {UNAUTHENTICATED_KEEP_BYTES // 1024} KB were kept." if kept != text else "")
    if payload is None:
        _payload_save(kind=kind, text=kept, headers=headers, remote_addr=remote_addr, error=error)
        return
    if kept != text:
        AlertPayload.objects.filter(pk=payload.pk).update(body=routing_key_redacted(kept))
    _payload_mark(payload, AlertPayload.Status.REJECTED, error, integration or exc.integration)


def _group_link(payload, integration, data):
    """Link a rejected post to the alert group it names, so that it is hidden with that group's incident."""
    if integration is None or not isinstance(data, dict):
        return
    key = data.get("dedup_key") if integration.kind == Kind.PAGERDUTY else data.get("groupKey")
    if not isinstance(key, str) or not key:
        return
    group = (
        AlertGroup.objects.filter(integration=integration, key_hash=_key_hash(key[:10_000]))
        .values("pk", "incident_id")
        .first()
    )
    if group is not None:
        AlertPayload.objects.filter(pk=payload.pk).update(group_id=group["pk"], incident_id=group["incident_id"])


# ---- retention ------------------------------------------------------------------------------------

PRUNE_BATCH = 5_000
PRUNE_MAX_BATCHES = 200  # a run deletes at most a million rows; the next run goes on


def payloads_prune(*, now=None):
    """Delete stored posts older than INGEST_PAYLOAD_RETENTION_DAYS, in batches. Returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.INGEST_PAYLOAD_RETENTION_DAYS)
    deleted = 0
    for _ in range(PRUNE_MAX_BATCHES):
        ids = list(
            AlertPayload.objects.filter(received_at__lt=cutoff).order_by().values_list("pk", flat=True)[:PRUNE_BATCH]
        )
        if not ids:
            break
        AlertPayload.objects.filter(pk__in=ids).delete()  # alerts' last_payload links are emptied
        deleted += len(ids)
    return deleted


def payload_storage():
    """(rows, bytes on disk or None) of the stored posts: an estimate on PostgreSQL, counted elsewhere."""
    table = AlertPayload._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT GREATEST(reltuples, 0)::bigint, pg_total_relation_size(oid) FROM pg_class WHERE oid = %s::regclass",
                [table],
            )
            rows, size = cursor.fetchone()
        return rows, size
    return AlertPayload.objects.count(), None


def payload_replay(*, payload):
    """Apply a stored body again (e.g. one that failed). Applying is idempotent, so this is safe."""
    if payload.integration_id is None:
        raise Forbidden("This post matched no integration; there is nothing to replay it into.")
    integration = payload.integration
    try:
        post = post_parse(integration=integration, data=json_load(payload.body))
        result = alerts_apply(integration=integration, post=post, payload=payload)
    except IngestionError as exc:
        _payload_mark(payload, AlertPayload.Status.REJECTED, str(exc))
        raise
    return result


# ---- applying a post ------------------------------------------------------------------------------


@dataclass
class IngestResult:
    group: AlertGroup
    incident: Incident | None = None
    incident_created: bool = False
    new: int = 0
    resolved: int = 0
    acknowledged: int = 0
    unchanged: int = 0

    @property
    def group_key(self):
        return self.group.group_key

    @property
    def incident_id(self):
        return self.incident.pk if self.incident is not None else self.group.incident_id


def _group_lock(integration, post, key_hash):
    """Get or create the group's row and lock it: posts for one group are applied one at a time."""
    locked = AlertGroup.objects.select_for_update()
    try:
        return locked.get(integration=integration, key_hash=key_hash)
    except AlertGroup.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            AlertGroup.objects.create(
                integration=integration, key_hash=key_hash, group_key=post.group_key, labels=post.labels
            )
    except IntegrityError:
        pass  # a concurrent post created it; the lock below waits for that post to finish
    return locked.get(integration=integration, key_hash=key_hash)


def _alert_detail(alert):
    detail = {
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "summary": alert.summary,
        "severity": alert.severity_level,
        "labels": alert.labels,
        "starts_at": alert.starts_at.isoformat(),
        "ends_at": alert.ends_at.isoformat() if alert.ends_at else None,
    }
    if alert.details.get("generator_url"):
        detail["generator_url"] = alert.details["generator_url"]
    return detail


MAX_ALERTS_IN_EVENT = 20


def _alert_event(incident, integration, payload, event, alerts, body, extra=None, at=None):
    data = {
        "integration": {"id": integration.pk, "name": integration.name, "kind": integration.kind},
        "payload": payload.pk,
        "event": event,
        "alerts": [_alert_detail(a) for a in alerts[:MAX_ALERTS_IN_EVENT]],
        **(extra or {}),
    }
    if len(alerts) > MAX_ALERTS_IN_EVENT:
        data["more_alerts"] = len(alerts) - MAX_ALERTS_IN_EVENT
    services.timeline_event_record(
        incident=incident, kind=TimelineEvent.Kind.ALERT, actor=None, occurred_at=at, body=body[:5000], data=data
    )


def _describe(alerts):
    names = [a.summary or a.labels.get("alertname") or a.fingerprint for a in alerts[:3]]
    more = f" and {len(alerts) - 3} more" if len(alerts) > 3 else ""
    return "; ".join(names) + more


def _latest_stamp(incident):
    stamps = (
        incident.detected_at,
        incident.acknowledged_at,
        incident.mitigated_at,
        incident.resolved_at,
        incident.closed_at,
    )
    return max(t for t in stamps if t)


def _touched(post):
    """The alerts of a group a post can touch: every firing one, and any episode the post names."""
    named = [a for a in post.alerts if a.starts_at is not None]
    touched = Q(status=Alert.Status.FIRING)
    if named:
        touched |= Q(fingerprint__in={a.fingerprint for a in named}, starts_at__in={a.starts_at for a in named})
    return touched


# Only what comparing needs (labels are part of the fingerprint); the rest is read if a change is made.
_EPISODE_FIELDS = (
    "id",
    "group",
    "incident",
    "fingerprint",
    "status",
    "starts_at",
    "ends_at",
    "acknowledged_at",
    "severity_level",
    "summary",
    "annotations",
    "details",
    "last_seen_at",
)


def _episodes_sql(post):
    named = [a for a in post.alerts if a.starts_at is not None]
    sql, fields = _episodes_statement(connection.vendor, len(named))
    params = [
        *(a.fingerprint for a in named),
        *(connection.ops.adapt_datetimefield_value(a.starts_at) for a in named),
    ]
    return sql, params, fields


# The statements below are the same for every post (but for the number of alerts named): built once.
@functools.cache
def _episodes_statement(vendor, named):
    alert, group = Alert._meta, AlertGroup._meta
    q, column = connection.ops.quote_name, lambda model, name: model.get_field(name).column
    where_named = ""
    if named:
        where_named = (
            f" OR (a.{q(column(alert, 'fingerprint'))} IN ({', '.join(['%s'] * named)})"
            f" AND a.{q(column(alert, 'starts_at'))} IN ({', '.join(['%s'] * named)}))"
        )
    fields = tuple(f for f in alert.concrete_fields if f.name in _EPISODE_FIELDS)  # in from_db()'s order
    sql = (
        f"SELECT {', '.join(f'a.{q(f.column)}' for f in fields)}, "
        f"g.{q(column(group, 'incident'))} AS group_incident_id, g.{q(column(group, 'group_key'))} AS "
        f"group_key_text FROM {q(alert.db_table)} a INNER JOIN {q(group.db_table)} g"
        f" ON a.{q(column(alert, 'group'))} = g.{q(group.pk.column)}"
        f" WHERE g.{q(column(group, 'integration'))} = %s AND g.{q(column(group, 'key_hash'))} = %s"
        f" AND (a.{q(column(alert, 'status'))} = %s{where_named})"
    )
    return sql, fields


@functools.cache
def _accept_sql():
    """UPDATE the payload as accepted, with the group's ids when the group exists (PostgreSQL only)."""
    payload, group = AlertPayload._meta, AlertGroup._meta
    q, column = connection.ops.quote_name, lambda model, name: model.get_field(name).column
    return (
        f"UPDATE {q(payload.db_table)} AS p SET {q(column(payload, 'status'))} = %s, {q(column(payload, 'error'))} = '',"
        f" {q(column(payload, 'integration'))} = %s, {q(column(payload, 'group'))} = g.{q(group.pk.column)},"
        f" {q(column(payload, 'incident'))} = g.{q(column(group, 'incident'))} FROM {q(group.db_table)} g"
        f" WHERE p.{q(payload.pk.column)} = %s AND g.{q(column(group, 'integration'))} = %s"
        f" AND g.{q(column(group, 'key_hash'))} = %s"
    )


def _group_and_episodes(integration, post, key_hash, accept=None):
    """(group, its alerts the post can touch), or (None, []) for a new group, in one round trip.

    Raw SQL for speed: every post runs this, and compiling the ORM's join costs twice as much as
    running it. With `accept` (PostgreSQL, outside a transaction), the same round trip marks that
    payload accepted and commits: most posts change nothing and need no other statement. A post
    that does change something is applied next and sets the payload's links again; if applying
    fails, the payload is marked failed.
    """
    select, named_params, fields = _episodes_sql(post)
    params = [integration.pk, key_hash, Alert.Status.FIRING, *named_params]
    if accept is None:
        known = list(Alert.objects.raw(select, params))
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                f"{_accept_sql()}; {select}",
                [AlertPayload.Status.ACCEPTED, integration.pk, accept.pk, integration.pk, key_hash, *params],
            )
            cursor.nextset()
            rows = cursor.fetchall()
        known = _alerts_from_rows(rows, fields)
        if rows:
            accept.status = AlertPayload.Status.ACCEPTED
    if not known:
        return AlertGroup.objects.filter(integration=integration, key_hash=key_hash).first(), []
    first = known[0]
    group = AlertGroup(
        pk=first.group_id,
        integration=integration,
        key_hash=key_hash,
        group_key=first.group_key_text,
        incident_id=first.group_incident_id,
    )
    group._state.adding = False
    for a in known:
        a.group = group
    return group, known


@functools.cache
def _converters(vendor, fields):
    columns = [f.get_col(Alert._meta.db_table) for f in fields]
    converters = [
        [*connection.ops.get_db_converters(col), *f.get_db_converters(connection)]
        for f, col in zip(fields, columns, strict=True)
    ]
    return columns, converters, [f.attname for f in fields]


def _alerts_from_rows(rows, fields):
    """Alert instances from raw rows (the episode columns, then the group's two), as the ORM builds them."""
    columns, converters, names = _converters(connection.vendor, fields)
    alerts = []
    for row in rows:
        values = list(row[: len(fields)])
        for i, value in enumerate(values):
            for convert in converters[i]:
                value = convert(value, columns[i], connection)
            values[i] = value
        alert = Alert.from_db(connection.alias, names, values)
        alert.group_incident_id, alert.group_key_text = row[len(fields)], row[len(fields) + 1]
        alerts.append(alert)
    return alerts


@dataclass
class Diff:
    """What a post changes in its group's alerts, worked out in memory from the tracked ones."""

    firing: dict  # fingerprint -> its firing episode, after the post
    new: list = field(default_factory=list)
    resolved: list = field(default_factory=list)
    acknowledged: list = field(default_factory=list)
    escalated: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    seen: list = field(default_factory=list)

    @property
    def changes_nothing(self):
        return not (self.new or self.resolved or self.acknowledged or self.changed)


def _diff(group, known, post, payload, now):
    by_episode = {(a.fingerprint, a.starts_at): a for a in known}
    diff = Diff(firing={})
    firing = diff.firing
    for alert in sorted(known, key=lambda a: a.starts_at):
        if alert.status == Alert.Status.FIRING:
            firing[alert.fingerprint] = alert

    # The last mention of an episode in a post wins (a post should not name one twice); earlier
    # episodes first, so that a later one of the same alert supersedes them.
    mentioned = {(a.fingerprint, a.starts_at): a for a in post.alerts}.values()
    for parsed in sorted(mentioned, key=lambda a: (a.starts_at is None, a.starts_at or now)):
        if parsed.starts_at is None:
            match = firing.get(parsed.fingerprint)
        else:
            match = by_episode.get((parsed.fingerprint, parsed.starts_at))

        if match is None:
            if parsed.status == "acknowledged":
                continue  # nothing open to acknowledge: accepted and dropped
            if parsed.status == "resolved" and parsed.starts_at is None:
                continue  # nothing open to resolve: accepted and dropped
            older = firing.get(parsed.fingerprint)
            if older is not None and parsed.starts_at is not None and older.starts_at > parsed.starts_at:
                continue  # a late post about an earlier episode of an alert that has fired again since
            if older is not None:
                # The same alert firing with a new startsAt: the earlier episode is over.
                older.status, older.ends_at = Alert.Status.RESOLVED, min(parsed.starts_at or now, now)
                diff.resolved.append(older)
                del firing[older.fingerprint]
            alert = Alert(
                group=group,
                fingerprint=parsed.fingerprint,
                starts_at=parsed.starts_at or now,
                status=Alert.Status.FIRING if parsed.status == "firing" else Alert.Status.RESOLVED,
                ends_at=None if parsed.status == "firing" else (parsed.ends_at or now),
                severity_level=parsed.level,
                summary=parsed.summary,
                labels=parsed.labels,
                annotations=parsed.annotations,
                details=parsed.details,
                last_payload=payload,
                last_seen_at=now,
            )
            alert.began_at = parsed.began_at or alert.starts_at
            diff.new.append(alert)
            by_episode[(alert.fingerprint, alert.starts_at)] = alert
            if alert.status == Alert.Status.FIRING:
                firing[alert.fingerprint] = alert
            continue

        if match.status == Alert.Status.RESOLVED:
            diff.seen.append(match)  # an episode never fires again once resolved; a re-fire has a new startsAt
        elif parsed.status == "resolved":
            match.status, match.ends_at = Alert.Status.RESOLVED, parsed.ends_at or now
            diff.resolved.append(match)
            if firing.get(match.fingerprint) is match:
                del firing[match.fingerprint]
        elif parsed.status == "acknowledged":
            if match.acknowledged_at is None:
                match.acknowledged_at = now
                diff.acknowledged.append(match)
            else:
                diff.seen.append(match)
        else:
            updates = {
                name: value
                for name, value in (
                    ("severity_level", parsed.level),
                    ("summary", parsed.summary),
                    ("annotations", parsed.annotations),
                    ("details", parsed.details),
                )
                if getattr(match, name) != value
            }
            if updates:
                if updates.get("severity_level", match.severity_level) < match.severity_level:
                    diff.escalated.append(match)
                for name, value in updates.items():
                    setattr(match, name, value)
                diff.changed.append(match)
            else:
                diff.seen.append(match)
    return diff


# "Last seen" is for people looking at an alert, not an audit trail (the payloads are): repeats
# within this long do not rewrite the alert rows.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


def _stale(seen, now):
    return [a.pk for a in seen if a.last_seen_at < now - LAST_SEEN_RESOLUTION]


def _accept(*, payload, integration, group, incident_id, seen, now):
    stale = _stale(seen, now)
    if stale:
        Alert.objects.filter(pk__in=stale).update(last_seen_at=now, last_payload=payload)
    # Every post ends here: a plain UPDATE rather than the ORM's, whose compiling costs more than the query.
    meta, q = AlertPayload._meta, connection.ops.quote_name
    columns = [meta.get_field(name).column for name in ("status", "error", "integration", "group", "incident")]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {q(meta.db_table)} SET {', '.join(f'{q(c)} = %s' for c in columns)} WHERE {q(meta.pk.column)} = %s",
            [AlertPayload.Status.ACCEPTED, "", integration.pk, group.pk, incident_id, payload.pk],
        )
    payload.status, payload.group, payload.incident_id = AlertPayload.Status.ACCEPTED, group, incident_id


def alerts_apply(*, integration, post, payload):
    """Apply one parsed post to its group's alerts and incident. Idempotent: a repeat changes nothing.

    Most posts are repeats (Alertmanager re-sends every group at each interval), so the group and
    its alerts are first read without a lock: a post that changes nothing is accepted right there,
    which is correct at any moment (it is as if it had arrived just before any concurrent change).
    Anything else is worked out again under the group's row lock and applied in one transaction.
    """
    now = timezone.now()
    key_hash = hashlib.sha256(post.group_key.encode()).hexdigest()
    in_one_trip = connection.vendor == "postgresql" and not connection.in_atomic_block
    group, known = _group_and_episodes(integration, post, key_hash, accept=payload if in_one_trip else None)
    if group is not None:
        diff = _diff(group, known, post, payload, now)
        if diff.changes_nothing:
            if in_one_trip and known:  # accepted in the same round trip as the read
                payload.group, payload.incident_id = group, group.incident_id
                if stale := _stale(diff.seen, now):
                    Alert.objects.filter(pk__in=stale).update(last_seen_at=now, last_payload=payload)
            else:
                with transaction.atomic() if _stale(diff.seen, now) else nullcontext():
                    _accept(
                        payload=payload,
                        integration=integration,
                        group=group,
                        incident_id=group.incident_id,
                        seen=diff.seen,
                        now=now,
                    )
            return IngestResult(group=group, unchanged=len(diff.seen))
    with transaction.atomic():
        return _apply_locked(integration, post, payload, key_hash, now)


def _apply_locked(integration, post, payload, key_hash, now):
    group = _group_lock(integration, post, key_hash)
    diff = _diff(group, list(Alert.objects.filter(_touched(post), group=group)), post, payload, now)
    new, resolved, acknowledged, escalated, changed, firing = (
        diff.new,
        diff.resolved,
        diff.acknowledged,
        diff.escalated,
        diff.changed,
        diff.firing,
    )
    new_firing = [a for a in new if a.status == Alert.Status.FIRING]
    result = IngestResult(
        group=group,
        new=len(new_firing),
        resolved=len(resolved),
        acknowledged=len(acknowledged),
        unchanged=len(diff.seen),
    )

    incident = None
    if new or resolved or acknowledged or escalated:
        incident = _incident_locked(group)
    is_open = incident is not None and incident.status in Incident.OPEN_STATUSES

    if new_firing and not is_open:
        incident = _incident_open(integration, group, post, payload, list(firing.values()), previous=incident, now=now)
        result.incident_created, is_open = True, True
        for alert in firing.values():
            alert.incident = incident
        Alert.objects.filter(pk__in=[a.pk for a in firing.values() if a.pk]).update(incident=incident)
    for alert in new:
        if is_open:
            alert.incident = incident
        alert.last_payload = payload
    Alert.objects.bulk_create(new)
    for alert in resolved + acknowledged + changed:
        alert.last_payload, alert.last_seen_at = payload, now
        alert.save(
            update_fields=[
                "status",
                "ends_at",
                "acknowledged_at",
                "severity_level",
                "summary",
                "annotations",
                "details",
                "last_payload",
                "last_seen_at",
            ]
        )

    if is_open and not result.incident_created:
        # Only alerts seen firing count as resolutions; one first heard of as resolved is just kept.
        ours = [a for a in resolved if a.incident_id == incident.pk]
        incident = _incident_follow(
            integration, incident, payload, new_firing, ours, acknowledged, escalated, firing, now
        )
    result.incident = incident

    if incident is not None and group.incident_id != incident.pk:
        group.incident = incident
        group.save(update_fields=["incident"])
    _accept(
        payload=payload, integration=integration, group=group, incident_id=result.incident_id, seen=diff.seen, now=now
    )
    return result


def _incident_locked(group):
    """The group's incident, locked; for a duplicate, the incident it was merged into (the group follows it)."""
    if group.incident_id is None:
        return None
    # of=("self",): locking the joined severity row too would serialize (and deadlock) every
    # transaction that declares or changes an incident of that severity.
    locked = Incident.objects.select_for_update(of=("self",)).select_related("severity")
    incident, seen = locked.get(pk=group.incident_id), set()
    while incident.duplicate_of_id is not None and incident.pk not in seen:
        seen.add(incident.pk)  # dismissed as a duplicate before its group was moved: feed the original
        incident = locked.get(pk=incident.duplicate_of_id)
    return incident


def _incident_open(integration, group, post, payload, firing, previous, now):
    worst = min(a.severity_level for a in firing)
    began = min((getattr(a, "began_at", None) or a.starts_at) for a in firing)
    recurrence_of = previous if previous is not None and previous.status != Incident.Status.DISMISSED else None
    lines = [f"Opened by the {integration.get_kind_display()} integration “{integration.name}”."]
    if post.description:
        lines += ["", post.description]
    lines += ["", f"Group: {group.group_key}"]
    incident = services.incident_declare(
        title=(post.title or f"Alert group {group.group_key}")[:200],
        summary="\n".join(lines),
        severity=severity_for_level(worst),
        services=list(integration.services.all()),
        started_at=min(began, now),
        detected_at=now,
        recurrence_of=recurrence_of,
        # The same alerts again: whoever restricted the last incident would want this one restricted too,
        # and open to the same people.
        restricted=bool(recurrence_of and recurrence_of.is_restricted),
        actor=None,
    )
    if incident.is_restricted:
        for person in recurrence_of.participants():
            services.incident_member_add(incident=incident, user=person, actor=None)
    _alert_event(
        incident,
        integration,
        payload,
        "firing",
        firing,
        f"{len(firing)} alert{'s' if len(firing) != 1 else ''} firing: {_describe(firing)}",
        extra={"group_key": group.group_key},
        at=now,
    )
    if integration.open_mode == Integration.OpenMode.RESPOND:
        incident = services.incident_transition(
            incident=incident,
            to=Incident.Status.RESPONDING,
            actor=None,
            at=now,
            note=f"Opened directly by the integration “{integration.name}”.",
        )
    return incident


def _incident_follow(integration, incident, payload, new_firing, resolved, acknowledged, escalated, firing, now):
    """Bring an open incident up to date with what changed in its group."""
    if new_firing:
        _alert_event(
            incident,
            integration,
            payload,
            "firing",
            new_firing,
            f"New alert{'s' if len(new_firing) != 1 else ''} firing: {_describe(new_firing)}",
            at=now,
        )
        if incident.status == Incident.Status.MITIGATED:
            incident = _transition(
                incident, Incident.Status.RESPONDING, now, f"Alerts fired again ({integration.name})."
            )
    worse = [a for a in new_firing + escalated if a.severity_level < incident.severity.level]
    if worse:
        level = min(a.severity_level for a in worse)
        severity = severity_for_level(level)
        if severity is not None and severity.level < incident.severity.level:
            if escalated:
                _alert_event(
                    incident,
                    integration,
                    payload,
                    "escalated",
                    escalated,
                    f"Alert severity raised: {_describe(escalated)}",
                    at=now,
                )
            incident = services.incident_severity_change(
                incident=incident,
                severity=severity,
                actor=None,
                note=f"Raised by the integration “{integration.name}”: {_describe(worse)}.",
            )
    if acknowledged:
        _alert_event(
            incident,
            integration,
            payload,
            "acknowledged",
            acknowledged,
            f"Acknowledged in {integration.name}: {_describe(acknowledged)}",
            at=now,
        )
    if resolved:
        if firing:
            _alert_event(
                incident,
                integration,
                payload,
                "resolved",
                resolved,
                f"Resolved: {_describe(resolved)} ({len(firing)} still firing)",
                at=now,
            )
        else:
            ended = max(a.ends_at for a in resolved)
            at = min(max(ended, _latest_stamp(incident)), now)
            tracked = list(Alert.objects.filter(incident=incident).order_by("starts_at", "id")[:MAX_ALERTS_IN_EVENT])
            _alert_event(
                incident,
                integration,
                payload,
                "all_resolved",
                tracked,
                f"All alerts resolved: {_describe(resolved)}",
                extra={"resolved_now": len(resolved)},
                at=at,
            )
            incident = _transition(incident, integration.resolve_to, at, f"Every alert resolved ({integration.name}).")
    return incident


def _transition(incident, to, at, note):
    if incident.status == to or to not in Incident.TRANSITIONS[incident.status]:
        return incident
    try:
        with transaction.atomic():
            return services.incident_transition(incident=incident, to=to, actor=None, at=at, note=note)
    except services.IncidentError:
        pass
    try:
        # `at` is earlier than something a person recorded since (a reopen, say): date it now instead.
        with transaction.atomic():
            return services.incident_transition(incident=incident, to=to, actor=None, note=note)
    except services.IncidentError:
        return incident  # the alerts are recorded; the incident stays where people put it

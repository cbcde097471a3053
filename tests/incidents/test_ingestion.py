"""Alert ingestion: the three senders' formats in, incidents out (issue 3, "Alert ingestion").

Posts go through the real endpoints with the Django test client; sample bodies in samples/ are
real ones written by other projects (see samples/SOURCES.md) and are posted byte for byte.
"""

import copy
import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import ingestion, services
from incidents.ingestion import label_fingerprint, parse_time
from incidents.models import Alert, AlertGroup, AlertPayload, Incident, Integration, TimelineEvent
from tests.incidents.factories import ServiceFactory, SeverityFactory

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).parent / "samples"
AM_URL = "/api/v1/integrations/alertmanager/"
GRAFANA_URL = "/api/v1/integrations/grafana/"
PD_URL = "/api/v1/integrations/pagerduty/v2/enqueue"
S = Incident.Status
Kind = TimelineEvent.Kind


def sample(name):
    return (SAMPLES / name).read_bytes()


def make(kind="alertmanager", name=None, **kwargs):
    integration, key = ingestion.integration_create(kind=kind, name=name or f"{kind} prod", **kwargs)
    integration.key = key
    return integration


@pytest.fixture(autouse=True)
def _forget_keys():
    ingestion.integration_cache_clear()  # a process remembers matched keys for a few seconds


@pytest.fixture
def severities(db):
    return {level: SeverityFactory(level=level) for level in (1, 2, 3, 4)}


@pytest.fixture
def am(severities):
    return make("alertmanager")


@pytest.fixture
def grafana(severities):
    return make("grafana")


@pytest.fixture
def pd(severities):
    return make("pagerduty")


def post(client, integration_or_key, body, url=AM_URL, **headers):
    key = getattr(integration_or_key, "key", integration_or_key)
    if key is not None:
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {key}")
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return client.post(url, data=body, content_type="application/json", **headers)


def pd_post(client, body):
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return client.post(PD_URL, data=body, content_type="application/json")


def iso(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds, as Go writes them


def alert(name="HighErrorRate", status="firing", severity="critical", starts_at=None, ends_at=None, **labels):
    starts_at = starts_at or timezone.now() - timedelta(minutes=5)
    labels = {"alertname": name, "severity": severity, **labels}
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{name} on {labels.get('instance', 'web-1')}", "description": "Errors above 5%."},
        "startsAt": iso(starts_at),
        "endsAt": iso(ends_at) if ends_at else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": label_fingerprint(labels),
    }


def message(*alerts, group_key='{}:{alertname="HighErrorRate"}', truncated=0, **extra):
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
        "status": status,
        "receiver": "incidents",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
        **extra,
    }


def resolved(firing_alert, ends_at=None):
    done = copy.deepcopy(firing_alert)
    done["status"] = "resolved"
    done["endsAt"] = iso(ends_at or timezone.now() - timedelta(seconds=30))
    return done


def timeline(incident):
    return list(TimelineEvent.objects.filter(incident=incident).order_by("occurred_at", "id"))


def only_incident():
    (incident,) = Incident.objects.all()
    return incident


# ---- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2020-02-06T00:17:58.432911368Z", datetime(2020, 2, 6, 0, 17, 58, 432911, tzinfo=UTC)),
        ("2018-11-04T22:43:58.283995108+01:00", datetime(2018, 11, 4, 21, 43, 58, 283995, tzinfo=UTC)),
        ("2024-03-01T02:09:00Z", datetime(2024, 3, 1, 2, 9, tzinfo=UTC)),
        ("2024-03-01T02:09:00.5-05:30", datetime(2024, 3, 1, 7, 39, 0, 500000, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
    ],
)
def test_times_in_every_shape_senders_write(value, expected):
    assert parse_time(value, "t") == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", "2024-03-01", 1709258940])
def test_a_bad_time_says_where_and_what(value):
    with pytest.raises(ingestion.PayloadInvalid) as caught:
        parse_time(value, "alerts[0].startsAt")
    assert "alerts[0].startsAt" in str(caught.value)


def test_fingerprint_is_prometheus_fingerprint():
    # Values reported by a real Alertmanager 0.25 for these label sets (GET /api/v2/alerts).
    assert label_fingerprint({"alertname": "IngestE2E", "severity": "critical", "target": "webhook"}) == (
        "2083e7f528d49bbe"
    )
    assert label_fingerprint({"target": "pagerduty", "severity": "warning", "alertname": "IngestPD"}) == (
        "f653f044b6592ae9"
    )
    assert label_fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset basis


@pytest.mark.parametrize(
    "value, level",
    [
        ("critical", 1),
        ("CRITICAL", 1),
        (" Page ", 1),
        ("sev2", 2),
        ("Error", 2),
        ("warn", 3),
        ("", 3),
        ("whatever", 3),
        ("P5", 4),
        ("none", 4),
    ],
)
def test_severity_labels_map_case_insensitively(am, value, level):
    post_ = ingestion.post_parse(integration=am, data=message(alert(severity=value)))
    assert post_.alerts[0].level == level


def test_severity_key_in_any_case_and_overrides(am):
    am.severity_overrides = {"Disaster": 1, "critical": 2}
    body = message(alert(severity="x"))
    body["alerts"][0]["labels"] = {"alertname": "X", "Severity": "DISASTER"}
    assert ingestion.post_parse(integration=am, data=body).alerts[0].level == 1
    assert ingestion.post_parse(integration=am, data=message(alert(severity="critical"))).alerts[0].level == 2


# ---- Alertmanager: the lifecycle of a group ---------------------------------------------------------


def test_real_sample_opens_one_incident_and_keeps_the_body(client, am):
    body = sample("alertmanager/firing_two_alerts.json")
    response = post(client, am, body)
    assert response.status_code == 200, response.content
    assert response.json()["incident_created"] is True
    incident = only_incident()
    assert incident.status == S.DETECTED
    assert incident.severity.level == 1
    assert incident.title == "High CPU Temperature: High CPU core temperature"
    assert incident.started_at == datetime(2020, 2, 6, 0, 17, 58, 432911, tzinfo=UTC)
    assert set(Alert.objects.values_list("fingerprint", flat=True)) == {"a1bc48475b20e73d", "c2ea85182f28cbd9"}
    assert set(Alert.objects.values_list("incident", flat=True)) == {incident.pk}

    payload = AlertPayload.objects.get()
    assert payload.body.encode() == body  # exactly as received
    assert (payload.status, payload.integration, payload.incident) == ("accepted", am, incident)
    assert payload.headers["Authorization"] == f"Bearer {am.key[:8]}…"  # which key, never the key

    declared, fired = timeline(incident)
    assert (declared.kind, declared.actor) == (Kind.DECLARED, None)
    assert (fired.kind, fired.actor) == (Kind.ALERT, None)
    assert fired.data["integration"] == {"id": am.pk, "name": am.name, "kind": "alertmanager"}
    assert fired.data["event"] == "firing"
    assert len(fired.data["alerts"]) == 2
    assert fired.data["alerts"][0]["labels"]["host"] == "andromeda"


def test_a_repeated_post_changes_nothing(client, am):
    body = message(alert(instance="web-1"), alert(instance="web-2"))
    assert post(client, am, body).status_code == 200
    incident = only_incident()
    events, alerts = timeline(incident), list(Alert.objects.values_list("pk", "status", "incident"))

    for _ in range(3):
        response = post(client, am, body)
        assert response.status_code == 200
        assert response.json()["alerts"] == {"new": 0, "resolved": 0, "acknowledged": 0, "unchanged": 2}
        assert response.json()["incident"] == incident.pk
    assert only_incident().version == incident.version
    assert timeline(incident) == events
    assert list(Alert.objects.values_list("pk", "status", "incident")) == alerts
    assert AlertPayload.objects.filter(status="accepted").count() == 4


def test_a_repeated_post_stays_within_a_few_queries(client, am, django_assert_max_num_queries):
    body = message(alert(instance="web-1"), alert(instance="web-2"))
    post(client, am, body)
    # The body's INSERT, one read of the group and its alerts, the payload's UPDATE (the key was
    # matched by the first post). On PostgreSQL outside a test transaction the last two share a
    # round trip and the INSERT commits without waiting for the disk (see bench/ingest/).
    with django_assert_max_num_queries(3):
        assert post(client, am, body).status_code == 200


def test_group_resolves_alert_by_alert_like_alertmanager_posts_it(client, am):
    t0 = timezone.now() - timedelta(minutes=10)
    one, two = alert(instance="web-1", starts_at=t0), alert(instance="web-2", starts_at=t0)
    post(client, am, message(one, two))
    incident = only_incident()

    # One resolves: top-level firing, one resolved and one firing alert.
    post(client, am, message(resolved(one), two))
    incident.refresh_from_db()
    assert incident.status == S.DETECTED
    event = timeline(incident)[-1]
    assert (event.kind, event.data["event"]) == (Kind.ALERT, "resolved")
    assert "1 still firing" in event.body

    # The last resolves: top-level resolved, listing only that last alert.
    ended = timezone.now()  # after detection; the notification comes a group_interval later
    time.sleep(0.01)
    response = post(client, am, message(resolved(two, ends_at=ended)))
    assert response.json()["alerts"]["resolved"] == 1
    incident.refresh_from_db()
    assert incident.status == S.RESOLVED
    assert incident.resolved_at == ended  # when the alert ended, not when we heard
    *_, all_resolved, moved = timeline(incident)
    assert (all_resolved.kind, all_resolved.data["event"]) == (Kind.ALERT, "all_resolved")
    assert {a["labels"]["instance"] for a in all_resolved.data["alerts"]} == {"web-1", "web-2"}
    assert all(a["ends_at"] for a in all_resolved.data["alerts"])
    assert (moved.kind, moved.actor, moved.data["to"]) == (Kind.STATUS_CHANGED, None, "resolved")
    assert am.name in moved.body
    assert set(Alert.objects.values_list("status", flat=True)) == {"resolved"}


def test_truncated_or_partial_posts_never_resolve_an_absent_alert(client, am):
    one, two, three = (alert(instance=f"web-{i}") for i in (1, 2, 3))
    post(client, am, message(one, two, three))
    incident = only_incident()
    post(client, am, message(one, truncated=2))  # max_alerts cut the others off
    post(client, am, message(resolved(one), truncated=2))
    post(client, am, message(status="resolved"))  # nothing listed at all
    incident.refresh_from_db()
    assert incident.status == S.DETECTED
    assert Alert.objects.filter(status="firing").count() == 2


def test_group_firing_again_after_resolution_opens_a_recurrence(client, am):
    first = alert(starts_at=timezone.now() - timedelta(hours=2))
    post(client, am, message(first))
    post(client, am, message(resolved(first, ends_at=timezone.now() - timedelta(hours=1))))
    previous = only_incident()
    assert previous.status == S.RESOLVED

    post(client, am, message(resolved(first)))  # a late repeat of the resolution: nothing
    assert Incident.objects.count() == 1

    again = alert(starts_at=timezone.now() - timedelta(minutes=1))  # same labels, new startsAt
    response = post(client, am, message(again))
    assert response.json()["incident_created"] is True
    recurrence = Incident.objects.exclude(pk=previous.pk).get()
    assert recurrence.recurrence_of == previous
    assert recurrence.status == S.DETECTED
    assert AlertGroup.objects.get().incident == recurrence
    assert Alert.objects.filter(fingerprint=again["fingerprint"]).count() == 2


def test_a_new_starts_at_for_a_firing_alert_supersedes_the_old_episode(client, am):
    old = alert(starts_at=timezone.now() - timedelta(hours=1))
    post(client, am, message(old))
    new = alert(starts_at=timezone.now() - timedelta(minutes=1))
    post(client, am, message(new))
    assert Incident.objects.count() == 1
    assert sorted(Alert.objects.values_list("status", flat=True)) == ["firing", "resolved"]
    post(client, am, message(resolved(new)))
    assert only_incident().status == S.RESOLVED


def test_resolve_to_mitigated_and_alerts_firing_again_reopen_the_response(client, severities):
    am = make(resolve_to="mitigated")
    one = alert(instance="web-1")
    post(client, am, message(one))
    post(client, am, message(resolved(one)))
    incident = only_incident()
    assert incident.status == S.MITIGATED and incident.resolved_at is None

    post(client, am, message(alert(instance="web-2")))  # still the open incident's group
    incident.refresh_from_db()
    assert Incident.objects.count() == 1
    assert incident.status == S.RESPONDING
    assert incident.mitigated_at is None


def test_open_mode_respond_moves_straight_to_responding(client, severities):
    am = make(open_mode="respond")
    post(client, am, message(alert()))
    incident = only_incident()
    assert incident.status == S.RESPONDING
    assert incident.acknowledged_at is None  # only a person acknowledges


def test_default_services_are_set(client, severities):
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    am = make(services=[checkout])
    post(client, am, message(alert()))
    assert list(only_incident().services.all()) == [checkout]


def test_a_person_resolving_while_alerts_fire_is_respected(client, am, responder):
    firing = alert(instance="web-1")
    post(client, am, message(firing))
    incident = only_incident()
    services.incident_transition(incident=incident, to=S.RESOLVED, actor=responder)

    post(client, am, message(firing))  # the same alert, re-sent: no new incident
    assert Incident.objects.count() == 1

    post(client, am, message(firing, alert(instance="web-2")))  # a new alert: a recurrence
    recurrence = Incident.objects.exclude(pk=incident.pk).get()
    assert recurrence.recurrence_of == incident
    # The alert still firing moved over: the new incident resolves only when both have.
    assert Alert.objects.filter(incident=recurrence, status="firing").count() == 2
    post(client, am, message(resolved(firing)))
    recurrence.refresh_from_db()
    assert recurrence.status == S.DETECTED


def test_after_a_dismissal_a_new_alert_opens_an_unlinked_incident(client, am, responder):
    post(client, am, message(alert(instance="web-1")))
    dismissed = services.incident_transition(incident=only_incident(), to=S.DISMISSED, actor=responder)
    post(client, am, message(alert(instance="web-2")))
    fresh = Incident.objects.exclude(pk=dismissed.pk).get()
    assert fresh.recurrence_of is None


# ---- severity -------------------------------------------------------------------------------------


def test_a_worse_new_alert_raises_severity_on_the_timeline(client, am):
    post(client, am, message(alert(instance="web-1", severity="warning")))
    incident = only_incident()
    assert incident.severity.level == 3
    post(client, am, message(alert(instance="web-1", severity="warning"), alert(instance="web-2", severity="page")))
    incident.refresh_from_db()
    assert incident.severity.level == 1
    change = TimelineEvent.objects.get(incident=incident, kind=Kind.SEVERITY_CHANGED)
    assert (change.actor, change.data) == (None, {"from": 3, "to": 1})
    assert am.name in change.body


def test_group_takes_its_worst_firing_alert(client, am):
    post(client, am, message(alert(instance="a", severity="info"), alert(instance="b", severity="error")))
    assert only_incident().severity.level == 2


def test_ingestion_never_lowers_severity(client, am):
    post(client, am, message(alert(instance="web-1", severity="critical")))
    post(client, am, message(alert(instance="web-1", severity="critical"), alert(instance="web-2", severity="info")))
    incident = only_incident()
    assert incident.severity.level == 1
    assert not TimelineEvent.objects.filter(incident=incident, kind=Kind.SEVERITY_CHANGED).exists()


def test_a_severity_a_person_set_survives_repeats(client, am, responder, severities):
    firing = alert(severity="critical")
    post(client, am, message(firing))
    incident = services.incident_severity_change(incident=only_incident(), severity=severities[3], actor=responder)
    for _ in range(2):
        post(client, am, message(firing))
    incident.refresh_from_db()
    assert incident.severity.level == 3  # the same alerts re-sent do not fight the person
    raised = services.incident_severity_change(incident=incident, severity=severities[1], actor=responder)
    post(client, am, message(firing, alert(instance="web-9", severity="warning")))
    raised.refresh_from_db()
    assert raised.severity.level == 1  # and a person's raise is never lowered


# ---- tolerated shapes -----------------------------------------------------------------------------


def test_old_format_without_fingerprint_or_truncation_with_offsets(client, am):
    resolved_body = json.loads(sample("alertmanager/resolved_old_format_no_fingerprint.json"))
    firing_body = copy.deepcopy(resolved_body)
    firing_body["status"] = firing_body["alerts"][0]["status"] = "firing"
    del firing_body["alerts"][0]["endsAt"]
    assert post(client, am, firing_body).status_code == 200
    incident = only_incident()
    tracked = Alert.objects.get()
    assert tracked.fingerprint == label_fingerprint({"alertname": "Fire", "severity": "critical"})
    assert tracked.starts_at == datetime(2018, 11, 4, 21, 43, 58, 283995, tzinfo=UTC)

    assert post(client, am, sample("alertmanager/resolved_old_format_no_fingerprint.json")).status_code == 200
    incident.refresh_from_db()
    tracked.refresh_from_db()
    assert tracked.ends_at == datetime(2018, 11, 4, 21, 48, 13, 283995, tzinfo=UTC)
    assert incident.status == S.RESOLVED
    assert incident.resolved_at >= incident.detected_at  # the alert ended before we heard: dated at detection


def test_resolved_with_zero_ends_at_resolves_now(client, am):
    post(client, am, sample("alertmanager/firing_two_alerts.json"))
    before = timezone.now()
    post(client, am, sample("alertmanager/resolved_single_alert_zero_endsat.json"))
    done = Alert.objects.get(fingerprint="a1bc48475b20e73d")
    assert done.status == "resolved" and done.ends_at >= before
    assert only_incident().status == S.DETECTED  # the other alert still fires


def test_a_resolution_never_seen_firing_is_kept_but_opens_nothing(client, grafana):
    response = post(client, grafana, sample("grafana/resolved_v9.json"), url=GRAFANA_URL)
    assert response.status_code == 200
    assert not Incident.objects.exists()
    assert Alert.objects.get().status == "resolved"
    assert post(client, grafana, sample("grafana/resolved_v9.json"), url=GRAFANA_URL).json()["alerts"]["unchanged"] == 1


def test_unknown_fields_are_ignored_and_missing_ones_tolerated(client, am):
    firing = alert(instance="web-1")
    del firing["fingerprint"], firing["endsAt"], firing["generatorURL"]
    firing["somethingNew"] = {"nested": [1, 2]}
    body = message(firing, futureField=True)
    del body["truncatedAlerts"], body["commonAnnotations"]
    body["groupKey"] = 666  # hand-made bodies write anything
    assert post(client, am, body).status_code == 200
    assert AlertGroup.objects.get().group_key == "666"


def test_group_key_derived_from_group_labels_when_missing(client, am):
    body = message(alert())
    del body["groupKey"]
    assert post(client, am, body).status_code == 200
    assert AlertGroup.objects.get().group_key == '{}:{alertname="HighErrorRate"}'


# ---- Grafana --------------------------------------------------------------------------------------


def test_grafana_sample_opens_an_incident_with_its_links(client, grafana):
    response = post(client, grafana, sample("grafana/firing_v11_values.json"), url=GRAFANA_URL)
    assert response.status_code == 200, response.content
    incident = only_incident()
    assert incident.title == "Memory (copy): High memory usage"
    assert incident.severity.level == 3  # no severity label
    details = Alert.objects.get().details
    assert details["values"] == {"A": 2473545728, "B": 0, "C": 1, "minute": 9}
    assert details["dashboard_url"].startswith("https://play.grafana.org/d/")


def _sign(secret, body, timestamp=None):
    message_ = f"{timestamp}:".encode() + body if timestamp else body
    return hmac.new(secret.encode(), message_, hashlib.sha256).hexdigest()


def test_grafana_signature_when_a_secret_is_configured(client, severities):
    grafana = make("grafana", signing_secret="s3cret")
    body = sample("grafana/firing_v11_values.json")
    missing = post(client, grafana, body, url=GRAFANA_URL)
    assert missing.status_code == 401
    assert "X-Grafana-Alerting-Signature" in missing.json()["error"]["message"]
    wrong = post(client, grafana, body, url=GRAFANA_URL, HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("other", body))
    assert wrong.status_code == 401
    good = post(client, grafana, body, url=GRAFANA_URL, HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("s3cret", body))
    assert good.status_code == 200
    now = str(int(time.time()))
    stamped = post(
        client,
        grafana,
        body,
        url=GRAFANA_URL,
        HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("s3cret", body, now),
        HTTP_X_GRAFANA_ALERTING_TIMESTAMP=now,
    )
    assert stamped.status_code == 200
    old = str(int(time.time()) - 3600)
    replayed = post(
        client,
        grafana,
        body,
        url=GRAFANA_URL,
        HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("s3cret", body, old),
        HTTP_X_GRAFANA_ALERTING_TIMESTAMP=old,
    )
    assert replayed.status_code == 401
    assert AlertPayload.objects.filter(status="rejected").count() == 3


# ---- authentication and rejections ------------------------------------------------------------------


def test_authentication_failures_are_json_and_the_body_is_kept(client, am, grafana):
    body = message(alert())
    no_key = post(client, None, body)
    assert no_key.status_code == 401
    assert no_key["WWW-Authenticate"].startswith("Bearer")
    assert no_key.json()["error"]["code"] == "not_authenticated"
    assert post(client, "0" * 32, body).status_code == 401
    assert post(client, am, body, HTTP_AUTHORIZATION=f"Basic {am.key}").status_code == 401
    wrong_kind = post(client, grafana, body)
    assert wrong_kind.status_code == 403
    assert "/api/v1/integrations/grafana/" in wrong_kind.json()["error"]["message"]
    Integration.objects.filter(pk=am.pk).update(is_active=False)
    assert post(client, am, body).status_code == 403

    assert not Incident.objects.exists()
    kept = AlertPayload.objects.order_by("id")
    assert [p.status for p in kept] == ["rejected"] * 5
    assert [p.integration_id for p in kept] == [None, None, None, grafana.pk, am.pk]
    assert all(json.loads(p.body) == body for p in kept)


MALFORMED = {
    "not json": (b"{not json", "not JSON"),
    "empty": (b"", "not JSON"),
    "a list": (b"[1, 2]", "JSON object"),
    "no alerts": (b'{"groupKey": "g"}', "alerts is missing"),
    "alerts not a list": (b'{"groupKey": "g", "alerts": {"a": 1}}', "alerts is missing or is not a list"),
    "alert not an object": (b'{"groupKey": "g", "alerts": ["x"]}', "alerts[0] must be an object"),
    "no labels": (b'{"groupKey": "g", "alerts": [{"status": "firing"}]}', "alerts[0].labels is missing"),
    "bad status": (b'{"groupKey": "g", "alerts": [{"status": "burning", "labels": {}}]}', "alerts[0].status"),
    "bad time": (
        b'{"groupKey": "g", "alerts": [{"labels": {"a": "b"}, "startsAt": "yesterday"}]}',
        "alerts[0].startsAt: 'yesterday' is not an RFC 3339 time",
    ),
    "no group key": (b'{"alerts": []}', "groupKey is missing"),
    "NaN": (b'{"groupKey": "g", "alerts": [], "x": NaN}', "NaN is not a JSON value"),
    "NUL escape": (b'{"groupKey": "g\\u0000", "alerts": []}', "\\u0000"),
    "lone surrogate": (b'{"groupKey": "g\\ud800", "alerts": []}', "surrogate"),
    "not utf-8": (b'{"groupKey": "\xff\xfe", "alerts": []}', "not UTF-8"),
    "NUL byte": (b'{"groupKey": "g\x00", "alerts": []}', "NUL"),
    "too deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("body, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies_get_a_400_that_says_why(client, am, body, expected):
    response = post(client, am, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert expected in error["message"]
    payload = AlertPayload.objects.get()
    assert payload.status == "rejected" and expected in payload.error
    if b"\x00" not in body and b"\xff" not in body:
        assert payload.body.encode() == body  # kept exactly as received


def test_every_error_is_listed(client, am):
    body = {"groupKey": "g", "alerts": [{"labels": {}, "startsAt": "soon"}, {"labels": "x", "status": "odd"}]}
    fields = post(client, am, body).json()["error"]["fields"]["body"]
    assert len(fields) == 3


def test_only_post_is_allowed(client, am):
    response = client.get(AM_URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_trailing_slash_is_optional(client, am):
    assert post(client, am, message(alert()), url=AM_URL.rstrip("/")).status_code == 200
    assert reverse("integrations:pagerduty") == PD_URL


def test_an_oversized_body_is_refused_and_recorded(client, am, monkeypatch):
    monkeypatch.setattr("incidents.api.integrations.MAX_BODY_BYTES", 100)
    response = post(client, am, message(alert()))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert AlertPayload.objects.get().status == "rejected"


def test_a_server_error_is_recorded_as_failed_and_can_be_replayed(client, am, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingestion, "alerts_apply", broken)
    with pytest.raises(RuntimeError):
        post(client, am, message(alert()))
    payload = AlertPayload.objects.get()
    assert payload.status == "failed" and "database went away" in payload.error
    monkeypatch.undo()

    result = ingestion.payload_replay(payload=payload)
    assert result.incident_created
    payload.refresh_from_db()
    assert payload.status == "accepted" and payload.incident == only_incident()


# ---- PagerDuty Events API v2 ----------------------------------------------------------------------


def pd_event(pd, action="trigger", dedup_key="disk-full-db1", **payload):
    event = {"routing_key": pd.key, "event_action": action}
    if dedup_key is not None:
        event["dedup_key"] = dedup_key
    if action == "trigger":
        event["payload"] = {"summary": "Disk full on db1", "source": "db1", "severity": "error", **payload}
    return event


def test_pagerduty_trigger_acknowledge_resolve(client, pd):
    response = pd_post(client, pd_event(pd, custom_details={"free": "0%"}))
    assert response.status_code == 202
    assert response.json() == {"status": "success", "message": "Event processed", "dedup_key": "disk-full-db1"}
    incident = only_incident()
    assert (incident.title, incident.severity.level, incident.status) == ("Disk full on db1", 2, S.DETECTED)

    assert pd_post(client, pd_event(pd)).status_code == 202  # the same trigger: nothing new
    assert Incident.objects.count() == 1 and Alert.objects.count() == 1
    events = len(timeline(incident))

    assert pd_post(client, pd_event(pd, action="acknowledge")).status_code == 202
    assert pd_post(client, pd_event(pd, action="acknowledge")).status_code == 202
    acked = timeline(incident)[events:]
    assert [e.data["event"] for e in acked] == ["acknowledged"]
    incident.refresh_from_db()
    assert incident.acknowledged_at is None  # a machine's acknowledgement is not a person's

    assert pd_post(client, pd_event(pd, severity="critical")).status_code == 202  # same alert, worse
    incident.refresh_from_db()
    assert incident.severity.level == 1

    assert pd_post(client, pd_event(pd, action="resolve")).status_code == 202
    incident.refresh_from_db()
    assert incident.status == S.RESOLVED

    assert pd_post(client, pd_event(pd, action="resolve")).status_code == 202  # nothing open: dropped
    assert pd_post(client, pd_event(pd, action="acknowledge", dedup_key="never-seen")).status_code == 202
    assert pd_post(client, pd_event(pd)).status_code == 202  # a new trigger after resolve
    assert Incident.objects.exclude(pk=incident.pk).get().recurrence_of == incident


def test_pagerduty_generates_a_dedup_key(client, pd):
    response = pd_post(client, pd_event(pd, dedup_key=None))
    assert response.status_code == 202
    key = response.json()["dedup_key"]
    assert len(key) == 32
    assert AlertGroup.objects.get().group_key == key


PD_INVALID = {
    "not json": (b"nope", "not JSON"),
    "a list": (b"[]", "JSON object"),
    "no routing key": ({"event_action": "trigger"}, "routing_key is missing"),
    "unknown routing key": ({"routing_key": "f" * 32, "event_action": "trigger"}, "does not match any integration"),
    "bad action": ("action", "'event_action' must be one of trigger, acknowledge, resolve"),
    "no summary": ("summary", "'payload.summary' is missing"),
    "bad severity": ("severity", "'payload.severity' must be one of critical, error, warning, info"),
    "resolve without dedup_key": ("resolve", "'dedup_key' is required to resolve"),
    "bad timestamp": ("timestamp", "'payload.timestamp'"),
}


@pytest.mark.parametrize("body, expected", PD_INVALID.values(), ids=PD_INVALID.keys())
def test_pagerduty_invalid_events_get_pagerduty_errors(client, pd, body, expected):
    if body == "action":
        body = {**pd_event(pd), "event_action": "escalate"}
    elif body == "summary":
        body = pd_event(pd)
        del body["payload"]["summary"]
    elif body == "severity":
        body = pd_event(pd, severity="disaster")
    elif body == "resolve":
        body = pd_event(pd, action="resolve", dedup_key=None)
    elif body == "timestamp":
        body = pd_event(pd, timestamp="last tuesday")
    response = pd_post(client, body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["status"], answer["message"]) == ("invalid event", "Event object is invalid")
    assert any(expected in e for e in answer["errors"]), answer
    assert AlertPayload.objects.get().status == "rejected"
    assert not Incident.objects.exists()


def test_pagerduty_payload_admin_masks_the_routing_key(admin_client, pd):
    pd_post(Client(), pd_event(pd))
    payload = AlertPayload.objects.get()
    assert pd.key not in payload.body and pd.key[:8] in payload.body  # the credential is cut before storing…
    page = admin_client.get(reverse("admin:incidents_alertpayload_change", args=[payload.pk]))
    assert page.status_code == 200
    assert pd.key not in page.content.decode()  # …but not shown
    assert pd.key[:8] in page.content.decode()


# ---- setup: command and admin -------------------------------------------------------------------


def test_create_integration_prints_a_working_key(client, severities):
    ServiceFactory(slug="checkout")
    out, err = StringIO(), StringIO()
    call_command(
        "create_integration",
        "alertmanager",
        "AM prod",
        "--service",
        "checkout",
        "--resolve-to",
        "mitigated",
        stdout=out,
        stderr=err,
    )
    key = out.getvalue().strip()
    assert len(key) == 32 and "shown" in err.getvalue()
    integration = Integration.objects.get(name="AM prod")
    assert integration.key_hash == hashlib.sha256(key.encode()).hexdigest() and key not in str(integration.__dict__)
    assert post(client, key, message(alert())).status_code == 200
    assert [s.slug for s in only_incident().services.all()] == ["checkout"]

    with pytest.raises(CommandError, match="exists already"):
        call_command("create_integration", "grafana", "AM prod", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="No service"):
        call_command("create_integration", "grafana", "G", "--service", "nope", stdout=StringIO(), stderr=StringIO())


def test_admin_creates_an_integration_and_shows_the_key_once(admin_client, severities):
    response = admin_client.post(
        reverse("admin:incidents_integration_add"),
        {
            "name": "Grafana prod",
            "kind": "grafana",
            "is_active": "on",
            "open_mode": "triage",
            "resolve_to": "resolved",
            "severity_overrides": '{"Disaster": 1}',
            "signing_secret": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    integration = Integration.objects.get()
    # Shown once on the page (issue 11: never in the messages cookie).
    ((_name, key),) = response.context["keys"]
    assert key in response.content.decode() and key not in str(response.cookies)
    assert integration.key_prefix == key[:8]
    assert integration.severity_overrides == {"disaster": 1}
    assert post(Client(), key, sample("grafana/firing_v11_values.json"), url=GRAFANA_URL).status_code == 200

    rotated = admin_client.post(
        reverse("admin:incidents_integration_changelist"),
        {"action": "rotate_key", "_selected_action": [integration.pk]},
        follow=True,
    )
    ((_name, new_key),) = rotated.context["keys"]
    assert new_key not in str(rotated.cookies)
    assert post(Client(), key, sample("grafana/firing_v11_values.json"), url=GRAFANA_URL).status_code == 401
    assert post(Client(), new_key, sample("grafana/firing_v11_values.json"), url=GRAFANA_URL).status_code == 200


def test_admin_refuses_bad_overrides_and_a_secret_for_alertmanager(admin_client, severities):
    response = admin_client.post(
        reverse("admin:incidents_integration_add"),
        {
            "name": "AM",
            "kind": "alertmanager",
            "open_mode": "triage",
            "resolve_to": "resolved",
            "severity_overrides": '{"bad": "one"}',
            "signing_secret": "x",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"severity_overrides", "signing_secret"}
    assert not Integration.objects.exists()


def test_admin_pages_for_the_records(admin_client, client, am):
    post(client, am, sample("alertmanager/firing_two_alerts.json"))
    post(client, am, b"{broken")
    group, alert_ = AlertGroup.objects.get(), Alert.objects.first()
    pages = [
        reverse("admin:incidents_integration_changelist"),
        reverse("admin:incidents_integration_change", args=[am.pk]),
        reverse("admin:incidents_alertpayload_changelist"),
        reverse("admin:incidents_alertpayload_changelist") + "?status__exact=rejected",
        reverse("admin:incidents_alertpayload_change", args=[AlertPayload.objects.first().pk]),
        reverse("admin:incidents_alertgroup_changelist"),
        reverse("admin:incidents_alertgroup_change", args=[group.pk]),
        reverse("admin:incidents_alert_changelist"),
        reverse("admin:incidents_alert_change", args=[alert_.pk]),
    ]
    for url in pages:
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.get(reverse("admin:incidents_alertpayload_add")).status_code == 403


def test_admin_replays_posts(admin_client, client, am):
    post(client, am, message(alert()))
    payload = AlertPayload.objects.get()
    response = admin_client.post(
        reverse("admin:incidents_alertpayload_changelist"),
        {"action": "replay", "_selected_action": [payload.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert Incident.objects.count() == 1  # replaying is idempotent
    assert len(timeline(only_incident())) == 2


# ---- concurrency ----------------------------------------------------------------------------------


def _storm(integration, bodies, workers):
    """Post the bodies from `workers` threads that start together, each with its own connection."""
    codes, gate = [None] * len(bodies), threading.Barrier(workers)

    def sender(offset):
        client = Client()
        gate.wait()  # the first post of every thread leaves at the same moment
        try:
            for i in range(offset, len(bodies), workers):
                codes[i] = post(client, integration, bodies[i]).status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_storm_of_posts_for_one_group_opens_exactly_one_incident():
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    am = make()
    starts = timezone.now() - timedelta(minutes=1)
    # 1,000 posts for one group, 16 at a time, the first 16 before the group exists: the same alert
    # in every post, and a second one that brings seven alerts into the group over the storm.
    bodies = [
        message(alert(instance="web-1", starts_at=starts), alert(instance=f"web-{i % 7}", starts_at=starts))
        for i in range(1000)
    ]
    codes = _storm(am, bodies, workers=16)

    assert codes == [200] * 1000
    incident = Incident.objects.get()
    assert AlertGroup.objects.count() == 1
    assert Alert.objects.filter(incident=incident, status="firing").count() == 7
    assert AlertPayload.objects.filter(status="accepted").count() == 1000
    assert TimelineEvent.objects.filter(incident=incident, kind=Kind.DECLARED).count() == 1
    assert TimelineEvent.objects.filter(incident=incident, kind=Kind.ALERT).count() <= 7


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_firing_and_resolving_end_consistent():
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    am = make()
    firing = alert(starts_at=timezone.now() - timedelta(minutes=1))
    assert post(Client(), am, message(firing)).status_code == 200
    bodies = [message(firing)] * 100 + [message(resolved(firing))] * 100
    assert set(_storm(am, bodies, workers=12)) == {200}
    incident = Incident.objects.get()
    assert incident.status == S.RESOLVED  # an episode never fires again once resolved
    assert Alert.objects.get().status == "resolved"


def test_responders_see_alerts_and_only_administrators_manage_integrations(responder, viewer):
    assert responder.has_perms(["incidents.view_alert", "incidents.view_alertgroup", "incidents.view_alertpayload"])
    assert viewer.has_perm("incidents.view_alert") and not viewer.has_perm("incidents.view_alertpayload")
    assert not responder.has_perm("incidents.change_integration")
    assert not responder.has_perm("incidents.add_integration")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_outside_a_transaction_repeats_take_two_statements_and_failures_still_show(monkeypatch):
    """PostgreSQL in production: the body's INSERT commits without waiting for the disk, and a
    repeat is read and accepted in one round trip. A post that then fails is marked failed."""
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    am, client = make(), Client()
    first = message(alert(instance="web-1"))
    assert post(client, am, first).status_code == 200
    incident = only_incident()

    with CaptureQueriesContext(connection) as queries:
        assert post(client, am, first).status_code == 200
    assert len(queries) == 2
    repeat = AlertPayload.objects.latest("id")
    assert (repeat.status, repeat.group, repeat.incident) == ("accepted", AlertGroup.objects.get(), incident)

    def broken(*args, **kwargs):
        raise RuntimeError("the timeline is on fire")

    monkeypatch.setattr(ingestion, "_incident_follow", broken)
    with pytest.raises(RuntimeError):
        post(client, am, message(alert(instance="web-1"), alert(instance="web-2")))
    failed = AlertPayload.objects.latest("id")
    assert failed.status == "failed" and "on fire" in failed.error
    assert Alert.objects.count() == 1  # nothing of the failed post was applied


def test_admin_edits_a_grafana_integration_with_a_secret(admin_client, severities):
    grafana = make("grafana", signing_secret="s3cret")
    response = admin_client.post(
        reverse("admin:incidents_integration_change", args=[grafana.pk]),
        {
            "name": "Grafana renamed",
            "is_active": "on",
            "open_mode": "respond",
            "resolve_to": "mitigated",
            "severity_overrides": "{}",
            "signing_secret": "n3w",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    grafana.refresh_from_db()
    assert (grafana.name, grafana.kind, grafana.open_mode, grafana.signing_secret) == (
        "Grafana renamed",
        "grafana",
        "respond",
        "n3w",
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_many_groups_opening_and_resolving_at_once_never_deadlock():
    # Found by the benchmark: locking an incident joined to its severity locked the severity row
    # too; a recurrence (which locks the previous incident) then deadlocked against a first
    # incident of another group (which holds the incident counter and checks its severity key).
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    am = make()
    t0 = timezone.now() - timedelta(minutes=10)
    old, new = [f"old-{n}" for n in range(30)], [f"new-{n}" for n in range(30)]
    first = {g: alert(instance=g, starts_at=t0) for g in old + new}
    again = {g: alert(instance=g, starts_at=t0 + timedelta(minutes=5)) for g in old}
    assert _storm(am, [message(first[g], group_key=g) for g in old], workers=8) == [200] * 30
    resolutions = [message(resolved(first[g], ends_at=t0 + timedelta(minutes=1)), group_key=g) for g in old]
    assert _storm(am, resolutions, workers=8) == [200] * 30
    # Recurrences and first incidents of other groups, at the same time.
    mixed = [
        body
        for g, h in zip(old, new, strict=True)
        for body in (message(again[g], group_key=g), message(first[h], group_key=h))
    ]
    assert _storm(am, mixed, workers=8) == [200] * 60
    assert Incident.objects.count() == 90
    assert Incident.objects.filter(status=S.RESOLVED).count() == 30
    assert Incident.objects.filter(recurrence_of__isnull=False).count() == 30

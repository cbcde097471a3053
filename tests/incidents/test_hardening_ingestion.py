# ruff: noqa: F811  (fixtures are imported from the ingestion tests and the restricted-incident matrix)
"""Issue 11, abuse and secrets of alert ingestion: bounded unauthenticated posts and their rate limit,
retention of stored posts, credentials cut before storing, rejected posts of restricted groups, and
new keys shown once on a page instead of in the messages cookie."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from incidents import ingestion
from incidents.models import Alert, AlertPayload
from incidents.tasks import alert_payloads_prune
from tests.incidents.test_ingestion import (  # noqa: F401  fixtures
    AM_URL,
    alert,
    am,
    make,
    message,
    pd,
    pd_post,
    post,
    severities,
)
from tests.incidents.test_restricted import MARKER, _am_body, leaks, world  # noqa: F401

pytestmark = pytest.mark.django_db

KEEP = ingestion.UNAUTHENTICATED_KEEP_BYTES


def _pd_event(routing_key, **extra):
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": "disk-db1",
        "payload": {"summary": "Disk full", "source": "db1", "severity": "error"},
        **extra,
    }


# ---- posts that fail authentication --------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "0" * 32], ids=["no key", "unknown key"])
def test_an_unauthenticated_post_keeps_only_a_bounded_prefix(am, key):
    body = json.dumps(message(alert(), padding="x" * (2 * 1024 * 1024))).encode()  # 2 MB, under the 10 MB cap

    response = post(Client(), key, body)

    assert response.status_code == 401
    stored = AlertPayload.objects.get()
    assert stored.status == AlertPayload.Status.REJECTED
    assert len(stored.body.encode()) <= KEEP  # was all 2 MB
    assert stored.body == body[:KEEP].decode()
    assert "Only the first 64 KB were kept" in stored.error


def test_pagerduty_post_with_an_unknown_routing_key_keeps_a_prefix(pd):
    response = pd_post(Client(), _pd_event("f" * 32, padding="y" * (400 * 1024)))
    assert response.status_code == 400
    stored = AlertPayload.objects.get()
    assert len(stored.body.encode()) <= KEEP and "f" * 9 not in stored.body


def test_unauthenticated_posts_are_rate_limited_per_address(am, settings):
    settings.INGEST_UNAUTHENTICATED_PER_MINUTE = 3
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(3):
        assert post(client, "0" * 32, message(alert())).status_code == 401
    refused = post(client, "0" * 32, message(alert()))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled" and int(refused["Retry-After"]) >= 1
    assert AlertPayload.objects.count() == 3  # the refused one is not stored
    # Another address is not affected, and neither is a sender with a valid key at the same address.
    assert post(Client(REMOTE_ADDR="203.0.113.8"), "0" * 32, message(alert())).status_code == 401
    assert post(client, am, message(alert())).status_code == 200


def test_pagerduty_unauthenticated_posts_are_rate_limited(pd, settings):
    settings.INGEST_UNAUTHENTICATED_PER_MINUTE = 1
    assert pd_post(Client(), _pd_event("f" * 32)).status_code == 400
    refused = pd_post(Client(), _pd_event("f" * 32))
    assert refused.status_code == 429 and refused.json()["status"] == "invalid event"
    assert AlertPayload.objects.count() == 1
    assert pd_post(Client(), _pd_event(pd.key)).status_code == 202


# ---- credentials are never stored ---------------------------------------------------------------


def test_pagerduty_routing_key_is_cut_before_the_body_is_stored(pd):
    assert pd_post(Client(), _pd_event(pd.key)).status_code == 202
    stored = AlertPayload.objects.get()
    assert pd.key not in stored.body
    assert json.loads(stored.body)["routing_key"] == f"{pd.key[:8]}…"
    assert stored.status == AlertPayload.Status.ACCEPTED


def test_an_authorization_header_without_a_scheme_is_stored_truncated(am):
    response = post(Client(), None, message(alert()), HTTP_AUTHORIZATION=am.key)  # no "Bearer"
    assert response.status_code == 401
    stored = AlertPayload.objects.get()
    assert stored.headers["Authorization"] == f"{am.key[:8]}…"
    assert am.key not in json.dumps(stored.headers)
    # With a scheme, as before.
    post(Client(), "s3cr3t-value-that-is-long", message(alert()))
    assert AlertPayload.objects.order_by("id").last().headers["Authorization"] == "Bearer s3cr3t-v…"


# ---- retention -------------------------------------------------------------------------------------


def test_stored_posts_are_pruned_after_the_retention_period(am, settings):
    assert post(Client(), am, message(alert())).status_code == 200
    assert post(Client(), None, message(alert())).status_code == 401
    old_ids = list(AlertPayload.objects.values_list("pk", flat=True))
    AlertPayload.objects.update(received_at=timezone.now() - timedelta(days=31))
    assert Alert.objects.filter(last_payload__in=old_ids).exists()
    assert post(Client(), am, message(alert(), alert("DiskFull"))).status_code == 200

    assert alert_payloads_prune() == 2  # the task the beat schedule runs

    assert not AlertPayload.objects.filter(pk__in=old_ids).exists()
    assert AlertPayload.objects.count() == 1
    assert not Alert.objects.filter(last_payload_id__in=old_ids).exists()  # the alerts stay, unlinked
    settings.INGEST_PAYLOAD_RETENTION_DAYS = 0
    assert alert_payloads_prune() == 1


def test_the_prune_task_is_on_the_beat_schedule():
    task = PeriodicTask.objects.get(task="incidents.tasks.alert_payloads_prune")
    assert task.enabled and task.interval.every == 1 and task.interval.period == "hours"


def test_the_admin_shows_how_much_is_stored(admin_client, am):
    post(Client(), am, message(alert()))
    page = admin_client.get(reverse("admin:incidents_alertpayload_changelist")).content.decode()
    assert "Stored: about" in page and "kept 30 days" in page


# ---- rejected posts of a restricted alert group --------------------------------------------------


def test_a_rejected_post_of_a_restricted_group_is_hidden_with_its_incident(world, client):
    w = world
    broken = json.loads(_am_body(f"Payroll{MARKER}", starts=w.starts))
    broken["alerts"][0]["labels"] = "not a map"
    response = post(Client(), w.key, json.dumps(broken))
    assert response.status_code == 400
    rejected = AlertPayload.objects.get(status=AlertPayload.Status.REJECTED)
    assert rejected.incident_id == w.restricted.pk and rejected.group_id is not None

    changelist = reverse("admin:incidents_alertpayload_changelist")
    client.force_login(w.outsider)
    assert not leaks(w, client.get(changelist).content.decode())
    assert client.get(reverse("admin:incidents_alertpayload_change", args=[rejected.pk])).status_code == 302
    client.force_login(w.participant)
    assert str(rejected.pk) in client.get(changelist).content.decode()


# ---- new keys are shown once, on a page ------------------------------------------------------------


def _no_key_in_cookies(response, key):
    return all(key not in morsel.value for morsel in response.client.cookies.values())


def test_a_new_integration_key_is_shown_on_a_page_not_in_the_messages_cookie(admin_client, severities):
    response = admin_client.post(
        reverse("admin:incidents_integration_add"),
        {"name": "AM prod", "kind": "alertmanager", "is_active": "on", "open_mode": "triage", "resolve_to": "resolved"},
    )
    assert response.status_code == 200  # the page itself, not a redirect carrying a message
    ((_name, key),) = response.context["keys"]
    assert key in response.content.decode() and "no-store" in response["Cache-Control"]
    assert _no_key_in_cookies(response, key)
    assert post(Client(), key, message(alert())).status_code == 200
    assert key not in admin_client.get(reverse("admin:incidents_integration_changelist")).content.decode()


def test_an_api_key_is_shown_on_a_page_not_in_the_messages_cookie(admin_client, viewer):
    response = admin_client.post(reverse("admin:incidents_apikey_add"), {"name": "Exporter", "user": viewer.pk})
    assert response.status_code == 200
    ((_name, key),) = response.context["keys"]
    assert _no_key_in_cookies(response, key) and "no-store" in response["Cache-Control"]
    assert Client().get("/api/v1/incidents/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert AM_URL  # the ingestion endpoints are unaffected by API keys

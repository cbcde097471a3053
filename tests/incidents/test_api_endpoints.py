"""The endpoints incremental sync and tools need: updated_since, members, relieving a role, an incident's alerts."""

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from incidents import ingestion, services
from incidents.models import Incident, IncidentMember, RoleAssignment, TimelineEvent
from tests.api import api_client_for
from tests.incidents.factories import ServiceFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

LIST = "/api/v1/incidents/"


def client_for(user):
    cache.clear()  # throttle counters of earlier clients
    return api_client_for(user)


@pytest.fixture
def api(responder):
    return client_for(responder)


# ---- updated_since ---------------------------------------------------------------------------------


def test_updated_since_returns_what_changed_for_incremental_sync(api, sev3):
    old, changed, new = (declare(t, severity=sev3) for t in ("Old", "Changed", "New"))
    long_ago = timezone.now() - timedelta(days=2)
    Incident.objects.filter(pk__in=[old.pk, changed.pk]).update(updated_at=long_ago)
    since = timezone.now() - timedelta(hours=1)
    services.incident_update(incident=changed, actor=None, title="Changed again")
    response = api.get(LIST, {"updated_since": since.isoformat(), "ordering": "updated_at"})
    assert response.status_code == 200
    assert [i["title"] for i in response.json()["results"]] == ["New", "Changed again"]
    everything = api.get(LIST, {"updated_since": (long_ago - timedelta(seconds=1)).isoformat()}).json()["results"]
    assert len(everything) == 3


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00Z"])
def test_a_malformed_updated_since_is_400(api, value):
    response = api.get(LIST, {"updated_since": value})
    assert response.status_code == 400 and "updated_since" in response.json()["error"]["fields"]


# ---- members -----------------------------------------------------------------------------------------


def test_members_list_add_and_remove(api, responder, sev3):
    incident = declare("Payroll export", severity=sev3, actor=responder)
    services.role_assign(incident=incident, role="commander", user=responder, actor=responder)
    services.incident_restriction_set(incident=incident, restricted=True, actor=responder)
    mona = UserFactory(username="mona", groups=["Viewers"])
    url = f"{LIST}{incident.pk}/members/"
    assert api.get(url).json()["results"] == []
    added = api.post(url, {"user": "mona"})
    assert added.status_code == 201 and added.json()["user"] == "mona" and added.json()["added_by"] == "rita"
    assert api.post(url, {"user": "mona"}).status_code == 200  # already a member: nothing changes
    assert [m["user"] for m in api.get(url).json()["results"]] == ["mona"]
    assert client_for(mona).get(f"{LIST}{incident.pk}/").status_code == 200
    removed = api.delete(f"{url}mona/")
    assert removed.status_code == 200 and removed.json() == {"user": "mona", "notices": []}
    assert not IncidentMember.objects.exists()
    assert client_for(mona).get(f"{LIST}{incident.pk}/").status_code == 404
    kinds = list(incident.timeline.values_list("kind", flat=True))
    assert TimelineEvent.Kind.MEMBER_ADDED in kinds and TimelineEvent.Kind.MEMBER_REMOVED in kinds
    assert api.delete(f"{url}mona/").status_code == 404
    assert api.post(url, {"user": "nobody"}).status_code == 400


def test_members_need_their_permissions(viewer, sev3):
    incident = declare("Checkout", severity=sev3)
    UserFactory(username="mona")
    client = client_for(viewer)
    assert client.get(f"{LIST}{incident.pk}/members/").status_code == 200
    assert client.post(f"{LIST}{incident.pk}/members/", {"user": "mona"}).status_code == 403
    services.incident_member_add(incident=incident, user=viewer, actor=None)
    assert client.delete(f"{LIST}{incident.pk}/members/victor/").status_code == 403
    assert IncidentMember.objects.count() == 1


# ---- relieving a role ------------------------------------------------------------------------------


def test_relieve_a_role_without_a_successor(api, responder, sev3):
    incident = declare("Checkout", severity=sev3)
    lead = services.role_assign(incident=incident, role="technical_lead", user=responder, actor=responder)
    command = services.role_assign(incident=incident, role="commander", user=responder, actor=responder)
    response = api.post(f"{LIST}{incident.pk}/roles/{lead.pk}/relieve/")
    assert response.status_code == 200, response.content
    assert response.json()["relieved_at"] and response.json()["is_active"] is False
    response = api.post(f"{LIST}{incident.pk}/roles/{command.pk}/relieve/")
    assert response.status_code == 200
    assert api.get(f"{LIST}{incident.pk}/").json()["commander"] is None
    assert not RoleAssignment.objects.filter(incident=incident, relieved_at__isnull=True).exists()
    assert api.post(f"{LIST}{incident.pk}/roles/{command.pk}/relieve/").status_code == 200  # already ended
    relieved = incident.timeline.filter(kind=TimelineEvent.Kind.ROLE_RELIEVED).count()
    assert relieved == 2
    other = declare("Search", severity=sev3)
    assert api.post(f"{LIST}{other.pk}/roles/{lead.pk}/relieve/").status_code == 404  # not this incident's


def test_relieving_needs_the_change_permission(viewer, responder, sev3):
    incident = declare("Checkout", severity=sev3)
    lead = services.role_assign(incident=incident, role="technical_lead", user=responder, actor=responder)
    assert client_for(viewer).post(f"{LIST}{incident.pk}/roles/{lead.pk}/relieve/").status_code == 403
    lead.refresh_from_db()
    assert lead.relieved_at is None


# ---- alerts ------------------------------------------------------------------------------------------


def test_an_incidents_alerts(api, sev3):
    ingestion.integration_cache_clear()
    ServiceFactory(slug="checkout")
    _integration, key = ingestion.integration_create(kind="pagerduty", name="PD", services=[])
    body = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": "disk-full",
        "payload": {"summary": "Disk full on db-1", "source": "db-1", "severity": "warning"},
    }
    _payload, result = ingestion.post_receive(kind="pagerduty", body=json.dumps(body).encode(), headers={}, key=None)
    incident = Incident.objects.get(pk=result.incident_id)
    alerts = api.get(f"{LIST}{incident.pk}/alerts/")
    assert alerts.status_code == 200, alerts.content
    [alert] = alerts.json()["results"]
    assert alert["summary"] == "Disk full on db-1" and alert["status"] == "firing" and alert["sender"] == "pagerduty"
    assert api.get(f"{LIST}{declare('Other', severity=sev3).pk}/alerts/").json()["results"] == []

"""The Statuspage v2 JSON documents match a real Statuspage summary.json, key for key and enum for enum."""

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from comms import services as comms_services
from incidents.models import ServiceGroup
from tests.comms.factories import maintenance_scheduled, published_update
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).parent / "samples" / "statuspage" / "summary_twilio_2020.json"  # see samples/SOURCES.md
# Fields Statuspage's current API has that the 2020 capture predates (documented in its API reference).
NEWER_FIELDS = {"start_date"}

INDICATORS = {"none", "minor", "major", "critical", "maintenance"}
COMPONENT_STATUSES = {"operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"}
INCIDENT_STATUSES = {"investigating", "identified", "monitoring", "resolved", "postmortem"}
IMPACTS = {"none", "minor", "major", "critical"}
MAINTENANCE_STATUSES = {"scheduled", "in_progress", "verifying", "completed"}


@pytest.fixture(scope="module")
def sample():
    return json.loads(SAMPLE.read_text())


@pytest.fixture
def busy(db):
    """Every kind of object present: groups, components, an open incident with updates, maintenances."""
    group = ServiceGroup.objects.create(name="API")
    sms = ServiceFactory(name="SMS", slug="sms", is_public=True, group=group)
    voice = ServiceFactory(name="Voice", slug="voice", is_public=True, group=group)
    ServiceFactory(name="Console", slug="console", is_public=True)
    incident = declare("SMS delays", severity=SeverityFactory(level=3), services=[sms])
    published_update(incident, components=[(sms, "degraded_performance")],
                     published_at=timezone.now() - timedelta(minutes=5))  # fmt: skip
    published_update(incident, public_status="monitoring", components=[(sms, "operational")])
    maintenance_scheduled(services=[voice], name="Voice carrier maintenance")
    active = maintenance_scheduled(services=[sms], name="SMS upgrade", starts_in=timedelta(0))
    comms_services.maintenance_transition(maintenance=active, to="in_progress")
    return incident


def keys_match(ours, theirs, where):
    """Same keys as the sample's object (plus the documented newer fields), recursively into the objects
    and lists of objects both have."""
    assert set(ours) - NEWER_FIELDS == set(theirs), f"{where}: {sorted(set(ours) ^ set(theirs))}"
    for key, value in theirs.items():
        if isinstance(value, dict):
            keys_match(ours[key], value, f"{where}.{key}")
        elif isinstance(value, list) and value and isinstance(value[0], dict) and ours[key]:
            for item in ours[key]:
                keys_match(item, value[0], f"{where}.{key}[]")


def check_types(ours, theirs, where):
    """Where the sample has a string, a number, a bool, a list or an object, we have the same (or null)."""
    for key, value in theirs.items():
        if value is None or ours.get(key) is None:
            continue
        assert type(ours[key]) is type(value), f"{where}.{key}: {type(ours[key]).__name__}"
        if isinstance(value, dict):
            check_types(ours[key], value, f"{where}.{key}")


def group_and_child(components):
    group = next(c for c in components if c["group"])
    child = next(c for c in components if not c["group"])
    return group, child


def test_summary_has_the_samples_keys_everywhere(client, busy, sample):
    ours = client.get("/status/api/v2/summary.json").json()
    assert list(ours) == list(sample)  # page, components, incidents, scheduled_maintenances, status
    keys_match(ours["page"], sample["page"], "page")
    keys_match(ours["status"], sample["status"], "status")
    for mine, theirs in zip(group_and_child(ours["components"]), group_and_child(sample["components"]), strict=True):
        keys_match(mine, theirs, "component")
        check_types(mine, theirs, "component")
    assert ours["incidents"] and ours["scheduled_maintenances"]
    keys_match(ours["incidents"][0], sample["incidents"][0], "incident")
    check_types(ours["incidents"][0], sample["incidents"][0], "incident")
    keys_match(ours["scheduled_maintenances"][0], sample["scheduled_maintenances"][0], "maintenance")
    check_types(ours["scheduled_maintenances"][0], sample["scheduled_maintenances"][0], "maintenance")


def test_enum_values_are_statuspages(client, busy):
    ours = client.get("/status/api/v2/summary.json").json()
    assert ours["status"]["indicator"] in INDICATORS
    assert {c["status"] for c in ours["components"]} <= COMPONENT_STATUSES
    for incident in ours["incidents"]:
        assert incident["status"] in INCIDENT_STATUSES and incident["impact"] in IMPACTS
        for update in incident["incident_updates"]:
            assert update["status"] in INCIDENT_STATUSES
            for affected in update["affected_components"]:
                assert {affected["old_status"], affected["new_status"]} <= COMPONENT_STATUSES
    statuses = {m["status"] for m in ours["scheduled_maintenances"]}
    assert statuses == {"scheduled", "in_progress"} and statuses <= MAINTENANCE_STATUSES
    assert {m["impact"] for m in ours["scheduled_maintenances"]} == {"maintenance"}  # as the sample says


def test_timestamps_are_iso_8601_with_milliseconds_and_offset(client, busy, sample):
    ours = client.get("/status/api/v2/summary.json").json()
    incident = ours["incidents"][0]
    for value in (ours["page"]["updated_at"], incident["created_at"], incident["started_at"],
                  incident["monitoring_at"], incident["incident_updates"][0]["display_at"]):  # fmt: skip
        parsed = datetime.fromisoformat(value)
        assert parsed.tzinfo is not None and len(value) == len(sample["page"]["updated_at"])


def test_incident_fields_say_what_was_published(client, busy):
    [incident] = client.get("/status/api/v2/incidents/unresolved.json").json()["incidents"]
    assert incident["status"] == "monitoring" and incident["monitoring_at"] and incident["resolved_at"] is None
    assert incident["impact"] == "minor"
    newest, oldest = incident["incident_updates"]
    assert (newest["status"], oldest["status"]) == ("monitoring", "investigating")
    assert newest["affected_components"][0]["old_status"] == "degraded_performance"
    assert newest["affected_components"][0]["new_status"] == "operational"
    assert {u["incident_id"] for u in incident["incident_updates"]} == {incident["id"]}
    assert [c["name"] for c in incident["components"]] == ["SMS"]


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("status.json", ["page", "status"]),
        ("components.json", ["page", "components"]),
        ("incidents.json", ["page", "incidents"]),
        ("incidents/unresolved.json", ["page", "incidents"]),
        ("scheduled-maintenances.json", ["page", "scheduled_maintenances"]),
        ("scheduled-maintenances/upcoming.json", ["page", "scheduled_maintenances"]),
        ("scheduled-maintenances/active.json", ["page", "scheduled_maintenances"]),
    ],
)
def test_each_document_has_statuspages_top_level_keys(client, busy, sample, path, keys):
    ours = client.get(f"/status/api/v2/{path}").json()
    assert list(ours) == keys
    keys_match(ours["page"], sample["page"], "page")
    if "incidents" in ours:
        assert ours["incidents"]
        keys_match(ours["incidents"][0], sample["incidents"][0], f"{path} incident")
    if "scheduled_maintenances" in ours:
        assert ours["scheduled_maintenances"]
        for maintenance in ours["scheduled_maintenances"]:
            keys_match(maintenance, sample["scheduled_maintenances"][0], f"{path} maintenance")
    if "components" in ours:
        assert ours["components"] == client.get("/status/api/v2/summary.json").json()["components"]


def test_upcoming_and_active_split_the_open_maintenances(client, busy):
    def names(path):
        return [m["name"] for m in client.get(f"/status/api/v2/{path}").json()["scheduled_maintenances"]]

    assert names("scheduled-maintenances/upcoming.json") == ["Voice carrier maintenance"]
    assert names("scheduled-maintenances/active.json") == ["SMS upgrade"]
    assert sorted(names("scheduled-maintenances.json")) == ["SMS upgrade", "Voice carrier maintenance"]


def test_scheduled_maintenances_is_present_in_summary_even_when_empty(client, db):
    assert client.get("/status/api/v2/summary.json").json()["scheduled_maintenances"] == []

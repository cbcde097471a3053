"""The public status page: what customers see at /status/, and how it is derived."""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from comms import services as comms_services
from comms.models import ScheduledMaintenance
from comms.status import documents, public_ids, selectors
from incidents.models import ServiceGroup
from tests.comms.factories import maintenance_scheduled, named, published_update
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db

SUMMARY = "/status/api/v2/summary.json"


@pytest.fixture
def world(db):
    payments = ServiceGroup.objects.create(name="Payments", position=1)
    checkout = ServiceFactory(name="Checkout API", slug="checkout-api", is_public=True, group=payments)
    billing = ServiceFactory(name="Billing", slug="billing", is_public=True, group=payments)
    website = ServiceFactory(name="Website", slug="website", is_public=True)
    database = ServiceFactory(name="Primary database", slug="db", is_public=False)
    return {"checkout": checkout, "billing": billing, "website": website, "db": database}


def summary(client):
    response = client.get(SUMMARY)
    assert response.status_code == 200
    return response.json()


def component(doc, name):
    return next(c for c in doc["components"] if c["name"] == name)


# ---- overall status and components ------------------------------------------------------------------


def test_all_operational_when_nothing_is_open(client, world):
    doc = summary(client)
    assert doc["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert {c["status"] for c in doc["components"]} == {"operational"}
    assert doc["incidents"] == [] and doc["scheduled_maintenances"] == []
    page = client.get("/status/").content.decode()
    assert "All Systems Operational" in page


def test_components_are_public_services_grouped_by_service_group(client, world):
    doc = summary(client)
    names = [c["name"] for c in doc["components"]]
    assert names == ["Payments", "Billing", "Checkout API", "Website"]  # group, its children, then ungrouped
    group = component(doc, "Payments")
    assert group["group"] is True and group["group_id"] is None
    assert set(group["components"]) == {component(doc, "Billing")["id"], component(doc, "Checkout API")["id"]}
    assert component(doc, "Billing")["group_id"] == group["id"]
    assert component(doc, "Website")["group_id"] is None and "components" not in component(doc, "Website")
    assert "Primary database" not in json.dumps(doc)  # not public: not a component


def test_component_status_is_the_worst_given_by_the_latest_update_of_each_open_incident(client, world, sev2, sev3):
    a = declare("Checkout slow", severity=sev3, services=[world["checkout"]])
    earlier = timezone.now() - timedelta(minutes=30)
    published_update(a, components=[(world["checkout"], "major_outage")], published_at=earlier)
    published_update(a, public_status="identified", components=[(world["checkout"], "degraded_performance")])
    b = declare("Card payments failing", severity=sev2, services=[world["checkout"]])
    published_update(b, components=[(world["checkout"], "partial_outage"), (world["billing"], "degraded_performance")])

    doc = summary(client)
    # The latest update of A says degraded (its earlier major outage is history); B says partial outage.
    assert component(doc, "Checkout API")["status"] == "partial_outage"
    assert component(doc, "Billing")["status"] == "degraded_performance"
    assert component(doc, "Payments")["status"] == "partial_outage"  # a group shows its worst component
    assert component(doc, "Website")["status"] == "operational"
    assert doc["status"] == {"indicator": "major", "description": "Partial System Outage"}


def test_a_resolved_incident_no_longer_colours_its_components(client, world):
    incident = declare("Checkout down", severity=SeverityFactory(level=1), services=[world["checkout"]])
    published_update(incident, components=[(world["checkout"], "major_outage")])
    assert component(summary(client), "Checkout API")["status"] == "major_outage"
    published_update(incident, public_status="resolved", components=[(world["checkout"], "operational")])
    doc = summary(client)
    assert component(doc, "Checkout API")["status"] == "operational"
    assert doc["status"]["indicator"] == "none"


def test_resolving_internally_does_not_resolve_publicly_until_the_resolving_update_is_published(client, world, sev3):
    """Public statuses follow published updates (issue 12): resolving the incident drafts the resolving
    update for review (tests/comms/test_public_identity.py) instead of resolving the page silently."""
    incident = declare("Checkout slow", severity=sev3, services=[world["checkout"]])
    published_update(incident, components=[(world["checkout"], "degraded_performance")])
    drive(incident, "resolved")
    doc = summary(client)
    assert [i["status"] for i in doc["incidents"]] == ["investigating"]
    assert component(doc, "Checkout API")["status"] == "degraded_performance"
    published_update(incident, public_status="resolved", components=[(world["checkout"], "operational")])
    doc = summary(client)
    assert doc["incidents"] == []
    assert component(doc, "Checkout API")["status"] == "operational"
    [listed] = client.get("/status/api/v2/incidents.json").json()["incidents"]
    assert listed["status"] == "resolved" and listed["resolved_at"] is not None


@pytest.mark.parametrize(
    ("level", "impact", "description"),
    [(1, "critical", "Major Service Outage"), (2, "major", "Partial System Outage"),
     (3, "minor", "Minor Service Outage"), (4, "none", "All Systems Operational")],
)  # fmt: skip
def test_incident_impact_follows_severity(client, world, level, impact, description):
    incident = declare("Something", severity=SeverityFactory(level=level))
    published_update(incident)  # no component named: the impact alone sets the page status
    doc = summary(client)
    assert doc["incidents"][0]["impact"] == impact
    assert doc["status"] == {"indicator": impact, "description": description}


def test_component_status_drives_the_indicator_when_worse_than_the_impact(client, world):
    incident = declare("Website down", severity=SeverityFactory(level=4))
    published_update(incident, components=[(world["website"], "major_outage")])
    assert summary(client)["status"] == {"indicator": "critical", "description": "Major Service Outage"}


# ---- maintenance on the page -------------------------------------------------------------------------


def test_in_progress_maintenance_puts_its_public_components_under_maintenance(client, world):
    maintenance = maintenance_scheduled(services=[world["website"], world["db"]], name="Website move")
    doc = summary(client)
    assert component(doc, "Website")["status"] == "operational"
    [listed] = doc["scheduled_maintenances"]
    assert listed["status"] == "scheduled" and listed["name"] == "Website move"
    assert [c["name"] for c in listed["components"]] == ["Website"]  # the internal database stays out

    comms_services.maintenance_transition(maintenance=maintenance, to="in_progress")
    doc = summary(client)
    assert component(doc, "Website")["status"] == "under_maintenance"
    assert doc["status"] == {"indicator": "maintenance", "description": "Service Under Maintenance"}
    assert client.get("/status/api/v2/scheduled-maintenances/active.json").json()["scheduled_maintenances"]
    assert client.get("/status/api/v2/scheduled-maintenances/upcoming.json").json()["scheduled_maintenances"] == []

    comms_services.maintenance_transition(maintenance=maintenance, to="completed")
    doc = summary(client)
    assert component(doc, "Website")["status"] == "operational" and doc["scheduled_maintenances"] == []
    [done] = client.get("/status/api/v2/scheduled-maintenances.json").json()["scheduled_maintenances"]
    assert done["status"] == "completed" and done["resolved_at"] is not None
    assert [u["status"] for u in done["incident_updates"]] == ["completed", "in_progress", "scheduled"]


def test_an_outage_outranks_maintenance_on_the_same_component(client, world, sev2):
    maintenance = maintenance_scheduled(services=[world["website"]])
    comms_services.maintenance_transition(maintenance=maintenance, to="in_progress")
    incident = declare("Website errors", severity=sev2)
    published_update(incident, components=[(world["website"], "partial_outage")])
    assert component(summary(client), "Website")["status"] == "partial_outage"


def test_maintenance_on_internal_services_only_is_not_public(client, world):
    maintenance_scheduled(services=[world["db"]], name="Vacuum the database")
    assert "Vacuum" not in client.get("/status/").content.decode()
    assert client.get("/status/api/v2/scheduled-maintenances.json").json()["scheduled_maintenances"] == []


def test_page_lists_upcoming_and_active_maintenance(client, world):
    upcoming = maintenance_scheduled(services=[world["website"]], name="Website move")
    active = maintenance_scheduled(services=[world["billing"]], name="Billing upgrade", starts_in=timedelta(0))
    comms_services.maintenance_transition(maintenance=active, to="in_progress", body="Halfway through.")
    page = client.get("/status/").content.decode()
    assert "Maintenance in progress" in page and "Billing upgrade" in page and "Halfway through." in page
    assert "Scheduled maintenance" in page and "Website move" in page
    detail = client.get(reverse("status:maintenance", args=[public_ids.encode("maintenance", upcoming.pk)]))
    assert detail.status_code == 200 and "We upgrade the <strong>database</strong>." in detail.content.decode()


# ---- incidents on the page ---------------------------------------------------------------------------


def test_open_incident_shows_its_published_updates_newest_first_with_corrections(client, world, sev2):
    incident = named(declare("Internal title", severity=sev2, services=[world["checkout"]]), "Checkout errors")
    t0 = timezone.now() - timedelta(hours=1)
    first = published_update(incident, title="Checkout errors", body="We see **errors**.", published_at=t0)
    published_update(incident, public_status="identified", title="Checkout errors", body="Found the cause.",
                     published_at=t0 + timedelta(minutes=20))  # fmt: skip
    published_update(incident, title="Checkout errors", body="We see errors at checkout (not billing).",
                     corrects=first, published_at=t0 + timedelta(minutes=30))  # fmt: skip

    page = client.get("/status/").content.decode()
    assert "Current incidents" in page and "Checkout errors" in page
    assert "Internal title" not in page  # the public title names the incident publicly
    positions = [page.index(text) for text in ("not billing", "Found the cause.", "We see <strong>errors</strong>.")]
    assert positions == sorted(positions)  # newest first
    assert "Correction" in page and "Corrects the update of" in page

    [doc] = summary(client)["incidents"]
    assert doc["name"] == "Checkout errors"
    bodies = [u["body"] for u in doc["incident_updates"]]
    assert bodies[0].startswith("Correction to the update of ") and bodies[0].endswith("(not billing).")
    assert bodies[1:] == ["Found the cause.", "We see **errors**."]


def test_the_front_page_shows_an_incidents_latest_updates_and_links_to_all_of_them(client, world, sev2):
    incident = named(declare("Internal title", severity=sev2, services=[world["checkout"]]), "Checkout errors")
    t0 = timezone.now() - timedelta(hours=2)
    count = documents.FRONT_PAGE_UPDATES + 3
    for n in range(count):
        at = t0 + timedelta(minutes=n)
        published_update(incident, title="Checkout errors", body=f"Progress note {n}.", published_at=at)
    path = reverse("status:incident", args=[public_ids.encode("incident", incident.pk)])

    page = client.get("/status/").content.decode()
    shown = [n for n in range(count) if f"Progress note {n}." in page]
    assert shown == list(range(3, count))  # the latest ones; the first three only on the incident's page
    assert f'<a href="{path}">All {count} updates</a>' in page
    detail = client.get(path).content.decode()
    assert all(f"Progress note {n}." in detail for n in range(count)) and "All 8 updates" not in detail
    [doc] = summary(client)["incidents"]
    assert len(doc["incident_updates"]) == count  # the JSON keeps every update (Statuspage's format)


def test_an_incident_with_few_updates_has_no_link_to_more(client, world, sev2):
    incident = named(declare("Internal title", severity=sev2, services=[world["checkout"]]), "Checkout errors")
    for n in range(documents.FRONT_PAGE_UPDATES):
        published_update(incident, title="Checkout errors", body=f"Progress note {n}.")
    page = client.get("/status/").content.decode()
    assert all(f"Progress note {n}." in page for n in range(documents.FRONT_PAGE_UPDATES))
    assert 'class="more"' not in page


def test_a_correction_links_to_the_corrected_update_on_the_incidents_page(client, world, sev2):
    incident = named(declare("Internal title", severity=sev2, services=[world["checkout"]]), "Checkout errors")
    t0 = timezone.now() - timedelta(hours=2)
    first = published_update(incident, title="Checkout errors", body="Errors.", published_at=t0)
    for n in range(documents.FRONT_PAGE_UPDATES):  # the corrected update is off the front page by now
        at = t0 + timedelta(minutes=1 + n)
        published_update(incident, title="Checkout errors", body=f"Note {n}.", published_at=at)
    published_update(incident, title="Checkout errors", body="Errors at checkout.", corrects=first,
                     published_at=t0 + timedelta(minutes=30))  # fmt: skip
    path = reverse("status:incident", args=[public_ids.encode("incident", incident.pk)])
    link = f'href="{path}#update-{public_ids.encode("update", first.pk)}"'
    assert link in client.get("/status/").content.decode()
    assert link in client.get(path).content.decode()


def test_a_page_built_on_the_one_read_just_before_is_the_same_for_fewer_queries(world, sev2, sev3):
    """A refresh builds the front page's history on the page the JSON documents were built from."""
    open_ = named(declare("Internal", severity=sev2, services=[world["checkout"]]), "Checkout errors")
    published_update(open_, title="Checkout errors", components=[(world["checkout"], "major_outage")])
    past = named(declare("Past", severity=sev3), "Past blip")
    published_update(past, title="Past blip", published_at=timezone.now() - timedelta(days=2))
    drive(past, "resolved")
    published_update(past, public_status="resolved")
    maintenance_scheduled(services=[world["website"]])
    now = timezone.now()

    common = selectors.status_page(now=now)
    with CaptureQueriesContext(connection) as reused:
        on_common = selectors.status_page(incidents="history", now=now, common=common)
    with CaptureQueriesContext(connection) as alone:
        built = selectors.status_page(incidents="history", now=now)
    assert len(reused) < len(alone)
    assert [i.name for i in on_common.incidents] == ["Past blip"] and common.incidents == []  # not shared
    for page in (on_common, built):
        page.body = documents.html("comms/status/index.html", page, front_page_updates=5)[2]
    assert on_common.body == built.body and b"Checkout errors" in built.body and b"Past blip" in built.body


def test_incidents_resolved_in_the_last_90_days_are_listed(client, world, sev3):
    recent = named(declare("Recent blip", severity=sev3), "Recent blip")
    published_update(recent, title="Recent blip", published_at=timezone.now() - timedelta(minutes=5))
    drive(recent, "resolved")
    published_update(recent, public_status="resolved")
    old = named(declare("Ancient outage", severity=sev3, detected_at=timezone.now() - timedelta(days=120)), "Ancient outage")
    published_update(old, title="Ancient outage", published_at=timezone.now() - timedelta(days=119))
    drive(old, "resolved", at=timezone.now() - timedelta(days=118))
    published_update(old, public_status="resolved", published_at=timezone.now() - timedelta(days=118))
    quiet = declare("Never announced", severity=sev3)
    drive(quiet, "resolved")

    page = client.get("/status/").content.decode()
    history = page[page.index("Past incidents") :]
    assert "Recent blip" in history
    assert "Ancient outage" not in page and "Never announced" not in page
    names = [i["name"] for i in client.get("/status/api/v2/incidents.json").json()["incidents"]]
    assert names == ["Recent blip", "Ancient outage"]  # incidents.json: the 50 latest, resolved included


def test_incident_page_by_public_id(client, world, sev3):
    incident = declare("Checkout slow", severity=sev3)
    update = published_update(incident, title="Checkout slow", body="Slow checkouts.")
    public_id = public_ids.encode("incident", incident.pk)
    response = client.get(f"/status/incidents/{public_id}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Slow checkouts." in body and f'id="update-{public_ids.encode("update", update.pk)}"' in body
    assert summary(client)["incidents"][0]["shortlink"].endswith(f"/status/incidents/{public_id}/")
    assert client.get("/status/incidents/zzzzzzzzzzzz/").status_code == 404
    assert client.get(f"/status/incidents/{incident.reference}/").status_code == 404


def test_public_ids_are_stable_opaque_and_reversible(settings):
    ids = [public_ids.encode("incident", pk) for pk in range(1, 200)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 12 and set(i) <= set(public_ids.ALPHABET) for i in ids)
    assert all(public_ids.decode("incident", i) == pk for pk, i in enumerate(ids, start=1))
    assert public_ids.encode("incident", 7) != public_ids.encode("update", 7)  # kinds never collide
    assert public_ids.encode("incident", 7) == public_ids.encode("incident", 7)
    settings.STATUS_PAGE_ID_KEY = "another key"
    assert public_ids.encode("incident", 7) != ids[6]
    assert public_ids.decode("incident", "not-an-id") is None


def test_published_through_the_real_workflow_appears_everywhere(client, world, sev3):
    """End to end: a Communications person drafts and publishes; the page, JSON and feed show it."""
    comms = UserFactory(username="erin", groups=["Communications"])
    incident = declare("Checkout slow", severity=sev3, services=[world["checkout"]])
    draft = comms_services.update_draft_create(
        incident=incident,
        actor=comms,
        audience="external",
        public_status="investigating",
        title="Slow checkouts",
        body="Checkouts take longer than usual on {{ services }}.",
        components=[(world["checkout"], "degraded_performance")],
    )
    assert "Slow checkouts" not in client.get("/status/").content.decode()  # a draft is not public
    comms_services.incident_public_identity_set(
        incident=incident, actor=comms, public_title="Slow checkouts", public_impact="Checkouts take longer."
    )
    comms_services.update_publish(update=draft, actor=comms)

    assert "Checkouts take longer than usual on Checkout API." in client.get("/status/").content.decode()
    doc = summary(client)
    assert doc["incidents"][0]["name"] == "Slow checkouts"
    assert component(doc, "Checkout API")["status"] == "degraded_performance"
    assert doc["incidents"][0]["incident_updates"][0]["affected_components"] == [
        {
            "code": component(doc, "Checkout API")["id"],
            "name": "Payments - Checkout API",
            "old_status": "operational",
            "new_status": "degraded_performance",
        }
    ]
    assert "Slow checkouts: Investigating" in client.get("/status/feed.atom").content.decode()


# ---- HTTP: headers, methods, cost ------------------------------------------------------------------


ALL_DOCUMENTS = [
    "/status/",
    "/status/feed.atom",
    "/status/api/v2/summary.json",
    "/status/api/v2/status.json",
    "/status/api/v2/components.json",
    "/status/api/v2/incidents.json",
    "/status/api/v2/incidents/unresolved.json",
    "/status/api/v2/scheduled-maintenances.json",
    "/status/api/v2/scheduled-maintenances/upcoming.json",
    "/status/api/v2/scheduled-maintenances/active.json",
]


@pytest.mark.parametrize("path", ALL_DOCUMENTS)
def test_public_documents_are_cacheable_and_json_is_cors_open(client, world, path):
    response = client.get(path)
    assert response.status_code == 200
    assert "public" in response["Cache-Control"] and "max-age=30" in response["Cache-Control"]
    assert "Cookie" not in response.get("Vary", "")  # the same answer for everyone
    if path.endswith(".json"):
        assert response["Content-Type"] == "application/json"
        assert response["Access-Control-Allow-Origin"] == "*"
    assert client.post(path).status_code == 405  # read-only


def test_a_logged_in_superuser_sees_the_same_public_page(client, admin_user, world, sev3):
    secret = declare("Secret thing", severity=sev3, restricted=True)
    published_update(secret, title="Secret thing")
    client.force_login(admin_user)
    assert "Secret thing" not in client.get("/status/").content.decode()
    assert summary(client)["incidents"] == []


def _world_of(size, world):
    sev = SeverityFactory(level=2)
    for n in range(size):
        incident = declare(f"Incident {n}", severity=sev, services=[world["checkout"]])
        first = published_update(incident, components=[(world["checkout"], "partial_outage")],
                                 published_at=timezone.now() - timedelta(minutes=10))  # fmt: skip
        published_update(incident, public_status="identified", corrects=first,
                         components=[(world["checkout"], "degraded_performance"), (world["billing"], "major_outage")])  # fmt: skip
        resolved = declare(f"Resolved {n}", severity=sev)
        published_update(resolved, components=[(world["website"], "major_outage")])
        drive(resolved, "resolved")
        maintenance = maintenance_scheduled(services=[world["website"], world["billing"]], name=f"Work {n}")
        if n % 2:
            comms_services.maintenance_transition(maintenance=maintenance, to="in_progress")
    ServiceFactory(name=f"Extra {size}", slug=f"extra-{size}", is_public=True, group=ServiceGroup.objects.first())


def _queries(client, path):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize("path", ALL_DOCUMENTS)
def test_each_document_costs_the_same_few_queries_for_1_or_many_rows(client, world, path):
    _world_of(1, world)
    few = _queries(client, path)
    _world_of(6, world)
    many = _queries(client, path)
    assert few == many
    assert many <= 12


def test_page_is_readable_without_javascript_or_external_assets(client, world):
    body = client.get("/status/").content.decode()
    assert "<script" not in body and 'name="viewport"' in body  # no JavaScript; sized for phones
    assert 'rel="stylesheet"' not in body and "<style>" in body  # the CSS is inline: no CDN, no static files
    links = re.findall(r'(?:href|src)="([^"]*)"', body)
    assert links and all(link.startswith(("/", "#")) for link in links)  # nothing loaded from elsewhere


def test_page_links_to_the_public_subscription_form(client, world):
    assert f'href="{reverse("comms_subscriptions:subscribe")}"' in client.get("/status/").content.decode()


def test_selectors_are_the_single_source_for_component_status(world, sev2):
    incident = declare("Billing errors", severity=sev2)
    published_update(incident, components=[(world["billing"], "major_outage"), (world["db"], "major_outage")])
    page = selectors.status_page()
    statuses = {c.name: c.status for c in page.components}
    assert statuses == {
        "Billing": "major_outage",
        "Checkout API": "operational",
        "Website": "operational",
    }  # the internal database, named by the update, is not a component
    assert page.status.indicator == "critical"
    assert ScheduledMaintenance.objects.count() == 0

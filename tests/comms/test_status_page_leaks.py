"""Only published external updates ever appear publicly: tested on every public document.

One world holds everything that must stay inside — a secret internal note, the incident's summary
and internal title, an internal update, a draft, an update in review, an approved but unpublished
one, an unpublished correction, a restricted incident (even with a published external update), an
internal service named by a public update, the people and severity labels — each carrying a
sentinel string that no public document may contain.
"""

import pytest
from django.urls import reverse

from comms import services as comms_services
from comms.status import public_ids
from incidents import services as incident_services
from tests.comms.factories import maintenance_scheduled, published_update
from tests.comms.test_status_page import ALL_DOCUMENTS
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

SENTINELS = {
    "internal title": "Kestrel4401",
    "summary": "Marmot5502",
    "timeline note": "Ocelot6603",
    "internal update": "Pangolin7704",
    "draft": "Quetzal8805",
    "in review": "Raccoon9906",
    "approved, unpublished": "Serval1107",
    "unpublished correction": "Tapir2208",
    "restricted title": "Urial3309",
    "restricted update": "Vicuna4410",
    "internal service": "Wombat5511",
    "commander": "xerus6612",
    "internal maintenance": "Yak7713",
}


@pytest.fixture
def world(db):
    sev = SeverityFactory(level=2)
    public = ServiceFactory(name="Checkout API", slug="checkout-api", is_public=True)
    internal = ServiceFactory(name=f"Ledger {SENTINELS['internal service']}", slug="ledger", is_public=False)
    commander = UserFactory(username=SENTINELS["commander"], email=f"{SENTINELS['commander']}@example.com")
    author = UserFactory(username="author-person")

    incident = declare(
        f"Ledger drift {SENTINELS['internal title']}",
        severity=sev,
        services=[public, internal],
        summary=f"Root cause suspected in {SENTINELS['summary']}",
        actor=commander,
    )
    incident_services.role_assign(incident=incident, role="commander", user=commander, actor=commander)
    incident_services.timeline_note_add(incident=incident, actor=commander, body=f"Secret: {SENTINELS['timeline note']}")
    original = published_update(
        incident,
        title="Checkout errors",
        body="Some payments fail at checkout.",
        components=[(public, "partial_outage"), (internal, "major_outage")],
    )
    published_update(incident, audience="internal", body=f"Execs: {SENTINELS['internal update']}")
    published_update(incident, status="draft", body=f"Draft {SENTINELS['draft']}", title=SENTINELS["draft"])
    published_update(incident, status="in_review", body=f"Review {SENTINELS['in review']}")
    published_update(incident, status="approved", body=f"Approved {SENTINELS['approved, unpublished']}")
    correction = comms_services.update_correct(update=original, actor=author, body=f"Fix {SENTINELS['unpublished correction']}")
    assert correction.status == "draft"

    restricted = declare(
        f"Breach {SENTINELS['restricted title']}", severity=SeverityFactory(level=1), services=[public], restricted=True
    )
    published_update(
        restricted,
        title=f"Breach {SENTINELS['restricted title']}",
        body=f"Published on a restricted incident: {SENTINELS['restricted update']}",
        components=[(public, "major_outage")],
    )
    maintenance_scheduled(services=[internal], name=f"Reindex {SENTINELS['internal maintenance']}")
    public_maintenance = maintenance_scheduled(services=[public, internal], name="Checkout upgrade")
    return {"incident": incident, "restricted": restricted, "maintenance": public_maintenance, "severity": sev}


def public_paths(world):
    return [
        *ALL_DOCUMENTS,
        reverse("status:incident", args=[public_ids.encode("incident", world["incident"].pk)]),
        reverse("status:maintenance", args=[public_ids.encode("maintenance", world["maintenance"].pk)]),
    ]


def test_no_sentinel_appears_in_any_public_document(client, world):
    incident = world["incident"]
    for path in public_paths(world):
        response = client.get(path)
        assert response.status_code == 200, path
        body = response.content.decode()
        for what, sentinel in SENTINELS.items():
            assert sentinel.lower() not in body.lower(), f"{what} leaked on {path}"
        assert incident.reference not in body and world["restricted"].reference not in body, path
        assert world["severity"].label not in body, path  # severity labels are internal vocabulary


def test_the_public_parts_are_there(client, world):
    """The leak test above would pass on an empty page; this says the page is not empty."""
    page = client.get("/status/").content.decode()
    # No public title set: a neutral name from its public services (the internal one is left out).
    name = "Service disruption: Checkout API"
    assert name in page and "Some payments fail at checkout." in page and "Checkout upgrade" in page
    summary = client.get("/status/api/v2/summary.json").json()
    assert [i["name"] for i in summary["incidents"]] == [name]
    [update] = summary["incidents"][0]["incident_updates"]  # only the published external one
    assert [c["name"] for c in update["affected_components"]] == ["Checkout API"]  # the ledger is left out
    assert f"{name}: Investigating" in client.get("/status/feed.atom").content.decode()


def test_a_restricted_incident_has_no_public_page_even_with_a_published_update(client, world):
    path = reverse("status:incident", args=[public_ids.encode("incident", world["restricted"].pk)])
    assert client.get(path).status_code == 404
    incidents = client.get("/status/api/v2/incidents.json").json()["incidents"]
    assert public_ids.encode("incident", world["restricted"].pk) not in {i["id"] for i in incidents}
    # Nor does it colour a component: the restricted incident said major outage, the public one partial.
    components = client.get("/status/api/v2/components.json").json()["components"]
    assert {c["name"]: c["status"] for c in components} == {"Checkout API": "partial_outage"}


def test_an_incident_with_nothing_published_is_absent(client, world):
    quiet = declare("Nothing said yet", severity=world["severity"])
    published_update(quiet, status="draft", body="Draft only")
    assert client.get(reverse("status:incident", args=[public_ids.encode("incident", quiet.pk)])).status_code == 404
    assert "Nothing said yet" not in client.get("/status/").content.decode()


def test_restricting_an_incident_later_takes_it_off_the_page(client, world):
    incident_services.incident_restriction_set(incident=world["incident"], restricted=True, actor=None)
    assert client.get("/status/api/v2/summary.json").json()["incidents"] == []
    assert "Checkout errors" not in client.get("/status/feed.atom").content.decode()

"""The in-app widget: /status/embed.js and the document it reads, /status/api/embed.json."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from comms import services as comms_services
from comms.models import ScheduledMaintenance
from incidents.models import ServiceGroup
from tests.comms.factories import maintenance_scheduled, published_update
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare, drive

pytestmark = pytest.mark.django_db

EMBED = "/status/api/embed.json"


@pytest.fixture
def world(db):
    payments = ServiceGroup.objects.create(name="Payments", position=1)
    return {
        "checkout": ServiceFactory(name="Checkout API", slug="checkout", is_public=True, group=payments),
        "api": ServiceFactory(name="Public API", slug="api", is_public=True),
        "website": ServiceFactory(name="Website", slug="website", is_public=True),
        "ledger": ServiceFactory(name="Ledger DB", slug="ledger", is_public=False),
        "severity": SeverityFactory(level=2),
    }


def embed(client, components=None):
    response = client.get(EMBED, {"components": components} if components is not None else {})
    assert response.status_code == 200, response.content
    return response.json()


def test_an_incident_on_a_chosen_component_is_in_the_document_with_its_public_name_and_status(client, world):
    incident = declare("INC internal name", severity=world["severity"], services=[world["checkout"]])
    published_update(incident, title="Card payments are failing", public_status="identified",
                     components=[(world["checkout"], "major_outage")])  # fmt: skip
    doc = embed(client, "checkout,api")
    [item] = doc["incidents"]
    summary = client.get("/status/api/v2/summary.json").json()["incidents"][0]
    assert item["name"] == summary["name"]  # the status page's public naming, whatever it is
    assert item["id"] == summary["id"] and item["url"] == summary["shortlink"]
    assert item["status"] == "identified" and item["status_label"] == "Identified"
    assert item["impact"] == "major" and item["kind"] == "incident"
    assert item["components"] == ["checkout"]
    assert item["latest_update_id"] == summary["incident_updates"][0]["id"]
    assert [c["slug"] for c in doc["components"]] == ["api", "checkout"]
    assert {c["slug"]: c["status"] for c in doc["components"]} == {"api": "operational", "checkout": "major_outage"}
    assert doc["page"]["url"].endswith("/status/")


def test_incidents_on_other_components_are_left_out(client, world):
    incident = declare("Website down", severity=world["severity"], services=[world["website"]])
    published_update(incident, components=[(world["website"], "major_outage")])
    assert embed(client, "checkout")["incidents"] == []
    assert len(embed(client, "website")["incidents"]) == 1
    assert len(embed(client)["incidents"]) == 1  # no components chosen: every one


def test_a_resolved_incident_leaves_the_document(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    published_update(incident, components=[(world["checkout"], "partial_outage")],
                     published_at=timezone.now() - timedelta(minutes=5))  # fmt: skip
    assert len(embed(client, "checkout")["incidents"]) == 1
    published_update(incident, public_status="resolved", components=[(world["checkout"], "operational")])
    assert embed(client, "checkout")["incidents"] == []
    other = declare("Checkout slow", severity=world["severity"], services=[world["checkout"]])
    published_update(other, components=[(world["checkout"], "degraded_performance")])
    drive(other, "resolved")  # resolved internally: public until its resolving update is published
    assert len(embed(client, "checkout")["incidents"]) == 1
    published_update(other, public_status="resolved")
    assert embed(client, "checkout")["incidents"] == []


def test_maintenance_in_progress_is_in_the_document_and_scheduled_is_not(client, world):
    maintenance = maintenance_scheduled(services=[world["api"]], name="API upgrade", starts_in=timedelta(0))
    assert embed(client, "api")["maintenances"] == []
    comms_services.maintenance_transition(maintenance=maintenance, to=ScheduledMaintenance.Status.IN_PROGRESS)
    [item] = embed(client, "api")["maintenances"]
    assert item["name"] == "API upgrade" and item["status"] == "in_progress" and item["impact"] == "maintenance"
    assert embed(client, "checkout")["maintenances"] == []
    comms_services.maintenance_transition(maintenance=maintenance, to=ScheduledMaintenance.Status.VERIFYING)
    comms_services.maintenance_transition(maintenance=maintenance, to=ScheduledMaintenance.Status.COMPLETED)
    assert embed(client, "api")["maintenances"] == []


def test_nothing_private_reaches_the_document(client, world):
    secret = declare("Secret breach", severity=world["severity"], services=[world["checkout"]], restricted=True)
    published_update(secret, title="Secret breach", components=[(world["checkout"], "major_outage")])
    internal = declare("Internal trouble", severity=world["severity"], services=[world["checkout"]])
    published_update(internal, title="Internal trouble", audience="internal")
    draft = declare("Draft only", severity=world["severity"], services=[world["checkout"]])
    published_update(draft, title="Draft only", status="draft", components=[(world["checkout"], "major_outage")])
    body = client.get(EMBED).content.decode()
    for text in ("Secret breach", "Internal trouble", "Draft only", "Ledger", "INC-", "major_outage"):
        assert text not in body


@pytest.mark.parametrize(
    "value, code",
    [("nope", "unknown_components"), ("ledger", "unknown_components"), ("checkout,<script>", "invalid")],
)
def test_unknown_or_malformed_components_are_a_clear_400(client, world, value, code):
    response = client.get(EMBED, {"components": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert response["Access-Control-Allow-Origin"] == "*"
    if code == "unknown_components":
        # a private service is as unknown as a missing one: the answer says nothing of it
        assert error["fields"]["components"] == [value]


def test_too_many_components_are_refused(client, world):
    response = client.get(EMBED, {"components": ",".join(f"s{i}" for i in range(51))})
    assert response.status_code == 400 and "At most 50" in response.json()["error"]["message"]


def test_the_document_is_cors_open_cacheable_and_answers_304(client, world):
    response = client.get(EMBED, {"components": "checkout"}, HTTP_ORIGIN="https://app.example.com")
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "public" in response["Cache-Control"] and "max-age=" in response["Cache-Control"]
    assert response["ETag"] and not response.cookies and "Cookie" not in response.get("Vary", "")
    again = client.get(EMBED, {"components": "checkout"}, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_the_same_components_in_any_order_are_the_same_document(client, world):
    a = client.get(EMBED, {"components": "checkout,api"})
    b = client.get(EMBED, {"components": " api , checkout,checkout"})
    assert a.content == b.content and a["ETag"] == b["ETag"]


# ---- the script --------------------------------------------------------------------------------------


def test_the_script_is_small_cross_origin_and_cacheable(client):
    response = client.get("/status/embed.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert len(response.content) <= 8 * 1024
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "public" in response["Cache-Control"] and response["ETag"]
    assert not response.cookies
    assert client.get("/status/embed.js", HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_the_script_needs_nothing_a_strict_csp_forbids(client):
    source = client.get("/status/embed.js").content.decode()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)  # the header comment explains, it does not run
    for forbidden in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                      "cssText", 'setAttribute("style"', "<style", "document.cookie", "import(", "setTimeout(\""):  # fmt: skip
        assert forbidden not in code, forbidden
    assert 'credentials: "omit"' in code  # no cookies, whatever the host's origin
    assert 'setAttribute("role", "status")' in code

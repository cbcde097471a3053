"""Customer reports: entered in the admin or sent by tools, linked now or attached later, and the
per-incident impact (customers affected, reports over time, revenue at risk) worked out by hand."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from incidents import services
from incidents.models import CustomerReport, TimelineEvent
from incidents.selectors import incident_impact, incident_impact_text
from tests.api import api_client_for as client_for
from tests.incidents.factories import SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()


def at(hour, minute=0):
    return datetime(2026, 3, 2, hour, minute, tzinfo=UTC)


@pytest.fixture
def incident(db):
    return declare("Checkout errors", severity=SeverityFactory(level=2), detected_at=at(9))


@pytest.fixture
def support(db):
    return UserFactory(username="sally", groups=["Communications"])


# ---- services -----------------------------------------------------------------------------------


def test_report_on_an_incident_is_on_its_timeline(incident, support):
    report = services.customer_report_create(
        actor=support,
        incident=incident,
        customer_id="acme",
        channel="support_ticket",
        text="Cannot pay",
        sentiment="negative",
        revenue_at_risk=Decimal("1200.50"),
        currency="eur",
        received_at=at(9, 20),
    )
    assert (report.incident, report.currency, report.created_by) == (incident, "EUR", support)
    event = TimelineEvent.objects.get(incident=incident, kind=TimelineEvent.Kind.CUSTOMER_REPORT)
    assert event.actor == support and event.occurred_at == at(9, 20)
    assert event.body == "Customer report from acme via support ticket received (1200.50 EUR at risk)."
    assert event.data["report"] == report.pk and event.data["revenue_at_risk"] == "1200.50"


def test_same_source_reference_twice_is_one_report(incident, support):
    first = services.customer_report_create(
        actor=support, incident=incident, customer_id="acme", source_reference="T-1"
    )
    again = services.customer_report_create(
        actor=support, incident=incident, customer_id="acme", source_reference="T-1"
    )
    assert again.pk == first.pk
    assert CustomerReport.objects.count() == 1
    assert TimelineEvent.objects.filter(kind=TimelineEvent.Kind.CUSTOMER_REPORT).count() == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"customer_id": "  "}, "needs the customer"),
        ({"customer_id": "a", "revenue_at_risk": Decimal("-1")}, "cannot be negative"),
        ({"customer_id": "a", "currency": "EURO"}, "three-letter"),
        ({"customer_id": "a", "received_at": datetime(2999, 1, 1, tzinfo=UTC)}, "future"),
    ],
)
def test_invalid_reports_are_refused(support, kwargs, message):
    with pytest.raises(services.IncidentError, match=message):
        services.customer_report_create(actor=support, **kwargs)
    assert not CustomerReport.objects.exists()


def test_attach_links_an_unlinked_report_once(incident, support):
    report = services.customer_report_create(actor=support, customer_id="acme")
    assert report.incident is None and report.attached_at is None
    report = services.customer_report_attach(report=report, incident=incident, actor=support)
    assert report.incident == incident and report.attached_at is not None
    again = services.customer_report_attach(report=report, incident=incident, actor=support)  # no-op
    assert again.attached_at == report.attached_at
    events = TimelineEvent.objects.filter(incident=incident, kind=TimelineEvent.Kind.CUSTOMER_REPORT)
    assert [e.data["attached"] for e in events] == [True]
    other = declare("Other", severity=SeverityFactory(level=3))
    with pytest.raises(services.IncidentError, match="already attached to another incident"):
        services.customer_report_attach(report=report, incident=other, actor=support)


def test_incident_impact_by_hand(incident, support):
    create = services.customer_report_create
    create(
        actor=support,
        incident=incident,
        customer_id="acme",
        sentiment="negative",
        revenue_at_risk=Decimal("1000"),
        currency="USD",
        received_at=at(9, 5),
    )
    create(
        actor=support,
        incident=incident,
        customer_id="acme",
        sentiment="negative",
        revenue_at_risk=Decimal("500.25"),
        currency="USD",
        received_at=at(9, 55),
    )
    create(
        actor=support,
        incident=incident,
        customer_id="globex",
        sentiment="neutral",
        revenue_at_risk=Decimal("2000"),
        currency="EUR",
        received_at=at(10, 10),
    )
    create(actor=support, incident=incident, customer_id="initech", received_at=at(11, 59))
    create(actor=support, customer_id="umbrella", revenue_at_risk=Decimal("9999"))  # unlinked: not this incident's
    impact = incident_impact(incident)
    assert impact["customers_affected"] == 3  # acme twice
    assert impact["reports"] == 4
    assert (impact["first_report_at"], impact["last_report_at"]) == (at(9, 5), at(11, 59))
    assert impact["revenue_at_risk"] == [
        {"currency": "EUR", "amount": Decimal("2000.00")},
        {"currency": "USD", "amount": Decimal("1000.00")},  # acme counted once, at its largest figure
    ]
    assert impact["sentiment"] == {"negative": 2, "neutral": 1, "positive": 0, "unknown": 1}
    assert impact["reports_over_time"] == [
        {"hour": at(9), "count": 2},
        {"hour": at(10), "count": 1},
        {"hour": at(11), "count": 1},
    ]
    assert incident_impact_text(incident) == (
        "3 customers affected (4 reports); revenue at risk: 2,000.00 EUR, 1,000.00 USD."
    )


def test_impact_without_reports(incident):
    impact = incident_impact(incident)
    assert (impact["customers_affected"], impact["reports"], impact["revenue_at_risk"]) == (0, 0, [])
    assert impact["first_report_at"] is None
    assert incident_impact_text(incident) == ""


# ---- API ----------------------------------------------------------------------------------------


def test_api_post_to_an_incident_and_read_its_impact(incident, support):
    api = client_for(support)
    url = f"/api/v1/incidents/{incident.pk}/customer-reports/"
    body = {
        "customer_id": "acme",
        "channel": "chat",
        "text": "Checkout spins forever",
        "sentiment": "negative",
        "revenue_at_risk": "250.00",
        "currency": "usd",
        "received_at": "2026-03-02T09:30:00Z",
        "source_reference": "zendesk-981",
    }
    response = api.post(url, body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["incident"] == incident.reference and created["currency"] == "USD"
    assert created["created_by"] == "sally" and created["revenue_at_risk"] == "250.00"
    # The tool retries: the same report, not a second one.
    retry = api.post(url, body, format="json")
    assert retry.status_code == 200 and retry.json()["id"] == created["id"]
    api.post(url, {"customer_id": "globex"}, format="json")
    listing = api.get(url).json()
    assert listing["incident"] == incident.reference
    assert listing["impact"]["customers_affected"] == 2 and listing["impact"]["reports"] == 2
    assert listing["impact"]["revenue_at_risk"] == [{"currency": "USD", "amount": "250.00"}]
    assert {r["customer_id"] for r in listing["results"]} == {"acme", "globex"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "customer_id"),
        ({"customer_id": "a", "channel": "pigeon"}, "channel"),
        ({"customer_id": "a", "revenue_at_risk": "-5"}, "revenue_at_risk"),
        ({"customer_id": "a", "currency": "E1R"}, "currency"),
        ({"customer_id": "a", "sentiment": "angry"}, "sentiment"),
    ],
)
def test_api_refuses_bad_reports(incident, support, body, field):
    response = client_for(support).post(f"/api/v1/incidents/{incident.pk}/customer-reports/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_api_permissions(incident, viewer):
    api = client_for(viewer)  # Viewers read reports but do not add them
    url = f"/api/v1/incidents/{incident.pk}/customer-reports/"
    assert api.get(url).status_code == 200
    assert api.post(url, {"customer_id": "acme"}, format="json").status_code == 403
    assert api.post("/api/v1/customer-reports/", {"customer_id": "acme"}, format="json").status_code == 403


def test_api_unlinked_reports_and_attach(incident, support):
    api = client_for(support)
    response = api.post("/api/v1/customer-reports/", {"customer_id": "acme", "channel": "email"}, format="json")
    assert response.status_code == 201 and response.json()["incident"] is None
    report_id = response.json()["id"]
    linked = api.post(
        "/api/v1/customer-reports/", {"customer_id": "globex", "incident": incident.reference}, format="json"
    )
    assert linked.json()["incident"] == incident.reference
    unlinked = api.get("/api/v1/customer-reports/", {"linked": "false"}).json()["results"]
    assert [r["customer_id"] for r in unlinked] == ["acme"]
    attached = api.post(
        f"/api/v1/customer-reports/{report_id}/attach/", {"incident": incident.reference}, format="json"
    )
    assert attached.status_code == 200 and attached.json()["incident"] == incident.reference
    assert api.get("/api/v1/customer-reports/", {"linked": "false"}).json()["results"] == []
    other = declare("Other", severity=SeverityFactory(level=3))
    moved = api.post(f"/api/v1/customer-reports/{report_id}/attach/", {"incident": other.reference}, format="json")
    assert moved.status_code == 400 and "already attached" in moved.json()["error"]["message"]


def test_restricted_incident_reports_are_hidden(incident, support):
    secret = declare("Secret", severity=SeverityFactory(level=1), restricted=True)
    services.customer_report_create(actor=support, incident=secret, customer_id="hush-co")
    api = client_for(support)
    assert api.get(f"/api/v1/incidents/{secret.pk}/customer-reports/").status_code == 404
    assert (
        api.post(f"/api/v1/incidents/{secret.pk}/customer-reports/", {"customer_id": "x"}, format="json").status_code
        == 404
    )
    assert "hush-co" not in api.get("/api/v1/customer-reports/").content.decode()
    unlinked = services.customer_report_create(actor=support, customer_id="acme")
    refused = api.post(f"/api/v1/customer-reports/{unlinked.pk}/attach/", {"incident": secret.reference}, format="json")
    assert refused.status_code == 400 and "There is no incident" in refused.content.decode()


@pytest.mark.parametrize("path", ["/api/v1/customer-reports/", "/api/v1/incidents/{id}/customer-reports/"])
def test_list_queries_do_not_grow_with_the_page(incident, support, path):
    for n in range(6):
        services.customer_report_create(actor=support, incident=incident if n % 2 else None, customer_id=f"c{n}")
    api = client_for(support)
    url = path.replace("{id}", str(incident.pk))
    api.get(url)  # the first request of a key records its use
    counts = []
    for size in (1, 100):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(url, {"page_size": size}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# ---- admin --------------------------------------------------------------------------------------


def test_admin_add_report_goes_through_the_service(incident, client):
    boss = UserFactory(username="boss", is_superuser=True)
    client.force_login(boss)
    response = client.post(
        reverse("admin:incidents_customerreport_add"),
        {
            "incident": incident.pk,
            "customer_id": "acme",
            "channel": "phone",
            "sentiment": "negative",
            "text": "Down for us",
            "revenue_at_risk": "10.00",
            "currency": "gbp",
            "received_at_0": "2026-03-02",
            "received_at_1": "09:40:00",
            "source_reference": "",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    report = CustomerReport.objects.get()
    assert (report.currency, report.created_by, report.incident) == ("GBP", boss, incident)
    assert TimelineEvent.objects.filter(incident=incident, kind="customer_report").count() == 1


def test_admin_attach_action_with_its_form(incident, client, support):
    reports = [services.customer_report_create(actor=support, customer_id=c) for c in ("acme", "globex")]
    client.force_login(support)
    changelist = reverse("admin:incidents_customerreport_changelist")
    assert "acme" in client.get(changelist, {"linked": "no"}).content.decode()
    selected = {"action": "attach_to_incident", ACTION_CHECKBOX_NAME: [r.pk for r in reports]}
    page = client.post(changelist, selected)
    assert page.status_code == 200 and "Attach customer reports to an incident" in page.content.decode()
    wrong = client.post(changelist, {**selected, "apply": "1", "incident": "INC-999999"})
    assert "No incident has this reference." in wrong.content.decode()
    done = client.post(changelist, {**selected, "apply": "1", "incident": incident.reference}, follow=True)
    assert "2 report(s) attached to" in done.content.decode()
    assert set(CustomerReport.objects.values_list("incident", flat=True)) == {incident.pk}
    assert "acme" not in client.get(changelist, {"linked": "no"}).content.decode()


def test_admin_hides_reports_of_restricted_incidents(client, support):
    secret = declare("Secret", severity=SeverityFactory(level=1), restricted=True)
    report = services.customer_report_create(actor=support, incident=secret, customer_id="hush-co")
    client.force_login(support)
    assert "hush-co" not in client.get(reverse("admin:incidents_customerreport_changelist")).content.decode()
    page = client.get(reverse("admin:incidents_customerreport_change", args=[report.pk]), follow=True)
    assert "hush-co" not in page.content.decode()


def test_received_at_defaults_to_now(support):
    report = services.customer_report_create(actor=support, customer_id="acme")
    assert abs(report.received_at - datetime.now(UTC)) < timedelta(minutes=1)

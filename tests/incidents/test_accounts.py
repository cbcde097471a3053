"""Customer accounts (issue 16): kept in sync from a CRM by CSV or the API, named by customer reports,
and an incident's impact on them — each account counted once, by tier, with the contract value at risk."""

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from incidents import services
from incidents.accounts import AccountData, account_upsert, accounts_csv_plan
from incidents.models import Account, AccountContact, AccountTier
from incidents.selectors import incident_accounts_impact, incident_impact_text
from tests.api import api_client_for as client_for
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

URL = "/api/v1/accounts/"


@pytest.fixture(autouse=True)
def _fresh_throttle(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()


@pytest.fixture
def crm(db):
    return client_for(UserFactory(username="crm-sync", groups=["Communications"]))


@pytest.fixture
def checkout(db):
    return ServiceFactory(slug="checkout", name="Checkout")


@pytest.fixture
def search(db):
    return ServiceFactory(slug="search", name="Search")


def tier(slug):
    return AccountTier.objects.get(slug=slug)


def account(external_id, tier_slug, value, services=(), currency="USD", name=None):
    created, _ = account_upsert(
        data=AccountData(
            external_id=external_id,
            name=name or external_id.title(),
            tier=tier(tier_slug),
            annual_contract_value=Decimal(value),
            currency=currency,
            services=list(services),
        )
    )
    return created


ACME = {
    "name": "ACME Corp",
    "tier": "enterprise",
    "annual_contract_value": "120000.00",
    "currency": "usd",
    "services": ["checkout"],
    "contacts": [
        {"name": "Wile E.", "email": "Wile@Acme.example.com", "role": "CTO", "incident_emails": True},
        {"name": "Road Runner", "email": "rr@acme.example.com", "role": "", "incident_emails": False},
    ],
}


# ---- API: an idempotent upsert by the CRM's id ---------------------------------------------------


def test_the_tiers_are_seeded():
    assert list(AccountTier.objects.values_list("slug", flat=True)) == ["enterprise", "business", "self-serve"]


def test_put_creates_then_the_same_body_changes_nothing(crm, checkout):
    created = crm.put(URL + "acme-001/", ACME, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["external_id"] == "acme-001" and body["currency"] == "USD"
    assert body["annual_contract_value"] == "120000.00" and body["tier"] == "enterprise"
    assert body["services"] == ["checkout"]
    assert [c["email"] for c in body["contacts"]] == ["rr@acme.example.com", "wile@acme.example.com"]
    again = crm.put(URL + "acme-001/", ACME, format="json")
    assert again.status_code == 200
    assert Account.objects.count() == 1 and AccountContact.objects.count() == 2
    assert crm.get(URL + "acme-001/").json()["name"] == "ACME Corp"


def test_put_replaces_contacts_and_services(crm, checkout, search):
    crm.put(URL + "acme-001/", ACME, format="json")
    changed = {**ACME, "services": ["search"], "contacts": [{"email": "ops@acme.example.com", "incident_emails": True}]}
    response = crm.put(URL + "acme-001/", changed, format="json")
    assert response.status_code == 200
    assert response.json()["services"] == ["search"]
    assert [c["email"] for c in response.json()["contacts"]] == ["ops@acme.example.com"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"tier": "platinum"}, "tier"),
        ({"currency": "dollars"}, "currency"),
        ({"annual_contract_value": "-1"}, "annual_contract_value"),
        ({"annual_contract_value": "1e400"}, "annual_contract_value"),
        ({"services": ["nope"]}, "services"),
        ({"contacts": [{"email": "not an address"}]}, "contacts"),
        ({"name": ""}, "name"),
    ],
)
def test_put_refuses_bad_fields_with_a_clear_400(crm, checkout, change, field):
    response = crm.put(URL + "acme-001/", {**ACME, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not Account.objects.exists()


def test_the_same_contact_twice_is_refused(crm, checkout):
    contacts = [{"email": "a@acme.example.com"}, {"email": "A@acme.example.com"}]
    response = crm.put(URL + "acme-001/", {**ACME, "contacts": contacts}, format="json")
    assert response.status_code == 400 and "listed twice" in response.json()["error"]["message"]
    assert not Account.objects.exists()


def test_reading_needs_the_view_permission_and_writing_the_change_one(checkout):
    viewer = client_for(UserFactory(username="victor", groups=["Viewers"]))
    account("acme-001", "enterprise", "1000", [checkout])
    assert viewer.get(URL).status_code == 200
    assert viewer.put(URL + "acme-001/", ACME, format="json").status_code == 403
    assert APIClient().get(URL).status_code in (401, 403)


def test_list_filters_by_tier_and_service_with_constant_queries(crm, checkout, search):
    for n in range(3):
        account(f"big-{n}", "enterprise", "1000", [checkout])
        account(f"small-{n}", "self-serve", "10", [search])
    names = [a["external_id"] for a in crm.get(URL, {"tier": "enterprise"}).json()["results"]]
    assert sorted(names) == ["big-0", "big-1", "big-2"]
    assert len(crm.get(URL, {"service": "search"}).json()["results"]) == 3
    assert crm.get(URL, {"tier": "platinum"}).status_code == 400

    def queries(page_size):
        with CaptureQueriesContext(connection) as captured:
            assert crm.get(URL, {"page_size": page_size}).status_code == 200
        return len(captured)

    assert queries(1) == queries(6)


# ---- customer reports name an account --------------------------------------------------------------


def test_a_report_names_its_account_by_external_id_or_by_customer_id(crm, checkout):
    incident = declare("Checkout errors", severity=SeverityFactory(level=2))
    acme = account("acme-001", "enterprise", "1000")
    url = f"/api/v1/incidents/{incident.pk}/customer-reports/"
    named = crm.post(url, {"customer_id": "ticket-user-42", "account": "acme-001"}, format="json")
    assert named.status_code == 201 and named.json()["account"] == "acme-001"
    matched = crm.post(url, {"customer_id": "acme-001"}, format="json")
    assert matched.json()["account"] == "acme-001"
    assert crm.post(url, {"customer_id": "x", "account": "no-such"}, format="json").status_code == 400
    assert acme.customer_reports.count() == 2


def test_reports_received_before_the_account_existed_count_for_it_once_it_is_synced(crm):
    support = UserFactory(username="sally", groups=["Communications"])
    incident = declare("Checkout errors", severity=SeverityFactory(level=2))
    early = services.customer_report_create(actor=support, incident=incident, customer_id="acme-001")
    assert early.account is None
    acme = account("acme-001", "enterprise", "1000")
    early.refresh_from_db()
    assert early.account == acme
    assert incident_accounts_impact(incident)["accounts"] == 1


# ---- impact: accounts using an affected service plus accounts that reported ----------------------


def test_each_affected_account_counts_once_by_tier_with_the_value_at_risk(checkout, search):
    support = UserFactory(username="sally", groups=["Communications"])
    incident = declare("Checkout errors", severity=SeverityFactory(level=2), services=[checkout])
    acme = account("acme", "enterprise", "100000", [checkout, search])  # uses it and reports: once
    account("beta", "business", "20000", [checkout])
    account("gamma", "business", "5000", [search], currency="EUR")  # only reported
    account("delta", "self-serve", "99", [search])  # not affected
    for _ in range(3):
        services.customer_report_create(actor=support, incident=incident, customer_id="acme")
    services.customer_report_create(actor=support, incident=incident, customer_id="gamma")
    impact = incident_accounts_impact(incident)
    assert impact["accounts"] == 3
    assert [(t["tier"], t["accounts"]) for t in impact["by_tier"]] == [("enterprise", 1), ("business", 2)]
    assert impact["annual_contract_value_at_risk"] == [
        {"currency": "USD", "amount": Decimal("120000.00")},
        {"currency": "EUR", "amount": Decimal("5000.00")},
    ]
    assert [(a["external_id"], a["reported"]) for a in impact["top_accounts"]] == [
        ("acme", True),
        ("beta", False),
        ("gamma", True),
    ]
    assert acme.customer_reports.count() == 3
    text = incident_impact_text(incident)  # what the incident page and the review's impact section say
    assert "3 accounts affected (1 Enterprise, 2 Business)" in text
    assert "annual contract value at risk: 120,000.00 USD, 5,000.00 EUR" in text


def test_impact_endpoint_and_its_visibility(crm, checkout):
    incident = declare("Checkout errors", severity=SeverityFactory(level=2), services=[checkout])
    account("acme", "enterprise", "100000", [checkout])
    response = crm.get(f"/api/v1/incidents/{incident.pk}/impact/")
    assert response.status_code == 200
    body = response.json()
    assert body["incident"] == incident.reference and body["accounts"]["accounts"] == 1
    assert body["accounts"]["by_tier"][0]["annual_contract_value"] == [{"currency": "USD", "amount": "100000.00"}]
    assert body["reports"]["reports"] == 0
    etag = response["ETag"]  # a tool polling the impact gets 304 while nothing changed
    assert crm.get(f"/api/v1/incidents/{incident.pk}/impact/", HTTP_IF_NONE_MATCH=etag).status_code == 304
    secret = declare("Secret", severity=SeverityFactory(level=2), services=[checkout], restricted=True)
    assert crm.get(f"/api/v1/incidents/{secret.pk}/impact/").status_code == 404  # as if it did not exist
    assert crm.get("/api/v1/incidents/999999/impact/").status_code == 404


# ---- CSV import in the admin: preview, then all or nothing -----------------------------------------

CSV = (
    "external_id,name,tier,annual_contract_value,currency,services,contact_name,contact_email,contact_role,"
    "contact_incident_emails\n"
    'acme,ACME Corp,enterprise,"120,000",USD,checkout;search,Wile,wile@acme.example.com,CTO,yes\n'
    'acme,ACME Corp,enterprise,"120,000",USD,checkout,Road,rr@acme.example.com,,no\n'
    "beta,Beta Ltd,business,2000,eur,,,,,\n"
)


@pytest.fixture
def comms_admin(client, db):
    user = UserFactory(username="carla", groups=["Communications"], is_staff=True)
    client.force_login(user)
    return client


def upload(client, text, name="accounts.csv"):
    return client.post(
        reverse("admin:incidents_account_import"), {"file": SimpleUploadedFile(name, text.encode(), "text/csv")}
    )


def test_csv_preview_writes_nothing_then_apply_imports(comms_admin, checkout, search):
    preview = upload(comms_admin, CSV)
    assert preview.status_code == 200
    assert b"2 accounts:</strong>" in preview.content and b"2 new, 0 changed, 0 unchanged" in preview.content
    assert not Account.objects.exists()
    applied = comms_admin.post(reverse("admin:incidents_account_import"), {"apply": "1", "csv_text": CSV})
    assert applied.status_code == 302
    acme = Account.objects.get(external_id="acme")
    assert acme.annual_contract_value == Decimal("120000.00")
    assert sorted(s.slug for s in acme.services.all()) == ["checkout", "search"]
    assert sorted((c.email, c.incident_emails) for c in acme.contacts.all()) == [
        ("rr@acme.example.com", False),
        ("wile@acme.example.com", True),
    ]
    assert Account.objects.get(external_id="beta").currency == "EUR"
    again = upload(comms_admin, CSV)
    assert b"0 new, 0 changed, 2 unchanged" in again.content


def test_a_csv_with_an_error_in_any_row_imports_nothing(comms_admin, checkout, search):
    bad = CSV + "gamma,Gamma,platinum,1,USD,,,,,\ndelta,Delta,business,lots,USD,,,,,\n"
    preview = upload(comms_admin, bad)
    assert b"Unknown tier" in preview.content and b"must be a number" in preview.content
    plan = accounts_csv_plan(bad)
    assert [line for line, _ in plan.errors] == [5, 6]
    applied = comms_admin.post(reverse("admin:incidents_account_import"), {"apply": "1", "csv_text": bad})
    assert applied.status_code == 200 and b"nothing was imported" in applied.content
    assert not Account.objects.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,tier\nx,enterprise\n", "lacks external_id"),
        ("external_id,name,tier,colour\nx,X,enterprise,red\n", "Unknown columns: colour"),
        ("external_id,name,tier\n", "no accounts"),
        ("external_id,name,tier\nx,X,enterprise,extra\n", "more cells than the header"),
        ("external_id,name,tier\nx,X,enterprise\nx,Y,enterprise\n", "differently from its first row"),
    ],
)
def test_csv_problems_are_named(text, message):
    plan = accounts_csv_plan(text)
    assert not plan.ok and any(message in error for _line, error in plan.errors)


def test_a_file_that_is_not_utf8_text_is_a_form_error(comms_admin):
    response = comms_admin.post(
        reverse("admin:incidents_account_import"),
        {"file": SimpleUploadedFile("a.csv", b"\xff\xfe\x00binary", "text/csv")},
    )
    assert response.status_code == 200 and b"not UTF-8" in response.content
    assert not Account.objects.exists()


def test_the_account_page_lists_the_incidents_that_affected_it_as_far_as_the_reader_may_see(comms_admin, checkout):
    acme = account("acme", "enterprise", "100000", [checkout])
    seen = declare("Checkout slow", severity=SeverityFactory(level=3), services=[checkout])
    hidden = declare("Card data exposure", severity=SeverityFactory(level=1), services=[checkout], restricted=True)
    page = comms_admin.get(reverse("admin:incidents_account_change", args=[acme.pk]))
    assert page.status_code == 200
    assert seen.reference.encode() in page.content and hidden.reference.encode() not in page.content
    listing = comms_admin.get(reverse("admin:incidents_account_changelist"), {"incident": seen.pk})
    assert b"acme" in listing.content.lower()
    outsider_view = comms_admin.get(reverse("admin:incidents_account_changelist"), {"incident": hidden.pk})
    assert b"Acme" not in outsider_view.content  # a restricted incident's accounts tell an outsider nothing

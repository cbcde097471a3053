"""The dashboard's customer-cost page (issue 16): incidents by accounts affected, contract value at
risk by tier, reports by sentiment, the accounts that suffered most, a CSV behind each — counting only
the incidents the reader may see."""

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from incidents import services
from incidents.accounts import AccountData, account_upsert
from incidents.models import AccountTier
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

URL = "/admin/incidents/dashboard/customers/"


def account(external_id, tier, value, services_used, currency="USD", name=None):
    created, _ = account_upsert(
        data=AccountData(
            external_id=external_id,
            name=name or external_id.title(),
            tier=AccountTier.objects.get(slug=tier),
            annual_contract_value=Decimal(value),
            currency=currency,
            services=list(services_used),
        )
    )
    return created


@pytest.fixture
def world(db):
    checkout, search, billing = (ServiceFactory(slug=s, name=s.title()) for s in ("checkout", "search", "billing"))
    account("acme", "enterprise", "100000", [checkout, search])
    account("beta", "business", "2000", [checkout], currency="EUR")
    account("gamma", "self-serve", "50", [billing])
    account("=cmd()", "self-serve", "10", [], name="=HYPERLINK(1)")  # only reports; a hostile name
    support = UserFactory(username="sally", groups=["Communications"])
    sev = SeverityFactory(level=2)
    first = declare("Checkout down", severity=sev, services=[checkout])  # acme, beta
    second = declare("Search slow", severity=sev, services=[search])  # acme
    declare("Nothing customer-facing", severity=sev, services=[])  # nobody
    secret = declare("Billing leak", severity=sev, services=[billing], restricted=True)  # gamma, hidden
    services.customer_report_create(actor=support, incident=first, customer_id="=cmd()", sentiment="negative")
    services.customer_report_create(actor=support, incident=first, customer_id="acme", sentiment="negative")
    services.customer_report_create(actor=support, incident=second, customer_id="walk-in", sentiment="neutral")
    services.customer_report_create(actor=support, incident=secret, customer_id="gamma", sentiment="positive")
    return {"first": first, "secret": secret}


@pytest.fixture
def viewer_client(client):
    client.force_login(UserFactory(username="val", groups=["Viewers"], is_staff=True))
    return client


def test_the_figures_count_each_account_once_and_only_visible_incidents(world, viewer_client):
    page = viewer_client.get(URL, {"period": "30"})
    assert page.status_code == 200
    cost = page.context["cost"]
    assert cost["incidents"] == 3 and cost["accounts_affected"] == 3  # acme, beta, =cmd(); gamma is behind a restriction
    assert {b["label"]: b["incidents"] for b in cost["by_accounts_affected"]} == {
        "none": 1, "1–5": 2, "6–20": 0, "21–100": 0, "over 100": 0
    }
    assert [(t["tier"], t["accounts"], t["value"]) for t in cost["tiers"]] == [
        ("Enterprise", 1, [{"currency": "USD", "amount": Decimal("100000.00")}]),
        ("Business", 1, [{"currency": "EUR", "amount": Decimal("2000.00")}]),
        ("Self-serve", 1, [{"currency": "USD", "amount": Decimal("10.00")}]),
    ]
    assert {r["sentiment"]: r["reports"] for r in cost["sentiment"]} == {
        "Negative": 2, "Neutral": 1, "Positive": 0, "Unknown": 0
    }
    assert [(r["account"].external_id, r["incidents"]) for r in cost["top_accounts"]][0] == ("acme", 2)
    assert b"Billing leak" not in page.content


def test_the_service_filter_applies(world, viewer_client):
    cost = viewer_client.get(URL, {"period": "30", "service": "search"}).context["cost"]
    assert cost["incidents"] == 1 and cost["accounts_affected"] == 1


def test_each_figure_has_a_csv_safe_for_spreadsheets(world, viewer_client):
    def rows(figure):
        response = viewer_client.get(URL + "export.csv", {"period": "30", "figure": figure})
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

    incidents = rows("incidents")
    assert incidents[0][-1] == "accounts_affected" and len(incidents) == 4
    assert {row[1]: row[-1] for row in incidents[1:]}["Checkout down"] == "3"
    accounts = rows("accounts")
    assert accounts[1][:4] == ["acme", "Acme", "enterprise", "2"]
    assert ["'=cmd()", "'=HYPERLINK(1)"] == [row[:2] for row in accounts if "cmd" in row[0]][0]
    assert rows("sentiment")[1] == ["Negative", "2"]
    assert rows("tiers")[1] == ["Enterprise", "1", "100000.00", "USD"]
    bad = viewer_client.get(URL + "export.csv", {"figure": "passwords"})
    assert bad.status_code == 400


def test_the_dashboard_links_the_page_with_its_filters(world, viewer_client):
    page = viewer_client.get(reverse("admin:incidents_dashboard"), {"period": "90"})
    assert b'href="/admin/incidents/dashboard/customers/?period=90"' in page.content


def test_the_page_needs_the_view_permission(world, client):
    client.force_login(UserFactory(username="nobody", groups=[], is_staff=True))
    assert client.get(URL).status_code == 403

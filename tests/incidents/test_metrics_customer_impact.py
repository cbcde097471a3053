"""Revenue at risk counts each customer once per incident (issue 12)."""

from decimal import Decimal

import pytest

from incidents import services
from incidents.selectors import incident_impact, incident_impact_text
from tests.incidents.factories import SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db


def test_a_customer_writing_three_times_counts_once():
    support = UserFactory(username="sam", groups=["Communications"])
    incident = declare("Checkout fails", severity=SeverityFactory(level=1))
    for _ in range(3):
        services.customer_report_create(
            actor=support, incident=incident, customer_id="acme", revenue_at_risk=Decimal("1000"), currency="USD"
        )
    services.customer_report_create(
        actor=support, incident=incident, customer_id="globex", revenue_at_risk=Decimal("250"), currency="USD"
    )
    impact = incident_impact(incident)
    assert impact["revenue_at_risk"] == [{"currency": "USD", "amount": Decimal("1250.00")}]
    assert impact["reports"] == 4 and impact["customers_affected"] == 2
    assert incident_impact_text(incident) == "2 customers affected (4 reports); revenue at risk: 1,250.00 USD."


def test_a_customer_counts_once_per_currency_at_their_largest_figure():
    support = UserFactory(username="sam", groups=["Communications"])
    incident = declare("Checkout fails", severity=SeverityFactory(level=1))
    for amount, currency in (("400", "EUR"), ("900", "EUR"), ("100", "USD")):
        services.customer_report_create(
            actor=support, incident=incident, customer_id="acme", revenue_at_risk=Decimal(amount), currency=currency
        )
    services.customer_report_create(actor=support, incident=incident, customer_id="acme")  # no figure
    assert incident_impact(incident)["revenue_at_risk"] == [
        {"currency": "EUR", "amount": Decimal("900.00")},
        {"currency": "USD", "amount": Decimal("100.00")},
    ]

"""The incident page shows what the other apps hold about it: review, action items, similar incidents, updates."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from postmortems.services import review_create
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare
from tests.postmortems.factories import action_item

pytestmark = pytest.mark.django_db


def page(client, incident):
    """The incident page and its follow-up panels (which the page fetches once it is shown)."""
    response = client.get(reverse("admin:incidents_incident_change", args=[incident.pk]))
    assert response.status_code == 200
    panels = client.get(reverse("admin:incidents_incident_panels", args=[incident.pk]))
    assert panels.status_code == 200
    return response.content.decode() + panels.content.decode()


def test_a_responder_is_offered_the_review_an_action_item_and_an_update(responder, client):
    incident = declare("Checkout errors", severity=SeverityFactory(level=1), actor=responder)
    client.force_login(responder)
    html = page(client, incident)
    assert "Post-incident review and action items" in html and "Communications" in html
    assert f'{reverse("admin:postmortems_review_add")}?incident={incident.pk}' in html
    assert "required by its severity" in html
    assert f'{reverse("admin:postmortems_actionitem_add")}?incident={incident.pk}' in html
    assert f'{reverse("admin:comms_update_add")}?incident={incident.pk}' in html
    assert "Next update due in" in html


def test_the_page_links_the_review_and_counts_action_items(admin_client, admin_user):
    incident = declare("Checkout errors", severity=SeverityFactory(level=2), actor=admin_user)
    review = review_create(incident=incident, actor=admin_user)
    action_item(incident=incident, title="Alert on 5xx", due_date=timezone.localdate() - timedelta(days=2))
    action_item(incident=incident, title="Runbook", due_date=timezone.localdate() + timedelta(days=9))
    html = page(admin_client, incident)
    assert reverse("admin:postmortems_review_change", args=[review.pk]) in html
    assert "2 in all, 2 open, 1 overdue" in html


def test_similar_past_incidents_and_recurrences_are_linked(admin_client, admin_user):
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    earlier = declare("Checkout timeouts", actor=admin_user, services=[checkout])
    incident = declare("Checkout errors", actor=admin_user, services=[checkout], recurrence_of=earlier)
    html = page(admin_client, earlier)
    assert "Recurred as" in html and reverse("admin:incidents_incident_change", args=[incident.pk]) in html
    html = page(admin_client, incident)
    assert "Similar past incidents" in html and reverse("admin:incidents_incident_change", args=[earlier.pk]) in html


def test_a_viewer_sees_the_rows_but_is_offered_nothing_to_create(viewer, client):
    incident = declare("Checkout errors", severity=SeverityFactory(level=1))
    client.force_login(viewer)
    html = page(client, incident)
    assert "Start the review" not in html
    assert "Draft an update" not in html
    assert "Add one" not in html


def test_a_similar_incident_the_reader_may_not_see_is_not_named(client, responder):
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    secret = declare("Checkout data leak", services=[checkout], restricted=True, actor=UserFactory(username="sec"))
    incident = declare("Checkout errors", services=[checkout], actor=responder)
    client.force_login(responder)
    html = page(client, incident)
    assert secret.reference not in html and "data leak" not in html


def _reports(incident, actor):
    from decimal import Decimal

    from incidents.services import customer_report_create

    for n, customer in enumerate(("acme", "acme", "globex")):
        customer_report_create(
            actor=actor, customer_id=customer, incident=incident, text="Checkout fails", revenue_at_risk=Decimal(100 * (n + 1))
        )


def test_customer_impact_shows_on_the_incident_page_feeds_reviews_and_internal_updates(admin_client, admin_user):
    from comms.models import Update
    from comms.rendering import placeholder_values

    incident = declare("Checkout errors", severity=SeverityFactory(level=2), actor=admin_user)
    _reports(incident, admin_user)
    # acme wrote twice (100, then 200): counted once, at its largest figure (issue 12).
    expected = "2 customers affected (3 reports); revenue at risk: 500.00 USD."

    html = page(admin_client, incident)
    assert "Customer impact" in html and expected in html
    assert f'{reverse("admin:incidents_customerreport_changelist")}?incident__id__exact={incident.pk}' in html

    review = review_create(incident=incident, actor=admin_user)
    assert expected in review.customer_impact

    internal = placeholder_values(incident=incident, audience=Update.Audience.INTERNAL)
    external = placeholder_values(incident=incident, audience=Update.Audience.EXTERNAL, public_status="investigating")
    assert internal["customer_impact"] == expected and internal["customers_affected"] == "2"
    assert external["customer_impact"] == ""  # revenue at risk is never told to customers

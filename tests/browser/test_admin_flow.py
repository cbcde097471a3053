"""A responder's night, in a real browser: log in, declare, acknowledge, mitigate, resolve, read the timeline."""

import pytest
from django.contrib.auth import get_user_model

from incidents.models import Incident
from tests.incidents.factories import SeverityFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_declare_acknowledge_mitigate_resolve(live_server, page):
    SeverityFactory(level=2)
    get_user_model().objects.create_superuser("oncall", "oncall@example.com", "correct-horse-battery")

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "oncall")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_selector("text=Run incidents")

    page.goto(f"{live_server.url}/admin/incidents/incident/add/")
    page.fill("#id_title", "Checkout returns 502")
    page.fill("#id_summary", "Payments provider timing out for EU customers.")
    page.select_option("#id_severity", label="SEV2 High")
    page.click("input[name=_save]")
    page.wait_for_load_state()
    assert "declared" in page.content(), page.inner_text("body")[:2000]

    incident = Incident.objects.get(title="Checkout returns 502")
    assert incident.reference in page.content()

    # Declaring is a person working on it: acknowledged already (the header says so).
    assert "acknowledged after" in page.inner_text("#incident-header")
    page.click("button[data-to=mitigated]")
    page.wait_for_selector("text=is now mitigated")
    page.click("button[data-to=resolved]")
    page.wait_for_selector("text=is now resolved")

    timeline = page.inner_text("#timeline-list")
    for line in ("Declared", "detected → mitigated", "mitigated → resolved"):
        assert line in timeline, line
    incident.refresh_from_db()
    assert incident.status == Incident.Status.RESOLVED
    assert incident.acknowledged_at <= incident.mitigated_at <= incident.resolved_at

"""The open-incidents list and the admin home in a real browser (issue 15, "Lists"): the list fits
1440 px without sideways scrolling (page or table) with long titles, flags what needs someone, offers
Declare; the home leads with what is open; neither scrolls sideways on a phone. Screenshots go to
LIST_SHOTS when it is set."""

import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from incidents import services
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

WIDTHS = {"1440": (1440, 900), "390": (390, 844)}


def _sideways(page):
    """[page overflow, table overflow] in px (0 when it fits)."""
    return page.evaluate(
        """() => {
            const d = document.documentElement, r = document.querySelector('#changelist .results');
            return [d.scrollWidth - d.clientWidth, r ? r.scrollWidth - r.clientWidth : 0];
        }"""
    )


def _shot(page, name):
    if os.environ.get("LIST_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["LIST_SHOTS"], name), full_page=True)


@pytest.mark.parametrize("width", ["1440", "390"])
def test_open_incidents_and_home_fit_and_lead_with_what_is_open(live_server, browser, width):
    lead = get_user_model().objects.create_user("lead", "lead@example.com", "correct-horse-battery", is_staff=True)
    lead.groups.add(Group.objects.get(name="Responders"))
    sev1, sev3 = SeverityFactory(level=1, ack_target_minutes=5), SeverityFactory(level=3)
    services_ = [ServiceFactory(name=f"Payments gateway region {n}") for n in range(3)]
    late = declare(
        "Checkout requests failing for customers paying with saved cards in the EU and UK regions",
        severity=sev1,
        services=services_,
        detected_at=timezone.now() - timedelta(minutes=40),
    )
    for n in range(30):
        incident = declare(
            f"Search results stale for a share of queries, batch {n}", severity=sev3, services=services_[:1]
        )
        services.role_assign(incident=incident, role="commander", user=lead, actor=lead)

    context = browser.new_context(viewport=dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "lead")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")

    # The home page leads with what is open.
    page.wait_for_selector("#open-now")
    assert page.locator("#open-now .open-total").inner_text() == "31 open"
    assert page.locator("#my-incidents tr").count() == 11  # the first ten of 30, and a "more" row
    assert _sideways(page)[0] <= 0, "the home page scrolls sideways"
    _shot(page, f"admin-home-{width}.png")

    page.click("#open-now .open-total")
    page.wait_for_selector("#result_list")
    assert page.locator("h1").inner_text() == "Open incidents"
    assert page.locator("a.declare-link").is_visible()
    first_row = page.locator("#result_list tbody tr").first
    assert late.reference in first_row.inner_text()  # worst severity first
    flags = first_row.locator("td.field-needs_someone")
    assert "unacknowledged" in flags.inner_text()
    box = flags.bounding_box()  # on screen without scrolling sideways, at 390 px too
    assert box["x"] + box["width"] <= WIDTHS[width][0], "the needs-someone flags are cut off"
    page_overflow, table_overflow = _sideways(page)
    assert page_overflow <= 0, "the open list scrolls sideways"
    if width == "1440":
        assert table_overflow <= 0, "the open-incidents table scrolls sideways at 1440 px"
    _shot(page, f"open-incidents-{width}.png")
    context.close()

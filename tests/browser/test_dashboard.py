"""The reliability dashboard in a real browser: from the admin index, charts drawn as SVG with data,
a filter applied, and the incidents behind the figures downloaded as CSV."""

import csv
import io
import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from incidents import services
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def _incident(title, severity, service, days_ago, resolve_after=None):
    detected = timezone.now() - timedelta(days=days_ago)
    incident = declare(title, severity=severity, services=[service], detected_at=detected, started_at=detected)
    actor = get_user_model().objects.get(username="lead")
    incident = services.incident_acknowledge(incident=incident, actor=actor, at=detected + timedelta(minutes=12))
    if resolve_after:
        incident = services.incident_transition(
            incident=incident, to="resolved", actor=actor, at=detected + resolve_after
        )
    return incident


def test_dashboard_charts_filter_and_csv(live_server, page):
    get_user_model().objects.create_superuser("lead", "lead@example.com", "correct-horse-battery")
    sev1, sev3 = SeverityFactory(level=1), SeverityFactory(level=3)
    checkout, search = ServiceFactory(slug="checkout", name="Checkout"), ServiceFactory(slug="search", name="Search")
    first = _incident("Checkout down", sev1, checkout, 20, resolve_after=timedelta(hours=2))
    second = _incident("Search slow", sev3, search, 9, resolve_after=timedelta(hours=5))
    third = _incident("Search stale", sev3, search, 2)

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "lead")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.click("#reliability-dashboard-link a:has-text('Reliability dashboard')")
    page.wait_for_selector("h1:has-text('Reliability dashboard')")
    assert page.url.endswith("/admin/incidents/dashboard/")

    # The charts are inline SVG with data: bars, points, slices, labels and legends.
    per_week = page.locator("svg#chart-per-week")
    assert per_week.get_attribute("role") == "img"
    assert per_week.locator("rect.bar").count() == 3
    assert per_week.locator("text.x-label").count() >= 2
    assert per_week.locator("g.legend-item").count() == 4  # the four seeded severities
    assert page.locator("svg#chart-mtta circle.point").count() == 3
    assert page.locator("svg#chart-mttr circle.point").count() == 2
    assert page.locator("svg#chart-mix circle.slice").count() == 2
    top = page.locator("svg#chart-top-services")
    assert top.locator("rect.bar").count() == 2 and "Search" in top.inner_html()
    box = per_week.bounding_box()
    assert box["width"] > 300 and box["height"] > 100  # really drawn, not collapsed
    assert page.locator("#metric-mtta .headline").inner_text().startswith("12 min")
    assert page.locator("#hot-spots tbody tr").count() == 2

    # A filter: severity 3 only.
    page.select_option("#id_severity", label=str(sev3))
    page.click("#dashboard-filters input[type=submit]")
    page.wait_for_url(lambda url: "severity=3" in url)
    assert page.locator("svg#chart-per-week rect.bar").count() == 2
    assert page.locator("svg#chart-mix circle.slice").count() == 1
    assert "2 incidents" in page.inner_text(".dash-period")

    # The incidents behind the figures, as a CSV download (with the filter applied).
    with page.expect_download() as info:
        page.click("#export-all")
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert [r["reference"] for r in rows] == [second.reference, third.reference]
    assert first.reference not in {r["reference"] for r in rows}
    assert rows[0]["minutes_to_resolve"] == "300.0"
    os.remove(download.path())


@pytest.mark.parametrize("width, height", [(1440, 900), (390, 844)])
def test_dashboard_reads_well_on_desktop_and_phone(live_server, page, width, height):
    """Summary first, charts inside the screen, no sideways scrolling; screenshots in DASHBOARD_SHOTS if set."""
    from postmortems import services as review_services

    lead = get_user_model().objects.create_superuser("lead", "lead@example.com", "correct-horse-battery")
    sev1, sev3 = SeverityFactory(level=1), SeverityFactory(level=3)
    checkout, search = ServiceFactory(slug="checkout", name="Checkout"), ServiceFactory(slug="search", name="Search")
    for n in range(12):
        incident = _incident(
            f"Incident {n}",
            (sev1, sev3)[n % 2],
            (checkout, search)[n % 3 == 0],
            3 + 6 * n,
            resolve_after=timedelta(hours=1 + n) if n % 4 else None,
        )
        if n % 3 == 0:
            review = review_services.review_create(incident=incident, actor=lead)
            review_services.review_factor_add(
                review=review, actor=lead, category=("capacity", "code_change")[n % 2], description="x"
            )
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/incidents/dashboard/")
    page.fill("#id_username", "lead")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#summary")
    assert page.locator("#summary li").first.inner_text().startswith("12 incidents detected in these 90 days")
    assert page.locator("svg#chart-factors rect.bar").count() >= 2
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px at {width}px"
    for chart in ("chart-per-week", "chart-factors", "chart-mix"):
        box = page.locator(f"svg#{chart}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, chart
    shots = os.environ.get("DASHBOARD_SHOTS")
    if shots:
        page.screenshot(path=f"{shots}/dashboard-{width}-first-screen.png")
        page.screenshot(path=f"{shots}/dashboard-{width}.png", full_page=True)

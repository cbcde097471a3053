"""The dashboard people can trust (issue 12): open work whatever the period, the service filter on every
ranking, plain-language figures that explain what is missing, change on the period before, and
contributing-factor categories over time. Uses the fixed data set of test_dashboard.py."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from incidents import services
from tests.incidents.factories import ServiceFactory
from tests.incidents.test_dashboard import SVG, URL, at, data, make_incident, marks, page, svg  # noqa: F401

pytestmark = pytest.mark.django_db


def test_open_action_items_count_whatever_the_period(client, data):  # noqa: F811
    from tests.postmortems.factories import ActionItemFactory

    old = make_incident("Old outage", data.sev2, [data.search], detected=timezone.now() - timedelta(days=200))
    item = ActionItemFactory(incident=old, due_date=timezone.localdate() - timedelta(days=150))
    type(item).objects.filter(pk=item.pk).update(created_at=timezone.now() - timedelta(days=190))
    response = page(client, data.viewer, rank="overdue_action_items")  # January 2026: the old incident is outside
    assert [(r["slug"], r["overdue_action_items"]) for r in response.context["hot_spots"]][0] == ("search", 1)
    bars = marks(svg(response, "chart-action-items"), "bar")
    assert [float(b.get("data-value")) for b in bars] == [0.0, 0.0, 0.0, 1.0]  # over 90 days old
    # The service filter still applies: checkout has no open item.
    response = page(client, data.viewer, service="checkout", rank="overdue_action_items")
    assert all(r["overdue_action_items"] == 0 for r in response.context["hot_spots"])


def test_the_service_filter_applies_to_every_ranking(client, data):  # noqa: F811
    response = page(client, data.viewer, service="checkout")
    # A and B are checkout's; B is also on search, which the filter did not ask for.
    assert [r["slug"] for r in response.context["hot_spots"]] == ["checkout"]
    assert [r["slug"] for r in response.context["data"]["top_services"]] == ["checkout"]
    top = marks(svg(response, "chart-top-services"), "bar")
    assert [b.find(f"{SVG}title").text.split(":")[0] for b in top] == ["Checkout"]


def test_plain_language_summary_explains_what_is_missing(client, data):  # noqa: F811
    body = page(client, data.viewer).content.decode()
    summary = re.search(r'id="summary".*?</section>', body, re.S).group(0)
    # A, B, C detected in the 14 days; nothing in the 14 days before.
    assert "3 incidents detected in these 14 days, 3 more than in the 14 days before (0)." in summary
    assert "Half were acknowledged within 10 min of detection" in summary
    # B and C have no start of impact; C was never resolved.
    assert "2 incidents have no start-of-impact time recorded, so their time to detect cannot be measured." in summary
    assert "1 incident were never resolved, so they have no time to resolve." in summary
    # The summary and the charts come before the detailed cards.
    assert body.index('id="summary"') < body.index('id="per-week"') < body.index('id="metric-mttd"')
    card = re.search(r'id="metric-mttd".*?</article>', body, re.S).group(0)
    assert "Missing: incidents that have no start-of-impact time recorded" in card


def test_change_on_the_period_before(client, data):  # noqa: F811
    # Two incidents in the fortnight before (22 Dec to 4 Jan) against three now: +50%.
    for day in (1, 2):
        make_incident(f"Before {day}", data.sev3, [data.search], detected=at(day, 9))
    body = page(client, data.viewer).content.decode()
    assert "1 more than in the 14 days before (2)" in body
    card = re.search(r'id="metric-incidents".*?</article>', body, re.S).group(0)
    assert "+50% on the period before (2)" in card


def test_contributing_factor_categories_over_time(client, data):  # noqa: F811
    from postmortems import services as review_services

    for incident, categories in ((data.a, ["capacity", "capacity", "monitoring_gap"]), (data.c, ["code_change"])):
        review = review_services.review_create(incident=incident, actor=data.owner)
        for category in categories:
            review_services.review_factor_add(review=review, actor=data.owner, category=category, description="x")
    response = page(client, data.viewer)
    bars = marks(svg(response, "chart-factors"), "bar")
    assert sorted(b.find(f"{SVG}title").text for b in bars) == [
        "Jan 2026 · Capacity: 2",
        "Jan 2026 · Code change: 1",
        "Jan 2026 · Monitoring gap: 1",
    ]
    # The service filter applies: search has only C's factor.
    bars = marks(svg(page(client, data.viewer, service="search"), "chart-factors"), "bar")
    assert [b.find(f"{SVG}title").text for b in bars] == ["Jan 2026 · Code change: 1"]


def test_an_incident_declared_by_a_person_counts_in_mtta_person(client, data):  # noqa: F811
    person = data.owner
    incident = make_incident("Typed in by hand", data.sev3, [ServiceFactory(slug="x")], detected=at(15, 9), actor=person)
    services.incident_acknowledge(incident=incident, actor=person, at=at(15, 9, 20))
    body = page(client, data.viewer).content.decode()
    card = re.search(r'id="metric-mtta_person".*?</article>', body, re.S).group(0)
    assert "<dt>measured</dt><dd>1</dd>" in card, card
    card = re.search(r'id="metric-mtta_alert".*?</article>', body, re.S).group(0)
    assert "<dt>measured</dt><dd>3</dd>" in card, card  # A, B, C: opened with no person

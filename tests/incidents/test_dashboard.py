"""The reliability dashboard (issue 6): the admin page, its charts, hot spots and the CSV export.

A small fixed data set in two weeks of January 2026 (Mondays 5 and 12 January), every expected
figure worked out by hand in the comments.
"""

import csv
import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import services
from incidents.admin_dashboard import csv_safe
from incidents.models import CustomerReport
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

URL = "/admin/incidents/dashboard/"
EXPORT = "/admin/incidents/dashboard/export.csv"
PERIOD = {"period": "custom", "since": "2026-01-05", "until": "2026-01-18"}
SVG = "{http://www.w3.org/2000/svg}"


def at(day, hour, minute=0):
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


class Data:
    pass


def make_incident(
    title, severity, service_list, detected, started=None, ack=None, steps=(), restricted=False, actor=None
):
    incident = declare(
        title,
        severity=severity,
        services=service_list,
        detected_at=detected,
        started_at=started,
        restricted=restricted,
        actor=actor,
    )
    if ack:
        incident = services.incident_acknowledge(incident=incident, actor=actor or UserFactory(), at=ack)
    for to, when in steps:
        incident = services.incident_transition(incident=incident, to=to, actor=None, at=when)
    return incident


@pytest.fixture
def data(db):
    d = Data()
    d.sev1, d.sev2, d.sev3 = SeverityFactory(level=1), SeverityFactory(level=2), SeverityFactory(level=3)
    d.checkout = ServiceFactory(slug="checkout", name="Checkout")
    d.search = ServiceFactory(slug="search", name="Search")
    d.owner = UserFactory(username="olga", groups=["Responders"])
    # A: SEV1 checkout, week of 5 Jan. Impact 10:00 → mitigated 11:10 = 70 min. MTTA 10 min, MTTR 120 min.
    d.a = make_incident(
        "Checkout 502s",
        d.sev1,
        [d.checkout],
        detected=at(6, 10, 10),
        started=at(6, 10, 0),
        ack=at(6, 10, 20),
        steps=[("responding", at(6, 10, 30)), ("mitigated", at(6, 11, 10)), ("resolved", at(6, 12, 10))],
    )
    # B: SEV2 checkout + search, week of 5 Jan, no known start; straight to resolved at 13:00 (so
    # mitigated then too). Impact 09:00 → 13:00 = 240 min. MTTA 30 min, MTTR 240 min.
    d.b = make_incident(
        "Search and checkout slow",
        d.sev2,
        [d.checkout, d.search],
        detected=at(7, 9, 0),
        ack=at(7, 9, 30),
        steps=[("resolved", at(7, 13, 0))],
    )
    # C: SEV3 search, week of 12 Jan, mitigated at 09:00, not resolved. Impact 60 min. MTTA 5 min.
    d.c = make_incident(
        "Search index stale",
        d.sev3,
        [d.search],
        detected=at(13, 8, 0),
        ack=at(13, 8, 5),
        steps=[("mitigated", at(13, 9, 0))],
    )
    # Left out everywhere: dismissed (D), detected after the period (F).
    d.d = make_incident(
        "False alarm", d.sev2, [d.checkout], detected=at(14, 8, 0), steps=[("dismissed", at(14, 8, 10))]
    )
    d.f = make_incident("Later", d.sev1, [d.checkout], detected=at(20, 8, 0))
    # E: restricted, SEV1 checkout, week of 5 Jan: only its participants (and superusers) count it.
    d.insider = UserFactory(username="ines", groups=["Responders"])
    d.e = make_incident("Payroll exposure Wombat42", d.sev1, [d.checkout], detected=at(8, 8, 0), restricted=True)
    services.role_assign(incident=d.e, role="commander", user=d.insider, actor=d.insider)
    # Two customer reports on C (search).
    for customer in ("acme", "globex"):
        CustomerReport.objects.create(incident=d.c, customer_id=customer, channel="email", received_at=at(13, 9, 30))
    d.viewer = UserFactory(username="vera", groups=["Viewers"])
    return d


def page(client, user, **params):
    client.force_login(user)
    response = client.get(URL, {**PERIOD, **params})
    assert response.status_code == 200, response.content[:500]
    return response


def svg(response, chart_id):
    body = response.content.decode()
    match = re.search(rf'<svg [^>]*id="{chart_id}".*?</svg>', body, re.S)
    assert match, chart_id
    return ET.fromstring(match.group(0))  # well-formed XML, or this fails


def marks(tree, cls):
    return [el for el in tree.iter() if el.get("class") == cls]


def export(client, user, **params):
    client.force_login(user)
    response = client.get(EXPORT, {**PERIOD, **params})
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


# ---- the page -----------------------------------------------------------------------------------


def test_the_admin_index_links_to_the_dashboard(client, data):
    client.force_login(data.viewer)
    body = client.get("/admin/").content.decode()
    assert f'href="{URL}"' in body and "Reliability dashboard" in body
    assert reverse("admin:incidents_dashboard") == URL


def test_figures_match_the_data_set(client, data):
    response = page(client, data.viewer)
    body = response.content.decode()
    assert "3 incidents" in body  # A, B, C (not D dismissed, E restricted, F later)

    # Incidents per week by severity: week of 5 Jan SEV1 1 (A) + SEV2 1 (B); week of 12 Jan SEV3 1 (C).
    bars = marks(svg(response, "chart-per-week"), "bar")
    titles = sorted(bar.find(f"{SVG}title").text for bar in bars)
    assert titles == ["12 Jan · SEV3: 1", "5 Jan · SEV1: 1", "5 Jan · SEV2: 1"]
    assert {bar.get("fill") for bar in bars} == {data.sev1.colour, data.sev2.colour, data.sev3.colour}

    # MTTA weekly mean: (10 + 30) / 2 = 20 min, then 5 min. MTTR: (120 + 240) / 2 min = 3 h; no point in week 2.
    mtta = marks(svg(response, "chart-mtta"), "point")
    assert [float(p.get("data-value")) for p in mtta] == [20.0, 5.0]
    mttr = marks(svg(response, "chart-mttr"), "point")
    assert [float(p.get("data-value")) for p in mttr] == [3.0]

    # Severity mix: SEV1 1, SEV2 1, SEV3 1 (SEV4 0 has no slice).
    slices = marks(svg(response, "chart-mix"), "slice")
    assert [int(s.get("data-value")) for s in slices] == [1, 1, 1]

    # Top services by impact minutes: checkout 70 + 240 = 310, search 240 + 60 = 300.
    top = marks(svg(response, "chart-top-services"), "bar")
    assert [(b.find(f"{SVG}title").text.split(":")[0], float(b.get("data-value"))) for b in top] == [
        ("Checkout", 310.0),
        ("Search", 300.0),
    ]

    # Metric cards (from incidents.metrics): MTTA over the period 10, 30, 5 min → mean 15, median 10.
    card = re.search(r'id="metric-mtta".*?</article>', body, re.S).group(0)
    assert "15 min" in card and "10 min" in card
    assert re.search(r"<dt>measured</dt><dd>3</dd>", card) and re.search(r"<dt>missing</dt><dd>0</dd>", card)
    assert "From detection to the first acknowledgement" in card  # the definition, on hover and in details
    # MTTD needs started_at: only A has it (10 min); B and C are missing, not zero.
    card = re.search(r'id="metric-mttd".*?</article>', body, re.S).group(0)
    assert "10 min" in card and re.search(r"<dt>missing</dt><dd>2</dd>", card)


def test_hot_spots_rank_services(client, data):
    rows = page(client, data.viewer).context["hot_spots"]
    # Ranked by incidents (2 and 2), then impact minutes: checkout 310 before search 300.
    assert [(r["slug"], r["incidents"], r["impact_minutes"], r["customer_reports"]) for r in rows] == [
        ("checkout", 2, 310.0, 0),
        ("search", 2, 300.0, 2),
    ]
    rows = page(client, data.viewer, rank="customer_reports").context["hot_spots"]
    assert [r["slug"] for r in rows] == ["search", "checkout"]
    body = page(client, data.viewer, rank="customer_reports").content.decode()
    assert "Reliability hot spots" in body and "figure=service%3Asearch" in body


def test_action_items_by_age_and_overdue_per_service(client, data):
    from tests.postmortems.factories import ActionItemFactory

    today = timezone.localdate()
    ActionItemFactory(incident=data.a, due_date=today - timedelta(days=3))  # overdue: checkout
    ActionItemFactory(incident=data.b, due_date=today + timedelta(days=3), status="in_progress")  # not overdue
    ActionItemFactory(incident=data.c)  # no due date: never overdue
    ActionItemFactory(incident=data.e, due_date=today - timedelta(days=3))  # restricted: not for the viewer
    response = page(client, data.viewer, rank="overdue_action_items")
    rows = response.context["hot_spots"]
    assert [(r["slug"], r["overdue_action_items"]) for r in rows] == [("checkout", 1), ("search", 0)]
    # All three visible open items were created just now: the youngest bucket.
    bars = marks(svg(response, "chart-action-items"), "bar")
    assert [float(b.get("data-value")) for b in bars] == [3.0, 0.0, 0.0, 0.0]
    assert bars[0].find(f"{SVG}title").text == "under 7 days: 3"


def test_filters_apply(client, data):
    response = page(client, data.viewer, service="search")
    assert response.context["data"]["total"] == 2  # B and C
    # The filter applies to the rankings too: B is also on checkout, but checkout is not what was asked for.
    assert [r["slug"] for r in response.context["data"]["top_services"]] == ["search"]
    response = page(client, data.viewer, severity="2")
    assert response.context["data"]["total"] == 1  # B
    assert response.context["form"]["severity"].value() == "2"
    # A period preset: 30 days back from now leaves the January incidents out; one from last week counts.
    make_incident("Recent", data.sev3, [data.search], detected=timezone.now() - timedelta(days=7))
    client.force_login(data.viewer)
    response = client.get(URL, {"period": "30"})
    assert response.context["data"]["total"] == 1
    assert response.context["scope"].period == "30"


def test_invalid_filters_are_reported_and_fall_back(client, data):
    client.force_login(data.viewer)
    response = client.get(URL, {"period": "custom", "since": "2026-02-01", "until": "2026-01-01"})
    assert response.status_code == 200
    assert "The start date must not be after the end date." in response.content.decode()
    assert response.context["scope"].period == "90"
    response = client.get(URL, {"severity": "9", "service": "nope"})
    assert response.status_code == 200 and response.context["form"].errors


def test_empty_data_renders(client, db):
    user = UserFactory(username="viv", groups=["Viewers"])
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert "No incidents in this period" in body
    assert "No service had an incident in this period." in body
    assert "0 incidents" in body


def test_a_superuser_counts_the_restricted_incident(client, data):
    boss = UserFactory(username="boss", is_superuser=True)
    response = page(client, boss)
    assert response.context["data"]["total"] == 4  # A, B, C and the restricted E
    assert len(export(client, boss)) == 4
    insider = page(client, data.insider)
    assert insider.context["data"]["total"] == 4


# ---- permissions --------------------------------------------------------------------------------


def test_viewer_may_open_it_and_someone_without_view_incident_may_not(client, data):
    page(client, data.viewer)
    nobody = UserFactory(username="nina")  # staff, no group, no permission
    client.force_login(nobody)
    assert client.get(URL).status_code == 403
    assert client.get(EXPORT).status_code == 403
    assert "Reliability dashboard" not in client.get("/admin/").content.decode()
    client.logout()
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# ---- CSV export ---------------------------------------------------------------------------------


def test_export_lists_the_incidents_behind_a_figure(client, data):
    rows = export(client, data.viewer)
    assert [r["reference"] for r in rows] == [data.a.reference, data.b.reference, data.c.reference]
    a = rows[0]
    assert a["title"] == "Checkout 502s" and a["severity"] == "SEV1" and a["services"] == "checkout"
    assert a["status"] == "resolved"
    assert a["detected_at"].startswith("2026-01-06T10:10:00")
    assert (a["minutes_to_detect"], a["minutes_to_acknowledge"], a["minutes_to_mitigate"], a["minutes_to_resolve"]) == (
        "10.0",
        "10.0",
        "60.0",
        "120.0",
    )
    assert a["impact_minutes"] == "70.0"
    assert a["url"].endswith(reverse("admin:incidents_incident_change", args=[data.a.pk]))
    c = rows[2]
    assert c["minutes_to_resolve"] == "" and c["resolved_at"] == ""  # missing, not zero
    assert rows[1]["services"] == "checkout search"

    def refs(figure):
        return [r["reference"] for r in export(client, data.viewer, figure=figure)]

    assert refs("week:2026-01-05:2") == [data.b.reference]
    assert refs("week:2026-01-12") == [data.c.reference]
    assert refs("mttr:2026-01-12") == []
    assert refs("mtta:2026-01-05") == [data.a.reference, data.b.reference]
    assert refs("severity:3") == [data.c.reference]
    assert refs("service:search") == [data.b.reference, data.c.reference]
    assert refs("metric:mttd") == [data.a.reference, data.b.reference, data.c.reference]
    # The page links every figure to exactly these exports.
    body = page(client, data.viewer).content.decode()
    assert "figure=week%3A2026-01-05%3A2" in body and "figure=service%3Asearch" in body


def test_export_leaves_out_restricted_incidents(client, data):
    for figure in ("all", "service:checkout", "severity:1", "week:2026-01-05", "week:2026-01-05:1"):
        client.force_login(data.viewer)
        response = client.get(EXPORT, {**PERIOD, "figure": figure})
        text = b"".join(response.streaming_content).decode()
        assert "Wombat42" not in text and data.e.reference not in text, figure
    body = page(client, data.viewer).content.decode()
    assert "Wombat42" not in body and data.e.reference not in body


def test_export_is_safe_from_csv_injection(client, data):
    for title in ('=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)"):
        make_incident(title, data.sev3, [data.search], detected=at(15, 9, 0))
    titles = {r["title"] for r in export(client, data.viewer, figure="severity:3")}
    assert titles == {"Search index stale", '\'=HYPERLINK("http://evil")', "'+1+1", "'-2+3", "'@SUM(A1)"}
    assert csv_safe("\tcmd") == "'\tcmd" and csv_safe("plain") == "plain" and csv_safe(None) == ""


def test_export_refuses_a_bad_figure_or_filter(client, data):
    client.force_login(data.viewer)
    assert client.get(EXPORT, {"figure": "week:tuesday"}).status_code == 400
    assert client.get(EXPORT, {"figure": "nonsense"}).status_code == 400
    assert client.get(EXPORT, {"period": "custom", "since": "2026-01-01"}).status_code == 400


# ---- cost ---------------------------------------------------------------------------------------


def _queries(client, url, params):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        assert response.status_code == 200
    return len(ctx.captured_queries)


def test_query_count_does_not_grow_with_data(client, data):
    client.force_login(data.viewer)
    params = {**PERIOD, "rank": "impact_minutes"}
    page_before = _queries(client, URL, params)
    export_before = _queries(client, EXPORT, params)
    more = [ServiceFactory(slug=f"svc-{i}", name=f"Service {i}") for i in range(6)]
    for i in range(30):
        incident = make_incident(
            f"More {i}",
            (data.sev1, data.sev2, data.sev3)[i % 3],
            more[i % 6 : i % 6 + 2],
            detected=at(5 + i % 12, 7, i),
            ack=at(5 + i % 12, 8, i),
            steps=[("resolved", at(5 + i % 12, 9, i))] if i % 2 else [],
        )
        CustomerReport.objects.create(incident=incident, customer_id=f"c{i}", received_at=at(5 + i % 12, 9, 30))
    assert _queries(client, URL, params) == page_before
    assert _queries(client, EXPORT, params) == export_before
    assert page_before <= 50, page_before  # the page also computes the period before, for the change


def test_charts_escape_text_and_refuse_odd_colours():
    from incidents import charts

    markup = charts.stacked_bars(
        chart_id="c",
        title="<script>alert(1)</script>",
        desc="d",
        labels=["5 Jan"],
        series=[('SEV1 "><img src=x>', 'red" onload="x', [2])],
        links=[['/x?a=1&b="2"']],
    )
    tree = ET.fromstring(str(markup))  # still well-formed
    assert "<script>" not in markup and "<img" not in markup
    assert tree.find(f"{SVG}title").text == "<script>alert(1)</script>"
    assert marks(tree, "bar")[0].get("fill") == charts.FALLBACK
    assert charts.nice_ticks(17) == [0, 5, 10, 15, 20]


# Queries of one page view (a Viewer, the roll-up built, nothing memoized yet): the session and the user (2),
# their permissions (2), the roll-up's state (1), the severities and the services (2), the versions of the days
# of both periods (1), the roll-up rows of the period (totals and severities: 1; per service: 1), the person's
# own incidents (1), customer reports (per service, then in all: 2), the action items (3) and contributing
# factors (1), the period before (roll-up rows, reports, action items: 3). A view of a period already read
# finds the roll-up rows memoized under the same versions (3 fewer).
PAGE_QUERY_BUDGET = 20
MEMOIZED_ROLLUP_QUERIES = 3
# Someone who may see a restricted incident (not counted in the roll-up rows they read): it is read from the
# incidents, with its services, for the period and the period before.
LIVE_READ_QUERIES = 3


def test_page_queries_stay_within_budget_whatever_the_period_length(client, data, monkeypatch):
    from incidents import rollups

    assert rollups.rollup_built(), "the figures come from the daily roll-up"
    # Medians from the roll-up's histograms whatever their rank error: with three incidents they would
    # otherwise be computed exactly from the incidents (one query on PostgreSQL, one per figure on SQLite).
    monkeypatch.setattr(rollups, "MAX_RANK_ERROR", 1.0)
    client.force_login(data.viewer)
    _queries(client, URL, PERIOD)  # the first view of the process also fills Django's own caches

    def first_view(params):  # nothing memoized from an earlier read of the roll-up
        rollups._reads.clear()
        return _queries(client, URL, params)

    two_weeks = first_view(PERIOD)
    again = _queries(client, URL, PERIOD)
    a_year = first_view({"period": "custom", "since": "2025-02-01", "until": "2026-01-31"})
    ninety_days = first_view({"period": "custom", "since": "2025-10-20", "until": "2026-01-17"})
    # A query per day, week or incident would make a year cost more than two weeks.
    assert two_weeks == ninety_days == a_year, (two_weeks, ninety_days, a_year)
    assert two_weeks <= PAGE_QUERY_BUDGET, two_weeks
    assert again == two_weeks - MEMOIZED_ROLLUP_QUERIES, again
    client.force_login(data.insider)  # sees the restricted incident E: read from the incidents
    assert first_view(PERIOD) <= PAGE_QUERY_BUDGET + LIVE_READ_QUERIES


def test_a_change_shows_on_the_next_view_although_the_period_was_memoized(client, data):
    from incidents import rollups

    assert rollups.rollup_built()
    first = page(client, data.viewer)
    assert page(client, data.viewer).context["data"]["total"] == first.context["data"]["total"]  # memoized
    make_incident("Search down", data.sev1, [data.search], detected=at(13, 9), ack=at(13, 9, 30), actor=data.owner)
    second = page(client, data.viewer)
    assert second.context["data"]["total"] == first.context["data"]["total"] + 1
    mix = dict((severity.level, n) for severity, n in second.context["data"]["mix"])
    assert mix[1] == dict((severity.level, n) for severity, n in first.context["data"]["mix"])[1] + 1
    rollups._reads.clear()
    fresh = page(client, data.viewer)  # nothing memoized
    for name in ("cards_html", "charts", "hot_spots", "summary"):
        assert fresh.context[name] == second.context[name], name


@pytest.mark.parametrize(
    "query",
    [
        None,  # the default form
        {"period": "30", "service": "checkout", "severity": "2"},
        {"period": "custom", "since": "2026-01-05", "until": "2026-01-18"},
        {"since": "2026-01-18", "until": "2026-01-05"},  # invalid: the form's own error
        {"since": "5 January", "service": "<nope>"},  # invalid fields: their errors after each field
    ],
)
def test_the_filter_fields_are_drawn_as_djangos_templates_draw_them(data, query):
    """filter_fields_html and the date inputs write in Python what {{ field.label_tag }} {{ field }} wrote
    through the form templates: the same bytes, errors included."""
    from django import forms
    from django.template import engines

    from incidents import admin_dashboard
    from incidents.models import Service, Severity

    class TemplateDrawn(admin_dashboard.DashboardFilterForm):
        since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
        until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    drawn = admin_dashboard.DashboardFilterForm(query, initial={"period": "90"})
    reference = TemplateDrawn(query, initial={"period": "90"})
    for form in (drawn, reference):
        admin_dashboard._with_choices(form, list(Severity.objects.order_by("level")), list(Service.objects.all()))
    template = engines["django"].from_string(
        "{% for field in form %}\n    <div>{{ field.label_tag }} {{ field }}"
        "{% if field.errors %}{{ field.errors }}{% endif %}</div>\n  {% endfor %}"
    )
    expected = template.render({"form": reference})
    assert admin_dashboard.filter_fields_html(drawn) == expected
    assert 'type="date"' in expected and "<label for=" in expected
    field_errors = query and any(name != "__all__" for name in reference.errors)
    assert ("errorlist" in expected) == bool(field_errors)  # a form-wide error is drawn above the fields

"""Metrics against values worked out by hand on a small fixed data set (see the table in `dataset`).

Every expected number below is written out, not recomputed: seconds, counts, shares.
"""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission

from incidents import metrics, services
from incidents.models import CustomerReport, Incident
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db


def at(day, hour, minute=0):
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


SINCE = at(2, 0)  # Monday 2 March 2026
UNTIL = at(16, 0)  # two weeks later, exclusive


def make(title, severity, *, detected, started=None, ack=None, mitigated=None, resolved=None, status=None, **kwargs):
    incident = declare(title, severity=severity, started_at=started, detected_at=detected, **kwargs)
    status = status or ("resolved" if resolved else "mitigated" if mitigated else "responding")
    Incident.objects.filter(pk=incident.pk).update(
        status=status, acknowledged_at=ack, mitigated_at=mitigated, resolved_at=resolved
    )
    incident.refresh_from_db()
    return incident


@pytest.fixture
def boss(db):
    return UserFactory(username="boss", is_superuser=True)


@pytest.fixture
def dataset(db):
    """
    in scope (5); B and D declared by a person, the others by alert ingestion (no person):
      A sev1 api      started 03-02 10:00 detected 10:10 ack 10:15 mitigated 10:40 resolved 11:10
      B sev2 web      (no start)  detected 03-04 12:00 ack 12:02 mitigated 12:30 resolved 14:00
      C sev2 api+web  started 03-09 08:00 detected 08:30, not acknowledged, responding; recurrence of A
      D sev3 api      (no start)  detected 03-10 09:00 ack 09:10, resolved 09:30, REOPENED 10:00,
                      mitigated 10:30, resolved 11:00 (through the services)
      E sev1 -        started 03-01 23:00 (before the period) detected 03-02 00:30 ack 00:40
                      mitigated 01:00 resolved 01:30
    out of scope:
      F detected 03-01 23:50 (before since; resolved inside), G dismissed, H duplicate of A,
      I detected 03-16 00:00 (= until, exclusive)
    """
    sev1, sev2, sev3 = SeverityFactory(level=1), SeverityFactory(level=2), SeverityFactory(level=3)
    SeverityFactory(level=4)
    api, web = ServiceFactory(slug="api", name="API"), ServiceFactory(slug="web", name="Web")
    a = make(
        "A",
        sev1,
        services=[api],
        started=at(2, 10),
        detected=at(2, 10, 10),
        ack=at(2, 10, 15),
        mitigated=at(2, 10, 40),
        resolved=at(2, 11, 10),
    )
    person = UserFactory(username="dana", groups=["Responders"])
    b = make(
        "B",
        sev2,
        services=[web],
        detected=at(4, 12),
        ack=at(4, 12, 2),
        mitigated=at(4, 12, 30),
        resolved=at(4, 14),
        actor=person,
    )
    c = make("C", sev2, services=[api, web], started=at(9, 8), detected=at(9, 8, 30), recurrence_of=a)
    d = declare("D", severity=sev3, services=[api], detected_at=at(10, 9), actor=person)
    # Acknowledged at 09:10 (set directly: whether declaring by a person acknowledges at once is not the point here).
    Incident.objects.filter(pk=d.pk).update(acknowledged_at=at(10, 9, 10))
    services.incident_transition(incident=d, to="resolved", actor=person, at=at(10, 9, 30))
    services.incident_transition(incident=d, to="responding", actor=person, at=at(10, 10))
    services.incident_transition(incident=d, to="mitigated", actor=person, at=at(10, 10, 30))
    services.incident_transition(incident=d, to="resolved", actor=person, at=at(10, 11))
    e = make(
        "E",
        sev1,
        started=datetime(2026, 3, 1, 23, tzinfo=UTC),
        detected=at(2, 0, 30),
        ack=at(2, 0, 40),
        mitigated=at(2, 1),
        resolved=at(2, 1, 30),
    )
    f = make(
        "F",
        sev1,
        services=[api],
        detected=datetime(2026, 3, 1, 23, 50, tzinfo=UTC),
        ack=at(2, 0, 5),
        mitigated=at(2, 1),
        resolved=at(2, 2),
    )
    g = declare("G", severity=sev1, services=[api], detected_at=at(3, 9))
    services.incident_transition(incident=g, to="dismissed", actor=person, at=at(3, 9, 5))
    h = declare("H", severity=sev1, services=[api], detected_at=at(2, 10, 12))
    services.incident_transition(incident=h, to="dismissed", actor=person, at=at(2, 10, 20), duplicate_of=a)
    i = make("I", sev1, services=[api], detected=UNTIL, ack=UNTIL + timedelta(minutes=1))
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "g": g, "h": h, "i": i, "api": api, "web": web}


def durations(result, key):
    return {k: result[key][k] for k in ("count", "missing", "mean", "median", "p90")}


def test_durations_by_hand(dataset, boss):
    result = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL)
    assert result["incidents"]["count"] == 5
    # MTTD: A 600, C 1800, E 5400 (started before the period, detected inside); B and D have no start.
    assert durations(result, "mttd") == {"count": 3, "missing": 2, "mean": 2600.0, "median": 1800.0, "p90": 4680.0}
    # MTTA: B 120, A 300, D 600, E 600; C never acknowledged.
    assert durations(result, "mtta") == {"count": 4, "missing": 1, "mean": 405.0, "median": 450.0, "p90": 600.0}
    # Mitigate: A 1800, B 1800, E 1800, D 5400 (its final mitigation, after reopening); C open.
    assert durations(result, "time_to_mitigate") == {
        "count": 4,
        "missing": 1,
        "mean": 2700.0,
        "median": 1800.0,
        "p90": 4320.0,
    }
    # MTTR, to the FIRST resolution: A 3600, E 3600, B 7200, D 1800 (resolved 09:30, then reopened).
    assert durations(result, "mttr") == {"count": 4, "missing": 1, "mean": 4050.0, "median": 3600.0, "p90": 6120.0}
    # To the final resolution: D 7200 (resolved again at 11:00).
    assert durations(result, "time_to_final_resolution") == {
        "count": 4,
        "missing": 1,
        "mean": 5400.0,
        "median": 5400.0,
        "p90": 7200.0,
    }
    assert {k: result["reopen_rate"][k] for k in ("count", "total", "rate")} == {"count": 1, "total": 5, "rate": 0.2}
    # MTTA by how the incident was detected: alert A 300, E 600 (C unacknowledged); person B 120, D 600.
    assert durations(result, "mtta_alert") == {"count": 2, "missing": 1, "mean": 450.0, "median": 450.0, "p90": 570.0}
    assert durations(result, "mtta_person") == {"count": 2, "missing": 0, "mean": 360.0, "median": 360.0, "p90": 552.0}
    # From start of impact to first resolution: A 4200, E 9000; B and D have no start, C is not resolved.
    assert durations(result, "mttr_from_start") == {
        "count": 2,
        "missing": 3,
        "mean": 6600.0,
        "median": 6600.0,
        "p90": 8520.0,
    }
    assert result["mttr"]["unit"] == "seconds"
    assert "first resolution" in result["mttr"]["definition"]


def test_frequency_severity_and_recurrence_by_hand(dataset, boss):
    result = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL)
    week = result["frequency_week"]
    assert week["series"] == [
        {"start": date(2026, 3, 2), "count": 3, "coverage": 1.0},
        {"start": date(2026, 3, 9), "count": 2, "coverage": 1.0},
    ]
    assert (week["total"], week["mean"]) == (5, 2.5)
    month = result["frequency_month"]
    # The two weeks are 14 of March's 31 days: 5 incidents in 14/31 of a month is 11.071 a month.
    assert month["series"] == [{"start": date(2026, 3, 1), "count": 5, "coverage": round(14 / 31, 4)}]
    assert month["mean"] == round(5 / (14 / 31), 3)
    items = {row["level"]: (row["count"], row["share"]) for row in result["severity_distribution"]["items"]}
    assert items == {1: (2, 0.4), 2: (2, 0.4), 3: (1, 0.2), 4: (0, 0.0)}
    assert result["severity_distribution"]["total"] == 5
    assert {k: result["recurrence_rate"][k] for k in ("count", "total", "rate")} == {
        "count": 1,
        "total": 5,
        "rate": 0.2,
    }


def test_frequency_is_per_full_calendar_bucket(boss):
    """10 incidents in a 30-day window are about 10 a month, not 5.0 because the window straddles two months."""
    sev = SeverityFactory(level=2)
    since, until = datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 4, 19, tzinfo=UTC)
    for n in range(10):
        make(f"x{n}", sev, detected=since + timedelta(days=3 * n, hours=5))
    month = metrics.metrics_compute(user=boss, since=since, until=until)["frequency_month"]
    # 12 of March's 31 days and 18 of April's 30 are inside: 0.9871 of a month.
    assert [(row["start"], row["count"], row["coverage"]) for row in month["series"]] == [
        (date(2026, 3, 1), 4, round(12 / 31, 4)),
        (date(2026, 4, 1), 6, 0.6),
    ]
    assert month["mean"] == round(10 / (12 / 31 + 18 / 30), 3) == 10.131
    week = metrics.metrics_compute(user=boss, since=since, until=until)["frequency_week"]
    assert week["mean"] == round(10 / (30 / 7), 3)  # 2.333 a week


def test_buckets_are_utc_whatever_the_site_time_zone(boss, settings):
    settings.TIME_ZONE = "America/New_York"
    make("late sunday in new york", SeverityFactory(level=2), detected=datetime(2026, 3, 2, 2, tzinfo=UTC))
    since, until = datetime(2026, 2, 23, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    series = metrics.metrics_compute(user=boss, since=since, until=until)["frequency_week"]["series"]
    assert [(row["start"], row["count"]) for row in series] == [(date(2026, 2, 23), 0), (date(2026, 3, 2), 1)]


def test_period_edges(dataset, boss):
    in_scope = set(metrics.incidents_for_metrics(user=boss, since=SINCE, until=UNTIL).values_list("title", flat=True))
    # E started before the period but was detected inside; F was detected before it; I at `until` is outside.
    assert in_scope == {"A", "B", "C", "D", "E"}
    # Without a period: F and I count too, still without the dismissed G and the duplicate H.
    everything = set(metrics.incidents_for_metrics(user=boss).values_list("title", flat=True))
    assert everything == {"A", "B", "C", "D", "E", "F", "I"}


def test_empty_weeks_count_as_zero_and_no_incidents(dataset, boss):
    result = metrics.metrics_compute(
        user=boss, since=datetime(2020, 1, 6, tzinfo=UTC), until=datetime(2020, 1, 20, tzinfo=UTC)
    )
    assert result["incidents"]["count"] == 0
    for key in (d.key for d in metrics.DURATIONS):
        assert durations(result, key) == {"count": 0, "missing": 0, "mean": None, "median": None, "p90": None}
    assert result["frequency_week"]["series"] == [
        {"start": date(2020, 1, 6), "count": 0, "coverage": 1.0},
        {"start": date(2020, 1, 13), "count": 0, "coverage": 1.0},
    ]
    assert result["frequency_week"]["mean"] == 0.0
    assert result["recurrence_rate"]["rate"] is None
    assert all(row["share"] is None for row in result["severity_distribution"]["items"])


def test_empty_database(boss):
    result = metrics.metrics_compute(user=boss)
    assert result["incidents"]["count"] == 0
    assert result["mttr"]["mean"] is None
    assert result["frequency_week"]["series"] == []
    assert result["frequency_week"]["mean"] is None


def test_service_filter(dataset, boss):
    result = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL, service="api")
    # A, C, D touch api (C also web: counted once).
    assert result["incidents"]["count"] == 3
    # A 3600, D 1800 (first resolution); C open.
    assert durations(result, "mttr") == {"count": 2, "missing": 1, "mean": 2700.0, "median": 2700.0, "p90": 3420.0}
    both = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL, service=["api", "web"])
    assert both["incidents"]["count"] == 4  # A, B, C, D: C once


def test_severity_filter(dataset, boss):
    result = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL, severity=[1])
    assert result["incidents"]["count"] == 2  # A and E
    assert durations(result, "mttd") == {"count": 2, "missing": 0, "mean": 3000.0, "median": 3000.0, "p90": 4920.0}
    assert metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL, severity=[2, 3])["incidents"]["count"] == 3


def test_restricted_incidents_count_only_for_those_who_may_see_them(dataset, boss):
    viewer = UserFactory(username="vera", groups=["Viewers"])
    secret = make("J", SeverityFactory(level=1), detected=at(11, 9), ack=at(11, 9, 1), restricted=True)
    assert metrics.metrics_compute(user=viewer, since=SINCE, until=UNTIL)["incidents"]["count"] == 5
    assert metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL)["incidents"]["count"] == 6
    allowed = UserFactory(username="sam")
    allowed.user_permissions.add(Permission.objects.get(codename="view_restricted_incident"))
    assert metrics.metrics_compute(user=allowed, since=SINCE, until=UNTIL)["mtta"]["count"] == 5
    services.incident_member_add(incident=secret, user=viewer, actor=boss)
    assert metrics.metrics_compute(user=viewer, since=SINCE, until=UNTIL)["incidents"]["count"] == 6


def test_customer_impact_metrics(dataset, boss):
    for incident, customer in ((dataset["a"], "cust-1"), (dataset["a"], "cust-2"), (dataset["c"], "cust-1")):
        services.customer_report_create(actor=boss, incident=incident, customer_id=customer, received_at=at(9, 9))
    services.customer_report_create(actor=boss, customer_id="cust-9")  # unlinked
    services.customer_report_create(actor=boss, incident=dataset["f"], customer_id="cust-5")  # F is out of the period
    result = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL)
    assert result["customers_affected"]["count"] == 2
    assert result["customer_reports"]["count"] == 3


def test_period_must_be_ordered_and_bounded(boss):
    with pytest.raises(metrics.MetricsError):
        metrics.metrics_compute(user=boss, since=UNTIL, until=SINCE)
    with pytest.raises(metrics.MetricsError):
        metrics.metrics_compute(user=boss, since=datetime(1900, 1, 1, tzinfo=UTC), until=UNTIL)


def test_every_metric_has_a_written_definition(boss):
    result = metrics.metrics_compute(user=boss)
    assert list(result)[:8] == [
        "mttd",
        "mtta",
        "mtta_alert",
        "mtta_person",
        "time_to_mitigate",
        "mttr",
        "time_to_final_resolution",
        "mttr_from_start",
    ]
    for key, metric in result.items():
        assert metric["key"] == key
        assert metric["definition"] and metric["unit"] and metric["name"]
    assert {d.key for d in metrics.metric_definitions()} == set(result)


def test_services_impact(dataset, boss):
    services.customer_report_create(actor=boss, incident=dataset["c"], customer_id="cust-1")
    incidents = metrics.incidents_for_metrics(user=boss, since=SINCE, until=UNTIL).exclude(title="C")
    rows = {row["slug"]: row for row in metrics.services_impact(incidents)}
    # api: A (impact 10:00 -> mitigated 10:40 = 40 min) + D (detected 09:00 -> mitigated 10:30 = 90 min).
    assert rows["api"] == {"slug": "api", "name": "API", "incidents": 2, "impact_minutes": 130.0, "customer_reports": 0}
    # web: B (no start: detected 12:00 -> mitigated 12:30).
    assert rows["web"]["impact_minutes"] == 30.0
    assert [row["slug"] for row in metrics.services_impact(incidents)] == ["api", "web"]


def test_trends(dataset, boss):
    incidents = metrics.incidents_for_metrics(user=boss, since=SINCE, until=UNTIL)
    assert metrics.duration_trend(incidents, "mttr") == [
        {"start": date(2026, 3, 2), "count": 3, "mean": 4800.0},  # A 3600, B 7200, E 3600
        {"start": date(2026, 3, 9), "count": 1, "mean": 1800.0},  # D to its first resolution; C not resolved
    ]
    assert metrics.frequency_by_severity(incidents) == [
        {"start": date(2026, 3, 2), "level": 1, "count": 2},
        {"start": date(2026, 3, 2), "level": 2, "count": 1},
        {"start": date(2026, 3, 9), "level": 2, "count": 1},
        {"start": date(2026, 3, 9), "level": 3, "count": 1},
    ]


# ---- the API ------------------------------------------------------------------------------------


@pytest.fixture
def api_for(settings):
    from django.core.cache import cache
    from rest_framework.test import APIClient

    from incidents.api.keys import api_key_create

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()

    def make_client(user):
        _key, raw = api_key_create(name=f"{user.username} key", user=user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    return make_client


def test_api_returns_every_metric_with_its_definition(dataset, boss, api_for):
    response = api_for(boss).get(
        "/api/v1/metrics/", {"since": "2026-03-02T00:00:00Z", "until": "2026-03-16T00:00:00Z", "service": "api"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["filters"] == {
        "since": "2026-03-02T00:00:00Z",
        "until": "2026-03-16T00:00:00Z",
        "service": ["api"],
        "severity": [],
    }
    mttr = body["metrics"]["mttr"]
    assert {k: mttr[k] for k in ("count", "missing", "mean", "median", "p90", "unit")} == {
        "count": 2,
        "missing": 1,
        "mean": 2700.0,
        "median": 2700.0,
        "p90": 3420.0,
        "unit": "seconds",
    }
    assert "detection to the first resolution" in mttr["definition"]
    assert body["metrics"]["frequency_week"]["series"] == [
        {"start": "2026-03-02", "count": 1, "coverage": 1.0},
        {"start": "2026-03-09", "count": 2, "coverage": 1.0},
    ]
    assert body["metrics"]["recurrence_rate"]["rate"] == round(1 / 3, 4)
    for metric in body["metrics"].values():
        assert metric["definition"] and metric["unit"]


def test_api_severity_filter_accepts_lists(dataset, boss, api_for):
    api = api_for(boss)
    since = {"since": "2026-03-02T00:00:00Z", "until": "2026-03-16T00:00:00Z"}
    assert api.get("/api/v1/metrics/", {**since, "severity": "2,3"}).json()["metrics"]["incidents"]["count"] == 3
    both = api.get("/api/v1/metrics/?severity=2&severity=3&since=2026-03-02T00:00:00Z&until=2026-03-16T00:00:00Z")
    assert both.json()["metrics"]["incidents"]["count"] == 3


@pytest.mark.parametrize(
    "query, field",
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-03-16T00:00:00Z", "until": "2026-03-02T00:00:00Z"}, "until"),
        ({"since": "1800-01-01T00:00:00Z"}, "since"),
        ({"service": "no-such-service"}, "service"),
        ({"severity": "high"}, "severity"),
        ({"severity": "9"}, "severity"),
    ],
)
def test_api_bad_parameters_are_400(dataset, boss, api_for, query, field):
    response = api_for(boss).get("/api/v1/metrics/", query)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_api_needs_the_view_permission(db, api_for):
    nobody = UserFactory(username="nobody")
    assert api_for(nobody).get("/api/v1/metrics/").status_code == 403
    assert api_for(UserFactory(username="vic", groups=["Viewers"])).get("/api/v1/metrics/").status_code == 200


def test_api_query_count_does_not_grow_with_the_data(db, boss, api_for):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api = api_for(boss)
    sev = SeverityFactory(level=2)
    web = ServiceFactory(slug="web")
    api.get("/api/v1/metrics/")  # the key's first use is recorded once

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/api/v1/metrics/", {"service": "web"}).status_code == 200
        return len(captured)

    counts = []
    for batch in (1, 12):
        for n in range(batch):
            make(
                f"x{n}",
                sev,
                services=[web],
                started=at(2, 9),
                detected=at(2 + n % 9, 10),
                ack=at(2 + n % 9, 10, 5),
                mitigated=at(2 + n % 9, 11),
                resolved=at(2 + n % 9, 12),
            )
        counts.append(queries())
    assert counts[0] == counts[1], counts


# ---- action items (postmortems registers them) ---------------------------------------------------


def test_action_item_metrics_and_series(dataset, boss):
    from django.utils import timezone

    from postmortems.models import ActionItem

    now, today = timezone.now(), timezone.localdate()

    def item(incident, status, due=None, age_days=1):
        finished = status in ("done", "wont_do")
        made = ActionItem.objects.create(
            incident=incident,
            title=f"{status} {due}",
            status=status,
            due_date=due,
            wont_do_reason="Not worth it" if status == "wont_do" else "",
            completed_at=now if finished else None,
        )
        ActionItem.objects.filter(pk=made.pk).update(created_at=now - timedelta(days=age_days))

    a, c, f = dataset["a"], dataset["c"], dataset["f"]
    item(a, "done")
    item(a, "done")
    item(a, "wont_do")
    item(a, "open", due=today - timedelta(days=3), age_days=3)  # overdue, under 7 days old
    item(a, "open", due=None, age_days=45)  # no due date: never overdue; 30–90 days old
    item(c, "in_progress", due=today + timedelta(days=10), age_days=200)  # not yet due; over 90 days old
    item(f, "open", due=today - timedelta(days=30))  # F is outside the period

    result = metrics.metrics_compute(user=boss, since=SINCE, until=UNTIL)
    # done 2 of (6 − 1 won't do) = 0.4
    rate = result["action_item_completion_rate"]
    assert {k: rate[k] for k in ("count", "total", "rate")} == {"count": 2, "total": 5, "rate": 0.4}
    assert result["action_items_overdue"]["count"] == 1
    incidents = metrics.incidents_for_metrics(user=boss, since=SINCE, until=UNTIL)
    assert metrics.metric_series("action_items_open_by_age", incidents) == [
        {"label": "under 7 days", "count": 1},
        {"label": "7–30 days", "count": 0},
        {"label": "30–90 days", "count": 1},
        {"label": "over 90 days", "count": 1},
    ]
    assert metrics.metric_series("action_items_overdue_per_service", incidents) == [
        {"slug": "api", "name": "API", "count": 1}
    ]
    assert metrics.metric_series("no_such_series", incidents) is None

    # Incidents that can be none at all (an empty IN list): every figure is zero, not an error.
    for nothing in (incidents.none(), incidents.filter(pk__in=[])):
        assert metrics.metric_series("action_items_open_by_age", nothing) == [
            {"label": label, "count": 0} for label in ("under 7 days", "7–30 days", "30–90 days", "over 90 days")
        ]
        assert metrics.metric_series("action_items_overdue_per_service", nothing) == []
        assert metrics.metric_series("factor_categories_by_month", nothing) == []
        assert metrics.report_counts(CustomerReport.objects.none()) == (0, 0)
        assert metrics.reports_per_service(CustomerReport.objects.filter(pk__in=[])) == {}

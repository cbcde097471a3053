"""The admin's incident lists (issue 15, "Lists"): the open-incidents view, counts and paging on large
tables, bounded list actions, and query counts that do not grow with the rows shown."""

import re
import time
from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import reference, services
from incidents.admin import IncidentAdmin, OpenIncidentAdmin
from incidents.admin_lists import LargeTablePaginator
from incidents.models import Incident, Severity
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

S = Incident.Status
LIST_URL = reverse("admin:incidents_incident_changelist")
OPEN_URL = reverse("admin:incidents_openincident_changelist")


def ago(minutes):
    return timezone.now() - timedelta(minutes=minutes)


def rows(response):
    return [incident.reference for incident in response.context["cl"].result_list]


def messages_of(response):
    return [str(m) for m in response.wsgi_request._messages]


# ---- the open-incidents view -------------------------------------------------------------------


def test_open_list_counts_open_incidents_not_the_table(admin_client, admin_user, monkeypatch):
    for n in range(6):
        services.incident_transition(incident=declare(f"Old {n}"), to=S.RESOLVED, actor=admin_user)
    open_ones = [declare(f"Open {n}") for n in range(3)]
    # A small cap stands in for 200,000 rows: the open list must still count its own rows exactly.
    monkeypatch.setattr(LargeTablePaginator, "COUNT_CAP", 4)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE incidents_incident")
    response = admin_client.get(OPEN_URL)
    assert response.context["cl"].result_count == 3
    assert sorted(rows(response)) == sorted(i.reference for i in open_ones)
    assert "3 open incidents" in response.content.decode()


@pytest.mark.postgres
def test_unfiltered_incident_list_says_about_when_it_uses_the_estimate(admin_client, monkeypatch):
    for n in range(6):
        declare(f"Incident {n}")
    monkeypatch.setattr(LargeTablePaginator, "COUNT_CAP", 4)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE incidents_incident")
    page = admin_client.get(LIST_URL).content.decode()
    assert "about 6 incidents" in page


def test_open_list_flags_rows_that_need_someone(admin_client, admin_user):
    sev1 = SeverityFactory(level=1, ack_target_minutes=5, update_interval_minutes=30)
    late = declare("Nobody looked", severity=sev1, detected_at=ago(12))
    fresh = declare("Just came in", severity=sev1, detected_at=ago(1))
    handled = declare("In hand", severity=sev1, detected_at=ago(2))
    services.role_assign(incident=handled, role="commander", user=admin_user, actor=admin_user)
    services.incident_acknowledge(incident=handled, actor=admin_user)
    quiet = declare("Quiet for long", severity=sev1, detected_at=ago(45))
    services.incident_acknowledge(incident=quiet, actor=admin_user, at=ago(44))
    services.role_assign(incident=quiet, role="commander", user=admin_user, actor=admin_user)

    page = admin_client.get(OPEN_URL).content.decode()
    # (a slow machine may take a minute or two to get here)
    assert re.search(r"unacknowledged 1[2-4] min \(target 5 min\)", page)
    assert re.search(r"update overdue 1[5-7] min", page)
    assert page.count('class="needs needs-commander"') == 2  # the late and the fresh one

    def refs(needs):
        return set(rows(admin_client.get(OPEN_URL, {"needs": needs})))

    assert refs("unacknowledged") == {late.reference}
    assert refs("update") == {quiet.reference}
    assert refs("commander") == {late.reference, fresh.reference}
    assert refs("any") == {late.reference, fresh.reference, quiet.reference}
    assert refs("none") == {handled.reference}


def test_a_published_update_clears_the_update_overdue_flag(admin_client, admin_user):
    from comms.models import Update

    sev1 = SeverityFactory(level=1, ack_target_minutes=5, update_interval_minutes=30)
    quiet = declare("Quiet for long", severity=sev1, detected_at=ago(45))
    assert quiet.reference in rows(admin_client.get(OPEN_URL, {"needs": "update"}))
    Update.objects.create(
        incident=quiet, audience="internal", body="Still on it", status="published", published_at=ago(10)
    )
    assert quiet.reference not in rows(admin_client.get(OPEN_URL, {"needs": "update"}))


def test_open_list_offers_only_filters_that_make_sense_for_open_incidents(admin_client):
    declare("Open", services=[ServiceFactory()])
    response = admin_client.get(OPEN_URL)
    titles = [spec.title for spec in response.context["cl"].filter_specs]
    assert titles == ["status", "severity", "needs someone", "acknowledged", "service", "commander"]
    statuses = [choice["display"] for choice in response.context["cl"].filter_specs[0].choices(response.context["cl"])]
    assert statuses == ["All", "Detected", "Triaging", "Responding", "Mitigated"]


def test_open_list_has_a_declare_button_for_those_who_may_declare(client, responder, viewer):
    declare("Open")
    client.force_login(responder)
    assert reverse("admin:incidents_incident_add") in client.get(OPEN_URL).content.decode()
    client.force_login(viewer)
    page = client.get(OPEN_URL)
    assert page.status_code == 200 and reverse("admin:incidents_incident_add") not in page.content.decode()


def test_show_counts_is_off(admin_client):
    declare("Open")
    for url in (LIST_URL, OPEN_URL):
        cl = admin_client.get(url, {"_facets": "True"}).context["cl"]
        assert not cl.add_facets and not cl.is_facets_optional


def test_open_list_puts_the_worst_first_then_the_oldest_on_every_page(admin_client, monkeypatch):
    """The page's ids are read first and its rows after: the order must survive the second query."""
    sev1, sev3 = SeverityFactory(level=1), SeverityFactory(level=3)
    made = [
        declare("Sev3 older", severity=sev3, detected_at=ago(50)),
        declare("Sev1 newer", severity=sev1, detected_at=ago(5)),
        declare("Sev3 newer", severity=sev3, detected_at=ago(10)),
        declare("Sev1 older", severity=sev1, detected_at=ago(40)),
    ]
    by_title = {incident.title: incident.reference for incident in made}
    expected = [by_title[t] for t in ("Sev1 older", "Sev1 newer", "Sev3 older", "Sev3 newer")]
    monkeypatch.setattr(OpenIncidentAdmin, "list_per_page", 3)
    assert rows(admin_client.get(OPEN_URL)) + rows(admin_client.get(OPEN_URL, {"p": 2})) == expected


def test_the_commander_filter_offers_nobody_me_and_whoever_was_picked(admin_client, admin_user):
    """Not every member of staff (a query and a link each, on every page): names in the column link instead."""
    carol, dave = UserFactory(username="carol", is_staff=True), UserFactory(username="dave", is_staff=True)
    theirs = declare("Carol's")
    services.role_assign(incident=theirs, role="commander", user=carol, actor=admin_user)
    nobodys = declare("Nobody's")
    for url in (LIST_URL, OPEN_URL):
        response = admin_client.get(url)
        spec = next(s for s in response.context["cl"].filter_specs if s.title == "commander")
        shown = [c["display"] for c in spec.choices(response.context["cl"])]
        assert shown == ["All", "Nobody", "Me"]
        assert f'<a href="?commander={carol.pk}" title="Only incidents carol commands"' in response.content.decode()
        # Clicking a name keeps the other filters and goes back to the first page.
        narrowed = admin_client.get(url, {"status__exact": "detected", "p": "1"}).content.decode()
        link = re.search(r'<a href="\?([^"]*)" title="Only incidents carol commands"', narrowed).group(1)
        assert sorted(link.split("&amp;")) == [f"commander={carol.pk}", "status__exact=detected"]

        picked = admin_client.get(url, {"commander": carol.pk})
        assert rows(picked) == [theirs.reference]
        spec = next(s for s in picked.context["cl"].filter_specs if s.title == "commander")
        choices = spec.choices(picked.context["cl"])
        assert [(c["display"], c["selected"]) for c in choices][-1] == ("carol", True)
        assert rows(admin_client.get(url, {"commander": "none"})) == [nobodys.reference]
        assert rows(admin_client.get(url, {"commander": dave.pk})) == []


def severity_reads(ctx):
    return sum('FROM "incidents_severity"' in q["sql"] for q in ctx.captured_queries)


def test_the_lists_read_the_severities_once_per_process_and_again_at_once_when_one_is_saved(admin_client):
    sev1, sev3 = SeverityFactory(level=1), SeverityFactory(level=3)
    critical = declare("Critical", severity=sev1)
    declare("Minor", severity=sev3)
    # The filter and the per-severity actions share one read, and the next list request reads none.
    for url, reads in ((LIST_URL, 1), (OPEN_URL, 0)):
        with CaptureQueriesContext(connection) as ctx:
            response = admin_client.get(url, {"severity__id__exact": sev1.pk})
        assert rows(response) == [critical.reference]
        assert severity_reads(ctx) == reads
        assert f'value="set_severity_{sev3.level}"' in response.content.decode()
    # A severity saved in this process shows on the next request: in the filter and as an action.
    sev7 = SeverityFactory(level=7, label="SEV7")  # levels 1-4 are seeded
    page = admin_client.get(OPEN_URL).content.decode()
    assert f"?severity__id__exact={sev7.pk}" in page and "SEV7" in page
    assert 'value="set_severity_7"' in page


def test_a_severity_changed_by_another_process_shows_within_the_reference_seconds(admin_client, monkeypatch):
    sev1 = SeverityFactory(level=1, label="SEV1")
    admin_client.get(OPEN_URL)
    Severity.objects.filter(pk=sev1.pk).update(label="SEV1-new")  # no signal here, as in another process
    assert "SEV1-new" not in admin_client.get(OPEN_URL).content.decode()
    later = time.monotonic() + reference.REFERENCE_SECONDS
    monkeypatch.setattr(reference.time, "monotonic", lambda: later)
    assert "SEV1-new" in admin_client.get(OPEN_URL).content.decode()


def test_a_row_whose_severity_another_process_just_made_shows_it(admin_client):
    declare("Known", severity=SeverityFactory(level=1))
    admin_client.get(OPEN_URL)  # this process now keeps the severities it read
    # bulk_create sends no signal, as when another process adds one
    (sev9,) = Severity.objects.bulk_create([SeverityFactory.build(level=9, name="Brand new", label="SEV9")])
    fresh = declare("Fresh", severity=sev9)
    page = admin_client.get(OPEN_URL).content.decode()
    assert fresh.reference in rows(admin_client.get(OPEN_URL))
    assert 'title="Brand new">SEV9</span>' in page


def test_a_new_service_is_in_the_service_filter_at_once(admin_client):
    ServiceFactory(name="Payments", slug="payments")
    assert "?service=payments" in admin_client.get(LIST_URL).content.decode()
    ServiceFactory(name="Search", slug="search")
    with CaptureQueriesContext(connection) as ctx:
        page = admin_client.get(LIST_URL).content.decode()
    assert "?service=search" in page and "?service=payments" in page
    assert sum('FROM "incidents_service"' in q["sql"] for q in ctx.captured_queries) == 1
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(OPEN_URL)
    assert not any('FROM "incidents_service" ' in q["sql"] and "ORDER BY" in q["sql"] for q in ctx.captured_queries)


# ---- counts and paging on large tables ----------------------------------------------------------


@pytest.fixture
def twenty_two(db, monkeypatch):
    """22 detected incidents, a count cap of 5 and pages of 2: the list is "large"."""
    incidents = [declare(f"Incident {n}", detected_at=ago(100 - n)) for n in range(22)]
    monkeypatch.setattr(LargeTablePaginator, "COUNT_CAP", 5)
    monkeypatch.setattr(IncidentAdmin, "list_per_page", 2)
    return incidents


def test_a_filtered_list_beyond_the_cap_says_more_than_and_pages_to_the_end(admin_client, twenty_two):
    first = admin_client.get(LIST_URL, {"status__exact": "detected"})
    assert "more than 5 incidents" in first.content.decode()
    # Page 11 is rows 21-22, far beyond what the first count saw: reachable, and the count is exact there.
    last = admin_client.get(LIST_URL, {"status__exact": "detected", "p": "11"})
    assert last.status_code == 200
    assert rows(last) == [twenty_two[1].reference, twenty_two[0].reference]
    assert "22 incidents" in last.content.decode()
    # Every page in between links on to the next one.
    middle = admin_client.get(LIST_URL, {"status__exact": "detected", "p": "6"})
    assert middle.context["cl"].paginator.num_pages > 6 and "more than" in middle.content.decode()


def test_a_page_past_the_end_is_the_admins_error_not_a_500(admin_client, twenty_two):
    response = admin_client.get(LIST_URL, {"status__exact": "detected", "p": "40"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_a_filtered_count_is_true_below_the_cap(admin_client, admin_user):
    declare("A")
    services.incident_transition(incident=declare("B"), to=S.RESOLVED, actor=admin_user)
    page = admin_client.get(LIST_URL, {"status__exact": "detected"}).content.decode()
    assert "1 incident" in page and "more than" not in page


def test_filtered_lists_count_with_a_limit(admin_client):
    declare("One")
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(LIST_URL, {"status__exact": "detected"})
        admin_client.get(OPEN_URL)
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


# ---- bounded list actions ----------------------------------------------------------------------


def test_an_action_over_more_incidents_than_the_limit_is_refused(admin_client, settings):
    settings.INCIDENT_LIST_ACTION_MAX = 2
    incidents = [declare(f"Incident {n}") for n in range(3)]
    response = admin_client.post(
        LIST_URL,
        {"action": "acknowledge", helpers.ACTION_CHECKBOX_NAME: [i.pk for i in incidents]},
        follow=True,
    )
    assert any("at most 2 incidents" in m for m in messages_of(response))
    assert not Incident.objects.filter(acknowledged_at__isnull=False).exists()


def test_select_all_across_a_big_filtered_list_is_refused_too(admin_client, settings):
    settings.INCIDENT_LIST_ACTION_MAX = 2
    incidents = [declare(f"Incident {n}") for n in range(3)]
    response = admin_client.post(
        f"{LIST_URL}?status__exact=detected",
        {"action": "transition_to_dismissed", "select_across": "1", helpers.ACTION_CHECKBOX_NAME: [incidents[0].pk]},
        follow=True,
    )
    assert any("Nothing was changed" in m for m in messages_of(response))
    assert not Incident.objects.filter(status=S.DISMISSED).exists()


def test_an_action_within_the_limit_runs(admin_client, settings):
    settings.INCIDENT_LIST_ACTION_MAX = 2
    incidents = [declare(f"Incident {n}") for n in range(2)]
    admin_client.post(LIST_URL, {"action": "acknowledge", helpers.ACTION_CHECKBOX_NAME: [i.pk for i in incidents]})
    assert Incident.objects.filter(acknowledged_at__isnull=False).count() == 2


# ---- query counts: 1 row and 100 rows ----------------------------------------------------------


def _crowd(n, admin_user):
    sev1 = SeverityFactory(level=1)
    svc_a, svc_b = ServiceFactory(), ServiceFactory()
    for i in range(n):
        incident = declare(f"Incident {i}", severity=sev1, services=[svc_a, svc_b], detected_at=ago(90))
        if i % 2:
            services.role_assign(incident=incident, role="commander", user=admin_user, actor=admin_user)


def _queries(client, url):
    client.get(url)  # warm caches (content types, session)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries), len(response.context["cl"].result_list)


@pytest.mark.parametrize("url", [LIST_URL, OPEN_URL], ids=["incident list", "open incidents"])
def test_each_list_runs_the_same_queries_at_1_and_100_rows(client, url, monkeypatch):
    admin_user = UserFactory(username="root", is_superuser=True)
    client.force_login(admin_user)
    for admin_class in (IncidentAdmin, OpenIncidentAdmin):
        monkeypatch.setattr(admin_class, "list_per_page", 100)
    _crowd(1, admin_user)
    at_one = _queries(client, url)
    _crowd(99, admin_user)
    at_hundred = _queries(client, url)
    assert (at_one[1], at_hundred[1]) == (1, 100)
    assert at_one[0] == at_hundred[0], (at_one, at_hundred)


def test_a_responder_sees_the_same_query_count_at_1_and_100_rows(client, responder, monkeypatch):
    """The visibility rule (EXISTS per row) must not add queries per row either."""
    monkeypatch.setattr(OpenIncidentAdmin, "list_per_page", 100)
    client.force_login(responder)
    admin_user = UserFactory(username="root", is_superuser=True)
    _crowd(1, admin_user)
    at_one = _queries(client, OPEN_URL)
    _crowd(99, admin_user)
    assert _queries(client, OPEN_URL)[0] == at_one[0]


@pytest.mark.parametrize(
    "params",
    [
        {"p": "abc"},
        {"p": "-5"},
        {"p": "99999999999999999999"},
        {"needs": "bogus"},
        {"status__exact": "closed"},
        {"commander": "x\x00y"},
        {"commander": "99999999999999999999"},
        {"commander": "٣"},
        {"severity__id__exact": "99999999999999999999"},
        {"acknowledged": "maybe"},
    ],
)
def test_bad_list_parameters_are_never_a_500(admin_client, params):
    declare("Open")
    for url in (LIST_URL, OPEN_URL):
        assert admin_client.get(url, params).status_code in (200, 302), (url, params)

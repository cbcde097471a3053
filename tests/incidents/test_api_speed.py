"""What keeps the API list fast (issue 14): a bounded number of queries at any page size and filter, a
trusted key cache that forgets at once what changed in this process, the plain serializer path that must
give exactly what DRF gives, and ETag / If-None-Match → 304 on the list and the detail."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers
from rest_framework.test import APIClient, APIRequestFactory

from incidents import services
from incidents.api.filters import service_ids_clear
from incidents.api.keys import api_key_cache_clear, api_key_create
from incidents.api.serializers import IncidentSerializer
from incidents.models import Incident, Service
from tests.incidents.factories import ServiceFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db

LIST = "/api/v1/incidents/"
FILTERS = [{}, {"open": "true"}, {"severity": "1"}, {"service": "checkout"}, {"updated_since": "2020-01-01T00:00:00Z"}]


@pytest.fixture
def world(responder, sev1, sev3):
    cache.clear()
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    search = ServiceFactory(slug="search", name="Search")
    lead = UserFactory(username="lena", groups=["Responders"])
    incidents = []
    for n in range(120):
        incident = declare(f"Incident {n}", severity=sev1 if n % 3 else sev3, services=[checkout, search][: n % 3])
        if n % 4 == 0:
            services.role_assign(incident=incident, role="commander", user=lead, actor=lead)
        if n % 5 == 0:
            drive(incident, "resolved")
        incidents.append(incident)
    # Links to a restricted incident the responder may not see: the page works them out in one query.
    secret = declare("Secret", severity=sev1)
    services.incident_restriction_set(incident=secret, restricted=True, actor=None)
    services.incident_update(incident=incidents[-1], actor=None, recurrence_of=secret)
    services.incident_update(incident=incidents[-2], actor=None, recurrence_of=incidents[0])
    return {"incidents": incidents, "secret": secret}


def client_for(user):
    _key, raw = api_key_create(name=f"{user.username} key", user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def queries(client, path, params):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, params)
    assert response.status_code == 200, response.content
    return len(captured)


@pytest.mark.parametrize("params", FILTERS)
def test_the_list_runs_at_most_5_queries_at_any_page_size(world, responder, params):
    """A responder's key (permissions and the visibility rule apply), a restricted link on the page."""
    client = client_for(responder)
    counts = {}
    # The key's first use writes last_used_at (at most once a minute), and a process's first ?service= looks
    # its slug up (test_service_slugs_are_read_once_per_process): neither is counted here.
    client.get(LIST, params)
    for size in (1, 50, 100):
        api_key_cache_clear()  # cold: the key, its user and their permissions are read too
        counts[("cold", size)] = queries(client, LIST, {**params, "page_size": size})
        counts[("warm", size)] = queries(client, LIST, {**params, "page_size": size})
    assert max(counts.values()) <= 5, counts
    for state in ("cold", "warm"):
        assert len({counts[(state, size)] for size in (1, 50, 100)}) == 1, counts  # not growing with the page
    assert counts[("warm", 100)] <= 3, counts


def test_plain_representation_is_what_drf_gives(world, responder):
    """The list's fast path and ModelSerializer's own to_representation agree on every field."""
    request = APIRequestFactory().get(LIST, HTTP_HOST="testserver")
    request.user = responder
    view_queryset = Incident.objects.select_related("severity", "commander", "recurrence_of", "duplicate_of")
    incidents = list(view_queryset.prefetch_related("services").order_by("pk"))
    context = {"request": request}
    fast = IncidentSerializer(incidents, many=True, context=context).data
    for incident, row in zip(incidents, fast, strict=True):
        generic = serializers.ModelSerializer.to_representation(IncidentSerializer(context=context), incident)
        generic = {k: v for k, v in generic.items()}
        if incident.recurrence_of_id == world["secret"].pk:
            generic["recurrence_of"] = None  # hidden from this reader, in both
        assert row == generic, incident.reference


def test_list_rows_equal_the_detail(world, responder):
    """The list reads the linked rows' columns as annotations, the detail whole rows: same JSON."""
    client = client_for(responder)
    rows = client.get(LIST, {"page_size": 100}).json()["results"]
    assert any(row["recurrence_of"] for row in rows) and any(row["commander"] for row in rows)
    assert any(row["recurrence_of"] is None and row["id"] == world["incidents"][-1].pk for row in rows)  # hidden
    for row in rows:
        assert client.get(f"{LIST}{row['id']}/").json() == row, row["reference"]


def test_the_key_cache_forgets_a_revoked_permission_at_once_in_this_process(world, responder):
    client = client_for(responder)
    assert client.get(LIST).status_code == 200
    responders = Group.objects.get(name="Responders")
    responders.permissions.remove(Permission.objects.get(codename="view_incident"))
    assert client.get(LIST).status_code == 403
    responder.is_active = False
    responder.save()
    assert client.get(LIST).status_code == 401


def test_list_and_detail_answer_304_to_if_none_match(world, responder):
    client = client_for(responder)
    incident = world["incidents"][0]
    for path in (LIST, f"{LIST}{incident.pk}/", f"{LIST}?open=true&page_size=10"):
        first = client.get(path)
        etag = first["ETag"]
        assert etag
        again = client.get(path, HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
        assert client.get(path, HTTP_IF_NONE_MATCH='W/"something-else"').status_code == 200
    before = client.get(LIST)["ETag"]
    services.incident_update(incident=world["incidents"][-3], actor=None, title="Renamed")  # on the first page
    changed = client.get(LIST, HTTP_IF_NONE_MATCH=before)
    assert changed.status_code == 200 and changed["ETag"] != before
    detail_tag = client.get(f"{LIST}{world['incidents'][1].pk}/")["ETag"]
    services.incident_update(incident=world["incidents"][1], actor=None, title="Renamed too")
    assert client.get(f"{LIST}{world['incidents'][1].pk}/", HTTP_IF_NONE_MATCH=detail_tag).status_code == 200


def test_a_304_is_per_reader(world, responder):
    """The same list is a different document for someone who may see the restricted incident."""
    superuser = UserFactory(username="sue", is_superuser=True)
    tag = client_for(responder).get(LIST, {"page_size": 100})["ETag"]
    assert client_for(superuser).get(LIST, {"page_size": 100}, HTTP_IF_NONE_MATCH=tag).status_code == 200


def listed_ids(client, **params):
    response = client.get(LIST, {**params, "page_size": 100})
    assert response.status_code == 200, response.content
    assert response.json()["next"] is None
    return {row["id"] for row in response.json()["results"]}


def test_service_filter_takes_several_slugs_and_keeps_restricted_incidents_hidden(world, responder, sev1):
    client = client_for(responder)
    secret = declare("Secret checkout", severity=sev1, services=[ServiceFactory(slug="checkout-eu")])
    services.incident_restriction_set(incident=secret, restricted=True, actor=None)
    mine = declare("Mine, restricted", severity=sev1, services=[Service.objects.get(slug="search")])
    services.incident_restriction_set(incident=mine, restricted=True, actor=None)
    services.role_assign(incident=mine, role="expert", user=responder, actor=None)

    def expected(*slugs):
        return {i.pk for i in Incident.objects.visible_to(responder).filter(services__slug__in=slugs)}

    checkout = listed_ids(client, service="checkout")
    assert checkout == expected("checkout") and len(checkout) == 80
    assert listed_ids(client, service="search") == expected("search") and mine.pk in expected("search")
    both = listed_ids(client, service="checkout,search")
    assert both == listed_ids(client, service=["checkout", "search"]) == expected("checkout", "search")
    assert listed_ids(client, service="checkout-eu") == set()  # only the restricted one, not this reader's
    assert listed_ids(client, service="checkout,no-such-service") == checkout
    assert listed_ids(client, service="no-such-service") == set()


def test_an_unknown_service_reads_no_incident(world, responder):
    """It used to walk every incident looking for a link to a slug that matches none."""
    client = client_for(responder)
    client.get(LIST)
    with CaptureQueriesContext(connection) as captured:
        assert listed_ids(client, service="no-such-service") == set()
    assert not any("incidents_incident" in query["sql"] for query in captured.captured_queries), captured


def test_service_slugs_are_read_once_per_process_and_forgotten_when_a_service_changes(world, responder):
    client = client_for(responder)
    client.get(LIST, {"service": "search"})  # the key's first use and a warm cache
    service_ids_clear()
    first = queries(client, LIST, {"service": "checkout"})
    assert queries(client, LIST, {"service": "checkout"}) == first - 1  # the slug is known now
    before = listed_ids(client, service="checkout")
    checkout = Service.objects.get(slug="checkout")
    checkout.slug = "till"
    checkout.save()  # this process forgets the slugs at once
    assert listed_ids(client, service="checkout") == set()
    assert listed_ids(client, service="till") == before


def test_a_filtered_list_builds_only_its_filters_and_the_browsable_form_shows_them_all(world, responder):
    from incidents.api.filters import IncidentFilterSet

    narrowed = IncidentFilterSet.narrowed_to(["open", "page_size", "service"])
    assert set(narrowed.base_filters) == {"open", "service"}
    assert IncidentFilterSet.narrowed_to(["service", "open"]) is narrowed  # built once
    assert {"commander", "search", "ordering"} <= IncidentFilterSet.base_filters.keys()  # the class is unchanged
    client = client_for(responder)
    combined = {"open": "true", "service": "checkout", "severity": "1", "ordering": "-reference"}
    rows = client.get(LIST, {**combined, "page_size": 100}).json()["results"]
    expected = (
        Incident.objects.visible_to(responder)
        .open()
        .filter(services__slug="checkout", severity__level=1)
        .order_by("-number")
        .values_list("id", flat=True)
    )
    assert [row["id"] for row in rows] == list(expected) and rows
    page = client.get(LIST, {"open": "true"}, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    for name in IncidentFilterSet.base_filters:
        assert f'name="{name}"' in page.content.decode(), name

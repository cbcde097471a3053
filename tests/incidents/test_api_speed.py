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
from incidents.api.keys import api_key_cache_clear, api_key_create
from incidents.api.serializers import IncidentSerializer
from incidents.models import Incident
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
    client.get(LIST)  # the key's first use writes last_used_at (at most once a minute), not counted here
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

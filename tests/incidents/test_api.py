"""The REST API under /api/v1/: API keys, the admin's permissions, reads, writes through the services,
filters, keyset pagination, lost-update protection, throttling and the one error shape."""

from datetime import timedelta
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from incidents import services
from incidents.api.keys import api_key_cache_clear, api_key_create, api_key_revoke
from incidents.models import ApiKey, Incident, RoleAssignment, TimelineEvent
from tests.api import api_client_for as client_for
from tests.incidents.factories import ServiceFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db

S = Incident.Status
LIST = "/api/v1/incidents/"


def detail(incident):
    return f"/api/v1/incidents/{incident.pk}/"


@pytest.fixture(autouse=True)
def _fast_and_fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # many users here
    cache.clear()  # throttling counts live in the cache
    yield
    cache.clear()


@pytest.fixture
def admin_user(db):
    return UserFactory(username="ada", is_superuser=True)


@pytest.fixture
def api(admin_user):
    return client_for(admin_user)


@pytest.fixture
def responder_api(responder):
    return client_for(responder)


@pytest.fixture
def viewer_api(viewer):
    return client_for(viewer)


def assert_error(response, status_code, code=None):
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# ---- authentication and permissions --------------------------------------------------------------


def test_no_key_is_401_with_the_scheme():
    error = assert_error(APIClient().get(LIST), 401, "not_authenticated")
    assert "credentials" in error["message"]
    assert APIClient().get(LIST)["WWW-Authenticate"].startswith("Bearer")
    assert_error(APIClient().get("/api/v1/"), 401)
    assert_error(APIClient().options(LIST), 401)


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer inc_abc_def", "Bearer", "Bearer a b", "Bearer \u00e9"])
def test_unknown_or_malformed_key_is_401(header, admin_user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_error(client.get(LIST), 401, "authentication_failed")


def test_revoked_key_is_401(admin_user):
    api_key, raw = api_key_create(name="old", user=admin_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(LIST).status_code == 200
    api_key_revoke(api_key=api_key)
    assert_error(client.get(LIST), 401, "authentication_failed")


def test_key_of_inactive_user_is_401(admin_user):
    client = client_for(admin_user)
    admin_user.is_active = False
    admin_user.save()
    assert_error(client.get(LIST), 401)


def test_key_is_stored_hashed_and_its_use_recorded_at_most_once_a_minute(admin_user):
    api_key, raw = api_key_create(name="grafana", user=admin_user)
    assert raw.startswith(f"inc_{api_key.prefix}_")
    assert raw not in api_key.hashed_secret and len(api_key.hashed_secret) == 64
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.get(LIST)
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert first_use is not None
    with CaptureQueriesContext(connection) as queries:
        client.get(LIST)
    assert not [q for q in queries if q["sql"].startswith("UPDATE")]
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=first_use - timedelta(minutes=2))
    api_key_cache_clear()  # as API_KEY_CACHE_SECONDS passing would: the key is checked against the table again
    client.get(LIST)
    api_key.refresh_from_db()
    assert api_key.last_used_at > first_use - timedelta(minutes=2)


def test_viewer_key_reads_but_cannot_write(viewer_api, sev3):
    incident = declare()
    assert viewer_api.get(LIST).status_code == 200
    assert viewer_api.get(detail(incident)).status_code == 200
    assert viewer_api.get(f"{detail(incident)}timeline/").status_code == 200
    assert viewer_api.get(f"{detail(incident)}roles/").status_code == 200
    assert viewer_api.get("/api/v1/services/").status_code == 200
    assert viewer_api.get("/api/v1/severities/").status_code == 200
    writes = [
        ("post", LIST, {"title": "x", "severity": 3}),
        ("patch", detail(incident), {"title": "y"}),
        ("post", f"{detail(incident)}transition/", {"to": "triaging"}),
        ("post", f"{detail(incident)}acknowledge/", {}),
        ("post", f"{detail(incident)}timeline/", {"body": "note"}),
        ("post", f"{detail(incident)}roles/", {"role": "commander", "user": "victor"}),
        ("post", "/api/v1/services/", {"name": "Search", "slug": "search"}),
    ]
    for method, url, body in writes:
        assert_error(getattr(viewer_api, method)(url, body, format="json"), 403, "permission_denied")
    incident.refresh_from_db()
    assert (incident.title, incident.status, incident.version) == ("Checkout errors", S.DETECTED, 1)


def test_user_without_view_permission_cannot_read(sev3):
    nobody = UserFactory(username="nobody")
    assert_error(client_for(nobody).get(LIST), 403, "permission_denied")


def test_responder_can_drive_an_incident_but_not_edit_services(responder_api, sev3):
    created = responder_api.post(LIST, {"title": "Queue backlog", "severity": 3}, format="json")
    assert created.status_code == 201
    url = created.json()["url"]
    assert responder_api.post(f"{url}transition/", {"to": "responding"}, format="json").status_code == 200
    assert responder_api.post(f"{url}timeline/", {"body": "Scaling workers"}, format="json").status_code == 201
    assert responder_api.post(f"{url}roles/", {"role": "scribe", "user": "rita"}, format="json").status_code == 201
    assert_error(responder_api.post("/api/v1/services/", {"name": "Search", "slug": "search"}), 403)


def test_session_authentication_for_the_browsable_api(client, admin_user, sev3):
    client.force_login(admin_user)
    declare()
    response = client.get(LIST, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Checkout errors" in response.content
    incident = Incident.objects.get()
    page = client.get(detail(incident), HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["ETag"]
    assert b"recurrence_of" in page.content  # the edit form offers the editable fields
    assert client.get("/api/v1/", HTTP_ACCEPT="text/html").status_code == 200
    # A browser session is held to CSRF like the admin.
    csrf_client = client.__class__(enforce_csrf_checks=True)
    csrf_client.force_login(admin_user)
    assert_error(csrf_client.post(LIST, {"title": "x", "severity": 3}, content_type="application/json"), 403)


def test_create_api_key_command_prints_the_key_once(admin_user):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "Alertmanager", user="ada", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    api_key = ApiKey.objects.get(name="Alertmanager")
    assert api_key.user == admin_user and raw.startswith(f"inc_{api_key.prefix}_")
    assert "not shown again" in err.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(LIST).status_code == 200


def test_create_api_key_command_needs_a_known_user(db):
    with pytest.raises(CommandError, match="no user"):
        call_command("create_api_key", "x", user="ghost")


# ---- incidents -------------------------------------------------------------------------------------


INCIDENT_FIELDS = {
    "id",
    "reference",
    "title",
    "summary",
    "status",
    "severity",
    "services",
    "started_at",
    "detected_at",
    "acknowledged_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
    "commander",
    "created_at",
    "updated_at",
    "url",
}


def test_declare_an_incident(api, sev2):
    ServiceFactory(slug="checkout")
    ServiceFactory(slug="payments")
    started = timezone.now() - timedelta(minutes=30)
    response = api.post(
        LIST,
        {
            "title": "Checkout failing",
            "summary": "5xx on pay",
            "severity": 2,
            "services": ["payments", "checkout"],
            "started_at": started.isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert INCIDENT_FIELDS <= set(body)
    incident = Incident.objects.get(pk=body["id"])
    assert body["reference"] == incident.reference
    assert body["severity"] == 2 and body["status"] == "detected"
    assert sorted(body["services"]) == ["checkout", "payments"]
    assert body["commander"] == "ada"  # the declaring user takes command unless they name someone else
    assert response["Location"] == body["url"] == f"http://testserver{detail(incident)}"
    assert response["ETag"] == f'"{incident.pk}-{incident.version}"'
    kinds = list(incident.timeline.values_list("kind", flat=True))
    assert kinds == [TimelineEvent.Kind.DECLARED, TimelineEvent.Kind.ROLE_ASSIGNED]


def test_declare_validates_with_field_errors(api, sev3):
    error = assert_error(api.post(LIST, {"severity": 9, "services": ["nope"]}, format="json"), 400, "invalid")
    assert set(error["fields"]) == {"title", "severity", "services"}
    assert Incident.objects.count() == 0


def test_domain_error_from_a_service_is_400(api, sev3):
    future = (timezone.now() + timedelta(days=1)).isoformat()
    error = assert_error(api.post(LIST, {"title": "x", "severity": 3, "detected_at": future}, format="json"), 400)
    assert "future" in error["message"]


def test_retrieve_an_incident_with_its_etag(api, sev1, admin_user):
    incident = declare(severity=sev1, services=[ServiceFactory(slug="api")])
    services.role_assign(incident=incident, role="commander", user=admin_user, actor=admin_user)
    response = api.get(detail(incident))
    assert response.status_code == 200
    body = response.json()
    assert body["commander"] == "ada" and body["severity"] == 1 and body["services"] == ["api"]
    assert response["ETag"] == f'"{incident.pk}-2"'


def test_patch_edits_through_the_services(api, sev3, sev1):
    incident = declare(severity=sev3)
    ServiceFactory(slug="db")
    response = api.patch(detail(incident), {"title": "Database down", "severity": 1, "services": ["db"]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["title"], body["severity"], body["services"]) == ("Database down", 1, ["db"])
    kinds = list(incident.timeline.values_list("kind", flat=True))
    assert kinds == ["declared", "fields_changed", "severity_changed"]
    assert response["ETag"] == f'"{incident.pk}-3"'


def test_patch_with_current_if_match_succeeds_and_stale_one_is_412(api, sev3):
    incident = declare()
    etag = api.get(detail(incident))["ETag"]
    assert api.patch(detail(incident), {"title": "First"}, format="json", HTTP_IF_MATCH=etag).status_code == 200
    # Someone else's edit was based on the same read: refused, nothing changed.
    error = assert_error(
        api.patch(detail(incident), {"title": "Second", "severity": 1}, format="json", HTTP_IF_MATCH=etag),
        412,
        "stale",
    )
    assert incident.reference in error["message"]
    incident.refresh_from_db()
    assert (incident.title, incident.severity.level, incident.version) == ("First", 3, 2)


def test_if_match_of_another_incident_or_garbage_is_412(api, sev3):
    incident, other = declare(), declare(title="Other")
    for header in (f'"{other.pk}-1"', "garbage"):
        assert_error(api.patch(detail(incident), {"title": "x"}, format="json", HTTP_IF_MATCH=header), 412)
    assert api.patch(detail(incident), {"title": "x"}, format="json", HTTP_IF_MATCH="*").status_code == 200


def test_patch_cannot_set_the_status(api, sev3):
    incident = declare()
    response = api.patch(detail(incident), {"status": "closed"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "detected"


def test_put_and_delete_are_405(api, sev3):
    incident = declare()
    assert_error(api.put(detail(incident), {"title": "x", "severity": 3}, format="json"), 405, "method_not_allowed")
    assert_error(api.delete(detail(incident)), 405)


def test_transition(api, sev3):
    incident = declare()
    response = api.post(f"{detail(incident)}transition/", {"to": "resolved", "note": "blip"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "resolved" and body["mitigated_at"] and body["resolved_at"]
    event = incident.timeline.get(kind="status_changed")
    assert (event.body, event.actor.username) == ("blip", "ada")


def test_forbidden_transition_is_409_and_changes_nothing(api, sev3):
    incident = drive(declare(), "closed")
    error = assert_error(api.post(f"{detail(incident)}transition/", {"to": "responding"}, format="json"), 409)
    assert error["code"] == "invalid_transition"
    assert "cannot move" in error["message"] and error["fields"]["to"]
    incident.refresh_from_db()
    assert incident.status == S.CLOSED


def test_transition_with_stale_if_match_is_412(api, sev3):
    incident = declare()
    etag = f'"{incident.pk}-{incident.version}"'
    services.incident_update(incident=incident, actor=None, title="Changed meanwhile")
    url = f"{detail(incident)}transition/"
    assert_error(api.post(url, {"to": "triaging"}, format="json", HTTP_IF_MATCH=etag), 412, "stale")
    incident.refresh_from_db()
    assert incident.status == S.DETECTED
    fresh = api.get(detail(incident))["ETag"]
    assert api.post(url, {"to": "triaging"}, format="json", HTTP_IF_MATCH=fresh).status_code == 200


def test_transition_to_an_unknown_status_is_400(api, sev3):
    incident = declare()
    error = assert_error(api.post(f"{detail(incident)}transition/", {"to": "exploded"}, format="json"), 400)
    assert "to" in error["fields"]


def test_acknowledge(api, sev3):
    incident = declare()
    response = api.post(f"{detail(incident)}acknowledge/", {"note": "on it"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["acknowledged_at"] and body["status"] == "triaging"
    assert api.post(f"{detail(incident)}acknowledge/", format="json").status_code == 200  # repeat: no-op


def test_acknowledging_a_closed_incident_is_400(api, sev3):
    incident = drive(declare(), "closed")
    assert_error(api.post(f"{detail(incident)}acknowledge/", {}, format="json"), 400, "invalid")


def test_timeline_notes(api, sev3):
    incident = declare()
    earlier = timezone.now() - timedelta(minutes=10)
    response = api.post(
        f"{detail(incident)}timeline/", {"body": "Saw errors", "occurred_at": earlier.isoformat()}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["kind"] == "note" and response.json()["actor"] == "ada"
    events = api.get(f"{detail(incident)}timeline/").json()["results"]
    assert [e["kind"] for e in events] == ["declared", "note"] or [e["kind"] for e in events] == ["note", "declared"]
    assert {e["body"] for e in events} >= {"Saw errors"}
    assert_error(api.post(f"{detail(incident)}timeline/", {"body": "   "}, format="json"), 400)


def test_roles(api, sev3):
    incident = declare()
    UserFactory(username="cara")
    UserFactory(username="dan")
    url = f"{detail(incident)}roles/"
    first = api.post(url, {"role": "commander", "user": "cara"}, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["user"] == "cara" and first.json()["is_active"]
    api.post(url, {"role": "commander", "user": "dan"}, format="json")
    roles = api.get(url).json()["results"]
    assert [(r["user"], r["is_active"]) for r in roles] == [("cara", False), ("dan", True)]
    assert api.get(detail(incident)).json()["commander"] == "dan"
    error = assert_error(api.post(url, {"role": "overlord", "user": "nobody"}, format="json"), 400)
    assert set(error["fields"]) == {"role", "user"}


def test_not_found_is_404_in_the_error_shape(api):
    assert_error(api.get("/api/v1/incidents/999999/"), 404, "not_found")
    assert_error(api.get("/api/v1/incidents/99999999999999999999999/"), 404)
    assert_error(api.post("/api/v1/incidents/999999/transition/", {"to": "triaging"}, format="json"), 404)
    assert_error(api.get("/api/v1/no-such-thing/"), 404, "not_found")


# ---- services and severities -----------------------------------------------------------------------


def test_services(api):
    ServiceFactory(slug="checkout", name="Checkout")
    created = api.post("/api/v1/services/", {"name": "Search", "slug": "search", "is_public": True}, format="json")
    assert created.status_code == 201, created.content
    assert api.get("/api/v1/services/search/").json()["name"] == "Search"
    assert [s["slug"] for s in api.get("/api/v1/services/").json()["results"]] == ["checkout", "search"]
    assert (
        api.patch("/api/v1/services/search/", {"owning_team": "Discovery"}, format="json").json()["owning_team"]
        == "Discovery"
    )
    error = assert_error(api.post("/api/v1/services/", {"name": "Search", "slug": "bad slug"}, format="json"), 400)
    assert set(error["fields"]) == {"name", "slug"}


def test_severities(api, sev1):
    levels = [s["level"] for s in api.get("/api/v1/severities/").json()["results"]]
    assert levels == [1, 2, 3, 4]  # seeded by a migration
    assert api.get("/api/v1/severities/1/").json()["name"] == "Critical"
    assert_error(api.post("/api/v1/severities/", {"level": 5}, format="json"), 405)


# ---- filters ---------------------------------------------------------------------------------------


@pytest.fixture
def mix(admin_user, sev1, sev2, sev3):
    """Five incidents in different states, an hour apart, the first one the oldest."""
    now = timezone.now()
    checkout, search = ServiceFactory(slug="checkout"), ServiceFactory(slug="search")
    a = declare("Checkout 500s", severity=sev1, services=[checkout], detected_at=now - timedelta(hours=5))
    b = declare("Search slow", severity=sev2, services=[search], detected_at=now - timedelta(hours=4))
    c = declare("Both broken", severity=sev3, services=[checkout, search], detected_at=now - timedelta(hours=3))
    d = declare("Login loop", severity=sev3, summary="users see checkout", detected_at=now - timedelta(hours=2))
    e = declare("Old thing", severity=sev2, detected_at=now - timedelta(hours=1))
    drive(b, "triaging")
    drive(c, "resolved")
    drive(e, "closed")
    services.role_assign(incident=a, role="commander", user=admin_user, actor=admin_user)
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "now": now}


def refs(response):
    assert response.status_code == 200, response.content
    return [i["title"] for i in response.json()["results"]]


def test_default_order_is_newest_detected_first(api, mix):
    assert refs(api.get(LIST)) == ["Old thing", "Login loop", "Both broken", "Search slow", "Checkout 500s"]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status=detected&status=triaging", {"Checkout 500s", "Search slow", "Login loop"}),
        ("status=detected,triaging", {"Checkout 500s", "Search slow", "Login loop"}),
        ("severity=3", {"Both broken", "Login loop"}),
        ("severity=1,2", {"Checkout 500s", "Search slow", "Old thing"}),
        ("service=checkout", {"Checkout 500s", "Both broken"}),
        ("service=checkout,search", {"Checkout 500s", "Search slow", "Both broken"}),
        ("commander=ada", {"Checkout 500s"}),
        ("open=true", {"Checkout 500s", "Search slow", "Login loop"}),
        ("open=false", {"Both broken", "Old thing"}),
        ("search=checkout", {"Checkout 500s", "Login loop"}),
        ("search=broken", {"Both broken"}),
    ],
)
def test_filters(api, mix, query, expected):
    titles = refs(api.get(f"{LIST}?{query}"))
    assert set(titles) == expected and len(titles) == len(expected)


def test_search_by_reference(api, mix):
    reference = mix["c"].reference
    assert refs(api.get(f"{LIST}?search={reference}")) == ["Both broken"]
    assert refs(api.get(f"{LIST}?search={reference.lower()}")) == ["Both broken"]


def test_detected_between(api, mix):
    now = mix["now"]
    after = (now - timedelta(hours=4, minutes=30)).isoformat()
    before = (now - timedelta(hours=1, minutes=30)).isoformat()
    response = api.get(LIST, {"detected_after": after, "detected_before": before})
    assert refs(response) == ["Login loop", "Both broken", "Search slow"]


def test_ordering(api, mix):
    assert refs(api.get(f"{LIST}?ordering=severity")) == [
        "Checkout 500s",
        "Old thing",
        "Search slow",
        "Login loop",
        "Both broken",
    ]
    assert refs(api.get(f"{LIST}?ordering=detected_at"))[0] == "Checkout 500s"
    assert refs(api.get(f"{LIST}?ordering=-reference"))[0] == "Old thing"


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=exploded", "status"),
        ("severity=high", "severity"),
        ("open=maybe", "open"),
        ("detected_after=yesterday", "detected_after"),
        ("ordering=title", "ordering"),
    ],
)
def test_invalid_filter_is_400_naming_it(api, mix, query, field):
    error = assert_error(api.get(f"{LIST}?{query}"), 400, "invalid")
    assert field in error["fields"]


# ---- pagination ------------------------------------------------------------------------------------


def walk(api, url, direction="next"):
    """Follow links from url to the end; returns the pages' titles."""
    pages = []
    while url:
        body = api.get(url).json()
        pages.append([i.get("title", i.get("id")) for i in body["results"]])
        url = body[direction]
    return pages


def test_cursor_pages_through_everything_once_in_order(api, sev1, sev3):
    now = timezone.now() - timedelta(hours=1)
    # Equal detection times and equal severities: the sort key must still be total.
    for n in range(7):
        declare(f"i{n}", severity=sev1 if n % 3 == 0 else sev3, detected_at=now - timedelta(minutes=n // 2))
    for ordering in ("", "severity", "-severity", "detected_at", "-updated_at"):
        expected = refs(api.get(f"{LIST}?page_size=100&ordering={ordering}"))
        pages = walk(api, f"{LIST}?page_size=2&ordering={ordering}")
        assert [len(p) for p in pages] == [2, 2, 2, 1]
        assert [t for page in pages for t in page] == expected, ordering
        # And back again from the last page.
        last = api.get(f"{LIST}?page_size=2&ordering={ordering}")
        while last.json()["next"]:
            last = api.get(last.json()["next"])
        back = walk(api, last.json()["previous"], direction="previous")
        assert back == pages[-2::-1], ordering


def test_page_size_is_1_to_100(api, sev3):
    Incident.objects.bulk_create(Incident(number=5000 + n, title=f"bulk {n}", severity=sev3) for n in range(105))
    first = api.get(f"{LIST}?page_size=100").json()
    assert len(first["results"]) == 100 and first["next"] and first["previous"] is None
    assert len(api.get(first["next"]).json()["results"]) == 5
    assert len(api.get(LIST).json()["results"]) == 25
    assert len(api.get(f"{LIST}?page_size=1").json()["results"]) == 1


@pytest.mark.parametrize("size", ["101", "500", "0", "-1", "nonsense", "", "1.5", "true", "\u0661", "9" * 5000])
def test_page_size_out_of_range_or_malformed_is_400(api, size):
    """The schema says 1 to 100: anything else is refused, not quietly replaced by another size."""
    error = assert_error(api.get(LIST, {"page_size": size}), 400, "invalid")
    assert "page_size" in error["fields"]
    assert_error(api.get("/api/v1/services/", {"page_size": size}), 400, "invalid")


def test_tampered_or_mismatched_cursor_is_400(api, mix):
    cursor = parse_qs(urlsplit(api.get(f"{LIST}?page_size=2").json()["next"]).query)["cursor"][0]
    assert api.get(LIST, {"cursor": cursor}).status_code == 200
    assert_error(api.get(LIST, {"cursor": cursor[:-3] + "abc"}), 400, "invalid")
    assert_error(api.get(LIST, {"cursor": cursor, "ordering": "severity"}), 400)  # made for another order
    assert "cursor" in assert_error(api.get(f"{LIST}?cursor=abc"), 400)["fields"]


# ---- query budgets ---------------------------------------------------------------------------------


def count_queries(api, url):
    with CaptureQueriesContext(connection) as queries:
        response = api.get(url)
    assert response.status_code == 200, response.content
    return len(queries), len(response.json()["results"])


@pytest.fixture
def crowded(admin_user, sev1, sev2):
    """Enough of everything that a page of 100 differs from a page of 1."""
    ServiceFactory.create_batch(5)
    svc = [ServiceFactory(slug=f"svc-{n}") for n in range(3)]
    now = timezone.now() - timedelta(hours=1)
    incidents = [
        declare(f"i{n}", severity=sev1 if n % 2 else sev2, services=svc[: n % 3 + 1], detected_at=now) for n in range(6)
    ]
    for n, incident in enumerate(incidents):
        user = UserFactory(username=f"cmd{n}")
        services.role_assign(incident=incident, role="commander", user=user, actor=admin_user)
        drive(incident, "mitigated", actor=admin_user)
    busy = incidents[0]
    for n in range(5):
        services.timeline_note_add(incident=busy, actor=UserFactory(username=f"scribe{n}"), body=f"note {n}")
        services.role_assign(incident=busy, role="expert", user=UserFactory(username=f"sme{n}"), actor=admin_user)
    return busy


@pytest.mark.parametrize(
    "url",
    [
        LIST,
        f"{LIST}?status=mitigated&service=svc-0,svc-1&ordering=severity&search=i&open=true",
        "/api/v1/services/",
        "/api/v1/severities/",
        "timeline",
        "roles",
    ],
)
def test_every_list_runs_the_same_queries_at_page_size_1_and_100(api, crowded, url):
    if url in ("timeline", "roles"):
        url = f"{detail(crowded)}{url}/"
    api.get(url)  # the key's first use writes last_used_at once
    sep = "&" if "?" in url else "?"
    small, one = count_queries(api, f"{url}{sep}page_size=1")
    large, many = count_queries(api, f"{url}{sep}page_size=100")
    assert one == 1 and many > 1
    assert small == large


def test_incident_list_query_budget(api, crowded, django_assert_max_num_queries):
    api.get(LIST)
    # key lookup, the user's permissions (2), the page, the services of the page
    with django_assert_max_num_queries(5):
        api.get(f"{LIST}?page_size=100")


# ---- the error shape -------------------------------------------------------------------------------


def test_malformed_json_is_400_not_500(api, sev3):
    incident = declare()
    for url in (LIST, detail(incident), f"{detail(incident)}transition/"):
        method = api.patch if url == detail(incident) else api.post
        error = assert_error(method(url, '{"title": "x",', content_type="application/json"), 400, "parse_error")
        assert "JSON" in error["message"]


@pytest.mark.parametrize("body", ["[]", '"text"', "12", "null"])
def test_json_that_is_not_an_object_is_400(api, sev3, body):
    assert_error(api.post(LIST, body, content_type="application/json"), 400, "invalid")


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x", "severity": "1"},
        {"title": "x", "severity": True},
        {"title": "x", "severity": 10**30},
        {"title": "x", "severity": 3, "services": "checkout"},
        {"title": "x", "severity": 3, "services": [{"slug": "a"}]},
        {"title": "x\x00", "severity": 3},
        {"title": ["x"], "severity": 3},
        {"title": "x", "severity": 3, "detected_at": "0000-00-00"},
        {"title": "x", "severity": 3, "recurrence_of": 5},
        {"title": "x", "severity": 3, "recurrence_of": "INC-999999999"},
    ],
)
def test_bad_values_are_400(api, sev3, body):
    assert_error(api.post(LIST, body, format="json"), 400, "invalid")


def test_unsupported_media_type_is_415(api, sev3):
    assert_error(api.post(LIST, "title=x", content_type="text/plain"), 415, "unsupported_media_type")


def test_throttled_per_key_with_retry_after(settings, admin_user, viewer):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "3/min"}}
    first, second = client_for(admin_user), client_for(admin_user)
    for _ in range(3):
        assert first.get(LIST).status_code == 200
    response = first.get(LIST)
    error = assert_error(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60
    assert "throttled" in error["message"].lower()
    assert second.get(LIST).status_code == 200  # each key has its own budget
    assert client_for(viewer).get(LIST).status_code == 200


# ---- the schema and its UI -------------------------------------------------------------------------


def test_schema_documents_auth_and_errors(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    for path, operations in schema["paths"].items():
        assert path.startswith("/api/v1/")
        if path.startswith("/api/v1/integrations/"):
            continue  # alert ingestion: integration keys and senders' answers (tests/incidents/test_integration_schema.py)
        for method, operation in operations.items():
            assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
            assert {"ApiKey": []} in operation["security"]
            error_ref = operation["responses"]["403"]["content"]["application/json"]["schema"]["$ref"]
            assert error_ref == "#/components/schemas/Error"
    transition = schema["paths"]["/api/v1/incidents/{id}/transition/"]["post"]["responses"]
    assert {"409", "412"} <= set(transition)


def test_swagger_ui_uses_no_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()


def test_role_assignment_roles_are_documented_choices(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    roles = {c for c, _ in RoleAssignment.Role.choices}
    enums = [s.get("enum") for s in schema["components"]["schemas"].values()]
    assert any(e and set(e) == roles for e in enums)


# ---- API keys in the admin -------------------------------------------------------------------------


def test_admin_creates_a_key_and_shows_it_once(admin_client, viewer):
    response = admin_client.post("/admin/incidents/apikey/add/", {"name": "Grafana", "user": viewer.pk}, follow=True)
    assert response.status_code == 200
    api_key = ApiKey.objects.get(name="Grafana")
    # Shown once on the page (issue 11: never in the messages cookie).
    ((_name, raw),) = response.context["keys"]
    assert "cannot be shown again" in response.content.decode() and raw not in str(response.cookies)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(LIST).status_code == 200  # acts as the viewer
    assert client.post(LIST, {"title": "x", "severity": 3}, format="json").status_code == 403
    # Not shown again: the change page has the prefix only.
    page = admin_client.get(f"/admin/incidents/apikey/{api_key.pk}/change/").content.decode()
    assert api_key.prefix in page and raw not in page


def test_admin_lists_and_revokes_keys(admin_client, viewer):
    api_key, raw = api_key_create(name="Old exporter", user=viewer)
    changelist = admin_client.get("/admin/incidents/apikey/")
    assert changelist.status_code == 200 and b"Old exporter" in changelist.content
    response = admin_client.post(
        "/admin/incidents/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}, follow=True
    )
    assert response.status_code == 200
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_error(client.get(LIST), 401)

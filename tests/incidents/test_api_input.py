"""No 500 on any input to the REST API: oversized bodies, NUL bytes, deep nesting, huge headers, times
outside 1970-2100. Each is a 4xx in the usual error shape, and nothing is half-written."""

import io
import json

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from incidents import ingestion
from incidents.models import Incident, TimelineEvent
from tests.api import api_client_for
from tests.incidents.factories import ServiceFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

LIST = "/api/v1/incidents/"


@pytest.fixture
def api(db):
    cache.clear()
    user = UserFactory(username="ada", is_superuser=True)
    return api_client_for(user, name="input")


def post_raw(client, path, body, **extra):
    return client.generic("POST", path, body, content_type="application/json", **extra)


def error_of(response, status_code):
    assert response.status_code == status_code, response.content
    body = response.json()
    assert set(body["error"]) == {"code", "message", "fields"} and body["error"]["message"]
    return body["error"]


# ---- size ------------------------------------------------------------------------------------------


def test_a_20_mb_body_is_413_and_creates_nothing(api, sev3):
    body = json.dumps({"title": "x" * (20 * 1024 * 1024), "severity": 3})
    error = error_of(post_raw(api, LIST, body), 413)
    assert error["code"] == "payload_too_large"
    assert not Incident.objects.exists()


def test_the_size_is_checked_from_content_length_before_reading(api, sev3):
    """A client announcing 20 MB is refused before a byte is read or parsed: the body here is tiny."""
    body = b'{"title": "tiny", "severity": 3}'
    response = api.generic(
        "POST",
        LIST,
        content_type="application/json",
        CONTENT_LENGTH=str(20 * 1024 * 1024),
        **{"wsgi.input": io.BytesIO(body)},
    )
    assert error_of(response, 413)["code"] == "payload_too_large"
    assert not Incident.objects.exists()


@override_settings(API_MAX_BODY_BYTES=2048)
def test_the_limit_is_a_setting(api, sev3):
    assert post_raw(api, LIST, json.dumps({"title": "t", "summary": "a" * 1500, "severity": 3})).status_code == 201
    assert error_of(post_raw(api, LIST, json.dumps({"title": "t", "summary": "a" * 2100, "severity": 3})), 413)
    assert Incident.objects.count() == 1


# ---- NUL bytes and invalid text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"title": "db\u0000down", "severity": 3}, "title"),
        ({"title": "ok", "summary": "a\u0000", "severity": 3}, "summary"),
        ({"title": "ok", "severity": 3, "services": ["checkout", "se\u0000arch"]}, "services[1]"),
        ({"title": "ok", "severity": 3, "extra": {"labels": {"env": "\u0000"}}}, "extra.labels.env"),
        ({"title": "ok", "severity": 3, "ke\u0000y": 1}, "body"),
    ],
)
def test_nul_anywhere_in_the_json_is_400_naming_the_field(api, sev3, body, field):
    ServiceFactory(slug="checkout")
    error = error_of(post_raw(api, LIST, json.dumps(body)), 400)
    assert field in error["fields"] and "NUL" in error["message"]
    assert not Incident.objects.exists()


def test_nul_in_a_note_or_a_patch_is_400_and_changes_nothing(api, sev3):
    incident = declare("Checkout down", severity=sev3)
    error = error_of(post_raw(api, f"{LIST}{incident.pk}/timeline/", json.dumps({"body": "x\u0000"})), 400)
    assert "body" in error["fields"]
    response = api.generic(
        "PATCH", f"{LIST}{incident.pk}/", json.dumps({"title": "\u0000"}), content_type="application/json"
    )
    assert "title" in error_of(response, 400)["fields"]
    incident.refresh_from_db()
    assert incident.title == "Checkout down"
    assert not TimelineEvent.objects.filter(kind=TimelineEvent.Kind.NOTE).exists()


def test_a_lone_surrogate_is_400(api, sev3):
    error = error_of(post_raw(api, LIST, '{"title": "a\\ud800b", "severity": 3}'), 400)
    assert "title" in error["fields"]


def test_nul_in_a_query_parameter_is_400(api):
    assert "search" in error_of(api.get(LIST, {"search": "a\x00b"}), 400)["fields"]


# ---- nesting, headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_json_nested_thousands_deep_is_400(api, sev3, depth):
    body = '{"title": "deep", "severity": 3, "x": ' + "[" * depth + "]" * depth + "}"
    assert error_of(post_raw(api, LIST, body), 400)["code"] == "too_deep"
    assert not Incident.objects.exists()


def test_ordinary_nesting_is_fine(api, sev3):
    body = {"title": "fine", "severity": 3, "x": [[[{"a": [1]}]]]}
    assert post_raw(api, LIST, json.dumps(body)).status_code == 201


def test_a_5000_digit_if_match_is_412_not_500(api, sev3):
    incident = declare("Checkout down", severity=sev3)
    huge = f'"{incident.pk}-{"9" * 5000}"'
    for response in (
        api.patch(f"{LIST}{incident.pk}/", {"title": "new"}, HTTP_IF_MATCH=huge),
        api.post(f"{LIST}{incident.pk}/acknowledge/", {}, HTTP_IF_MATCH=huge),
        api.patch(f"{LIST}{incident.pk}/", {"title": "new"}, HTTP_IF_MATCH=f'"{"1" * 5000}-1"'),
    ):
        assert error_of(response, 412)["code"] == "stale"
    incident.refresh_from_db()
    assert incident.title == "Checkout down" and incident.acknowledged_at is None


# ---- times -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2101-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00"]
)
def test_times_outside_1970_to_2100_are_400_everywhere(api, sev3, when):
    incident = declare("Checkout down", severity=sev3)
    assert "detected_at" in error_of(api.post(LIST, {"title": "x", "severity": 3, "detected_at": when}), 400)["fields"]
    assert "started_at" in error_of(api.post(LIST, {"title": "x", "severity": 3, "started_at": when}), 400)["fields"]
    patch = api.patch(f"{LIST}{incident.pk}/", {"detected_at": when})
    assert "detected_at" in error_of(patch, 400)["fields"]
    note = api.post(f"{LIST}{incident.pk}/timeline/", {"body": "earlier", "occurred_at": when})
    assert "occurred_at" in error_of(note, 400)["fields"]
    report = api.post("/api/v1/customer-reports/", {"customer_id": "c1", "text": "down", "received_at": when})
    assert "received_at" in error_of(report, 400)["fields"]
    assert "detected_after" in error_of(api.get(LIST, {"detected_after": when}), 400)["fields"]
    assert "since" in error_of(api.get("/api/v1/metrics/", {"since": when}), 400)["fields"]
    assert Incident.objects.count() == 1


def test_the_edges_of_the_range_are_accepted(api, sev3):
    body = {"title": "edge", "severity": 3, "started_at": "1970-01-01T00:00:00Z", "detected_at": "1970-01-01T00:00:00Z"}
    assert api.post(LIST, body).status_code == 201
    assert api.get(LIST, {"detected_before": "2100-12-31T23:59:59Z"}).status_code == 200


def test_a_stored_year_1_can_no_longer_break_metrics(api, sev3):
    """Today one such detected_at made /metrics/ answer 400 for everyone; now it cannot be stored."""
    api.post(LIST, {"title": "typo", "severity": 3, "detected_at": "0001-01-01T00:00:00Z"})
    assert api.get("/api/v1/metrics/").status_code == 200


@pytest.mark.parametrize("when", ["1969-07-20T20:17:00Z", "2101-01-01T00:00:00Z", "0002-01-01T00:00:00Z"])
def test_ingestion_refuses_times_outside_the_range(sev3, when):
    ingestion.integration_cache_clear()
    _integration, key = ingestion.integration_create(kind="alertmanager", name="am", services=[])
    body = {
        "version": "4",
        "groupKey": "g1",
        "status": "firing",
        "receiver": "incidents",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighLatency", "severity": "warning"},
                "annotations": {},
                "startsAt": when,
                "endsAt": "0001-01-01T00:00:00Z",  # Alertmanager's zero time: not set
                "fingerprint": "abc",
            }
        ],
    }
    response = APIClient().post(
        "/api/v1/integrations/alertmanager/", body, format="json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 400, response.content
    assert "out of range" in json.dumps(response.json())
    assert not Incident.objects.exists()


# ---- 404 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_api_url_is_a_json_404_also_with_debug_on(api, settings, debug):
    settings.DEBUG = debug
    for path in ("/api/v1/nothing-here/", f"{LIST}%C2%84/", "/api/v1/updates/abc/submit/"):
        response = api.get(path)
        assert response["Content-Type"].startswith("application/json")
        assert error_of(response, 404)["code"] == "not_found"

"""Idempotency-Key on the API's POST endpoints: a retry gets the first answer and creates nothing."""

import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from incidents import services
from incidents.api.keys import api_key_create
from incidents.models import CustomerReport, IdempotencyKey, Incident, Service, Severity, TimelineEvent
from tests.incidents.factories import SeverityFactory, UserFactory, declare

LIST = "/api/v1/incidents/"
BODY = {"title": "Checkout down", "severity": 3}


def client_with(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def client_for(user):
    _key, raw = api_key_create(name=f"{user.username} {user.api_keys.count()}", user=user)
    return client_with(raw)


@pytest.fixture
def ada(db):
    cache.clear()
    SeverityFactory(level=3)
    return UserFactory(username="ada", is_superuser=True)


@pytest.fixture
def api(ada):
    return client_for(ada)


@pytest.mark.django_db
def test_a_retry_with_the_same_key_replays_the_first_answer(api):
    first = api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="declare-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    again = api.post(
        LIST, {"severity": 3, "title": "Checkout down"}, HTTP_IDEMPOTENCY_KEY="declare-1"
    )  # keys reordered
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again["Location"] == first["Location"] and again["ETag"] == first["ETag"]
    assert Incident.objects.count() == 1
    assert TimelineEvent.objects.filter(kind=TimelineEvent.Kind.DECLARED).count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422_and_creates_nothing(api):
    assert api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    response = api.post(LIST, {**BODY, "title": "Search down"}, HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    other_endpoint = api.post("/api/v1/services/", {"name": "Search", "slug": "search"}, HTTP_IDEMPOTENCY_KEY="k")
    assert other_endpoint.status_code == 422
    assert Incident.objects.count() == 1 and not Service.objects.exists()


@pytest.mark.django_db
def test_without_a_key_every_post_creates(api):
    api.post(LIST, BODY)
    api.post(LIST, BODY)
    assert Incident.objects.count() == 2 and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_keys_are_per_api_key(ada):
    one, two = client_for(ada), client_for(UserFactory(username="bob", is_superuser=True))
    assert one.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="same").status_code == 201
    assert two.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="same").status_code == 201
    assert "Idempotent-Replayed" not in two.post(LIST, {**BODY, "title": "b"}, HTTP_IDEMPOTENCY_KEY="other")
    assert Incident.objects.count() == 3


@pytest.mark.django_db
def test_keys_expire_after_24_hours_and_are_pruned(api):
    assert api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="old").status_code == 201
    api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="stale-other")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    again = api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert Incident.objects.count() == 3
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["old"]  # the other expired one is gone


@pytest.mark.django_db
def test_a_refused_request_keeps_no_key(api):
    """After a 4xx nothing was done: the same key may be used again once the request is put right."""
    assert api.post(LIST, {"title": "no severity"}, HTTP_IDEMPOTENCY_KEY="fix-me").status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="fix-me").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "a" * 256, "with space", "tab\there"])
def test_a_malformed_key_is_400(api, key):
    response = api.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert not Incident.objects.exists()


@pytest.mark.django_db
def test_every_kind_of_create_honours_the_key(api, ada):
    incident = declare("Checkout down", severity=Severity.objects.get(level=3))
    posts = [
        (
            f"{LIST}{incident.pk}/timeline/",
            {"body": "Rolled back"},
            lambda: TimelineEvent.objects.filter(kind="note").count(),
        ),
        ("/api/v1/services/", {"name": "Search", "slug": "search"}, lambda: Service.objects.count()),
        ("/api/v1/customer-reports/", {"customer_id": "c1", "text": "down"}, lambda: CustomerReport.objects.count()),
        (
            f"{LIST}{incident.pk}/customer-reports/",
            {"customer_id": "c2", "text": "x"},
            lambda: CustomerReport.objects.count(),
        ),
        ("/api/v1/updates/", {"incident": incident.reference, "audience": "internal", "body": "Working on it"}, None),
    ]
    for n, (path, body, count) in enumerate(posts):
        first = api.post(path, body, HTTP_IDEMPOTENCY_KEY=f"create-{n}")
        assert 200 <= first.status_code < 300, (path, first.content)
        before = count() if count else None
        again = api.post(path, body, HTTP_IDEMPOTENCY_KEY=f"create-{n}")
        assert again.status_code == first.status_code and again["Idempotent-Replayed"] == "true", path
        assert again.content == first.content
        if count:
            assert count() == before, path


@pytest.mark.django_db
def test_the_schema_documents_the_header_on_every_post(api):
    schema = api.get("/api/schema/?format=json").json()
    posts = [(path, op) for path, item in schema["paths"].items() for method, op in item.items() if method == "post"]
    api_posts = [(path, op) for path, op in posts if not path.startswith("/api/v1/integrations/")]
    assert len(api_posts) > 10
    for path, op in api_posts:
        assert "Idempotency-Key" in [p["name"] for p in op.get("parameters", [])], path
        assert "422" in op["responses"], path


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # keeps the migrated rows (groups, content types) for the tests after it
def test_two_concurrent_requests_with_one_key_create_one_incident(ada, monkeypatch):
    """The second request waits on the key's unique index while the first is declaring, then replays it."""
    from incidents.api import views

    # The view declares through one service function; whichever it is, slow it down.
    target = next(name for name in ("incident_declare_by_person", "incident_declare") if hasattr(services, name))
    original = getattr(services, target)

    def slow(*args, **kwargs):
        incident = original(*args, **kwargs)
        time.sleep(0.5)  # hold the transaction open while the other request arrives
        return incident

    monkeypatch.setattr(views.services, target, slow)
    _key, raw = api_key_create(name="race", user=ada)
    clients = [client_with(raw), client_with(raw)]  # one API key, two connections
    barrier, results = threading.Barrier(2), []

    def post(client):
        try:
            barrier.wait(timeout=5)
            results.append(client.post(LIST, BODY, HTTP_IDEMPOTENCY_KEY="race"))
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r.status_code for r in results) == [201, 201]
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(r.get("Idempotent-Replayed") == "true" for r in results) == 1
    assert Incident.objects.count() == 1

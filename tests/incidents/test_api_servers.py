"""The create endpoints through real WSGI servers: Django's development server (`make run`) and gunicorn.

The test client hands headers to nobody, so it cannot see what a server refuses: a Location that is a
str subclass made wsgiref assert (500) after the incident was created, and a client that retried made
duplicates. The servers run in processes of their own (tests/incidents/live_server.py).
"""

import json

import pytest

from tests.incidents.live_server import request, seeded_sqlite, serving


@pytest.fixture(scope="module")
def server_env():
    with seeded_sqlite() as env_and_key:
        yield env_and_key


@pytest.fixture(params=["runserver", "gunicorn"])
def server(request, server_env):
    env, key = server_env
    with serving(request.param, env) as base:
        yield request.param, base, key


def creates(suffix):
    """Every create endpoint, with a body it accepts."""
    return [
        ("/api/v1/incidents/", {"title": f"Checkout down {suffix}", "severity": 3, "services": ["checkout"]}),
        ("/api/v1/incidents/1/timeline/", {"body": f"Rolled back {suffix}"}),
        ("/api/v1/incidents/1/roles/", {"role": "expert", "user": "ada"}),
        ("/api/v1/incidents/1/customer-reports/", {"customer_id": f"acme-{suffix}", "text": "Checkout fails"}),
        ("/api/v1/customer-reports/", {"customer_id": f"globex-{suffix}", "text": "Slow"}),
        ("/api/v1/services/", {"name": f"Search {suffix}", "slug": f"search-{suffix}"}),
        ("/api/v1/updates/", {"incident": "INC-1001", "audience": "internal", "body": f"Investigating {suffix}"}),
        ("/api/v1/action-items/", {"incident": "INC-1001", "title": f"Add an alert {suffix}"}),
        ("/api/v1/subscribers/", {"channel": "email", "email": f"ops-{suffix}@example.com"}),
    ]


def test_create_endpoints_answer_201_with_a_plain_location(server):
    name, base, key = server
    for path, body in creates(name):
        status, headers, content = request(base, key, "POST", path, body)
        assert status in (200, 201), (name, path, status, content[:500])
        if status == 201 and "Location" in headers:
            location = headers["Location"]
            assert location.startswith(f"{base}/api/v1/"), (path, location)
            assert request(base, key, "GET", location[len(base) :])[0] == 200


def test_a_retried_declare_through_the_server_creates_one_incident(server):
    name, base, key = server
    body = {"title": f"Retried {name}", "severity": 3}
    first = request(base, key, "POST", "/api/v1/incidents/", body, {"Idempotency-Key": f"retry-{name}"})
    again = request(base, key, "POST", "/api/v1/incidents/", body, {"Idempotency-Key": f"retry-{name}"})
    assert first[0] == again[0] == 201
    assert again[1].get("Idempotent-Replayed") == "true"
    assert json.loads(first[2])["id"] == json.loads(again[2])["id"]
    status, _headers, content = request(base, key, "GET", f"/api/v1/incidents/?search=Retried+{name}")
    assert status == 200 and len(json.loads(content)["results"]) == 1

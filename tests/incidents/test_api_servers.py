"""The create endpoints through real WSGI servers: Django's development server (`make run`) and gunicorn.

The test client hands headers to nobody, so it cannot see what a server refuses: a Location that is a
str subclass made wsgiref assert (500) after the incident was created, and a client that retried made
duplicates. Each server runs in its own process on a port of its own, against a SQLite file the test
migrates, so the test is the same on SQLite and PostgreSQL runs.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
from django.contrib.auth import get_user_model
from incidents.api.keys import api_key_create
from incidents.models import Severity, Service
from tests.incidents.factories import SeverityFactory
from incidents import services
user = get_user_model().objects.create_superuser("ada", "ada@example.com", "pw")
SeverityFactory(level=3)
Service.objects.create(name="Checkout", slug="checkout")
incident = services.incident_declare(title="Seed", severity=Severity.objects.get(level=3), actor=user)
print(api_key_create(name="servers", user=user)[1])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    # In memory-backed /dev/shm where there is one: migrating a SQLite file on disk is mostly fsync.
    shm = Path("/dev/shm")
    folder = (
        Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("s")
    )
    db = folder / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "CELERY_BROKER_URL": "memory://",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "DJANGO_DEBUG": "true",
        "API_THROTTLE_RATE": "10000/min",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=300)
    out = subprocess.run(
        [*manage, "shell", "-c", SETUP], env=env, cwd=ROOT, check=True, timeout=120, capture_output=True, text=True
    )
    yield env, out.stdout.strip().splitlines()[-1]
    shutil.rmtree(folder, ignore_errors=True)


def wait_for(port, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")


def request(base, key, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


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


@pytest.fixture(params=["runserver", "gunicorn"])
def server(request, server_env):
    env, key = server_env
    port = free_port()
    if request.param == "runserver":
        command = [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
    else:
        command = [
            sys.executable, "-m", "gunicorn", "incidents_site.wsgi", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "--timeout", "60",
        ]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(port, process)
        yield request.param, f"http://127.0.0.1:{port}", key
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


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

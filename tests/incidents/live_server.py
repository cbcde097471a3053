"""Real servers for API tests: a SQLite file the test migrates and seeds, and Django's development server or
gunicorn serving it in a process of their own on a free port (so the test is the same on SQLite and
PostgreSQL runs). Used by test_api_servers and test_api_schema."""

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
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def seeded_sqlite(**extra_env):
    """A migrated, seeded SQLite file and the environment to serve it: yields (env, API key of a superuser)."""
    # In memory-backed /dev/shm where there is one: migrating a SQLite file on disk is mostly fsync.
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
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
        **extra_env,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    try:
        subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=300)
        out = subprocess.run(
            [*manage, "shell", "-c", SETUP], env=env, cwd=ROOT, check=True, timeout=120, capture_output=True, text=True
        )
        yield env, out.stdout.strip().splitlines()[-1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(port, process, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the server exited: {log.read()[-5000:]}")
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


@contextmanager
def serving(kind, env, workers=1, gunicorn_args=()):
    """Django's development server ("runserver") or gunicorn on a free port: yields its base URL."""
    port = free_port()
    if kind == "runserver":
        command = [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
    else:
        command = [
            sys.executable, "-m", "gunicorn", "incidents_site.wsgi", "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--timeout", "120", *gunicorn_args,
        ]  # fmt: skip
    # Its log goes to a file: a pipe nobody reads fills up and blocks the server mid-request.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()

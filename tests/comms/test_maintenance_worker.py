"""Maintenance notices with real workers on a real broker: each subscriber is told exactly once.

Needs a real broker (CI: CELERY_BROKER_URL=redis://…) and a database the workers share with the
test (PostgreSQL); skips and says why otherwise.
"""

import os
import subprocess
import sys
import time
from datetime import timedelta
from email import message_from_string
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from comms import tasks
from comms.models import MaintenanceNotice
from incidents_site.celery import app
from tests.comms.factories import SubscriberFactory, maintenance_scheduled
from tests.incidents.factories import ServiceFactory

ROOT = Path(__file__).resolve().parents[2]
BROKER = settings.CELERY_BROKER_URL
needs_broker = pytest.mark.skipif(
    BROKER.startswith(("filesystem://", "memory://")),
    reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does)",
)
SUBSCRIBERS = 40


def _database_url():
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_worker(name, env):
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "incidents_site", "worker", "--pool=solo", "-l", "WARNING",
         "-n", f"{name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # nobody reads a pipe: a chatty worker must not block on it
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _recipients(folder):
    found = []
    for path in Path(folder).iterdir():
        for chunk in path.read_text().split("-" * 79):
            if chunk.strip():
                found.append(message_from_string(chunk.strip())["To"])
    return found


@needs_broker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_sweeps_on_two_workers_tell_each_subscriber_once(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the workers need a database shared with the test: set DATABASE_URL=postgres://…")
    website = ServiceFactory(name="Website", slug="website", is_public=True)
    other = ServiceFactory(name="Public API", slug="api", is_public=True)
    told = [SubscriberFactory(email=f"told{n}@example.com") for n in range(SUBSCRIBERS)]
    SubscriberFactory(email="elsewhere@example.com", services=[other])  # subscribed to another service only
    maintenance = maintenance_scheduled(services=[website], starts_in=timedelta(hours=3))

    outbox = tmp_path / "mail"
    outbox.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),  # the test database, where the rows above are committed
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "EMAIL_URL": f"filemail:///{outbox}",
    }
    app.control.purge()
    workers = [_start_worker("maintenance-a", env), _start_worker("maintenance-b", env)]
    try:
        deadline = time.monotonic() + 90
        replies = []
        while len(replies) < 2 and time.monotonic() < deadline and all(w.poll() is None for w in workers):
            replies = [r for r in app.control.ping(timeout=1.0) or [] if any(str(os.getpid()) in k for k in r)]
        assert len(replies) == 2, "the two workers did not come up"
        tasks.maintenance_sweep.delay()  # as beat would, twice at once: one plans, both may send
        tasks.maintenance_sweep.delay()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if MaintenanceNotice.objects.filter(maintenance=maintenance, status="sent").count() == SUBSCRIBERS:
                break
            time.sleep(0.5)
        tasks.maintenance_notices_send.delay(maintenance.pk)  # a duplicate message, late
        time.sleep(3)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    assert sorted(_recipients(outbox)) == sorted(s.email for s in told)  # each exactly once, nobody else
    assert MaintenanceNotice.objects.filter(maintenance=maintenance, status="sent").count() == SUBSCRIBERS

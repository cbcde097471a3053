"""Reminders under real concurrency: two workers on a real broker, and racing claims on PostgreSQL.

The worker test needs a real broker (CI: CELERY_BROKER_URL=redis://127.0.0.1:6379/0) and a database
the workers can share with the test (PostgreSQL); it skips and says why otherwise.
"""

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from email import message_from_string
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core import mail
from django.db import connection, connections
from django.utils import timezone

from incidents import services as incident_services
from incidents_site.celery import app
from postmortems import services, tasks
from postmortems.models import ActionItemReminder
from tests.incidents.factories import UserFactory, declare
from tests.postmortems.factories import action_item

ROOT = Path(__file__).resolve().parents[2]
BROKER = settings.CELERY_BROKER_URL
needs_broker = pytest.mark.skipif(
    BROKER.startswith("filesystem://") or BROKER.startswith("memory://"),
    reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does)",
)
transactional = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def days(n):
    return timezone.localdate() + timedelta(days=n)


def make_world():
    """Three owners with one item each (due soon, overdue, long overdue) and a commander."""
    owners = [UserFactory(username=f"owner{n}", email=f"owner{n}@example.com") for n in range(3)]
    commander = UserFactory(username="cmdr", email="cmdr@example.com")
    incident = declare("Checkout errors")
    incident_services.role_assign(incident=incident, role="commander", user=commander, actor=commander)
    for owner, due in zip(owners, (days(1), days(-2), days(-10)), strict=True):
        action_item(incident, title=f"Item of {owner.username}", owner=owner, due_date=due)
    return owners, commander


def database_url():
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(name, env):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "incidents_site",
            "worker",
            "--pool=solo",
            "-l",
            "WARNING",
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(workers):
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def queue_empty():
    """Nothing waiting or in flight on the Redis broker (the default queue and unacked messages)."""
    import redis

    client = redis.Redis.from_url(BROKER)
    return client.llen("celery") == 0 and client.hlen("unacked") == 0


def recipients(folder):
    """The To: of every message the workers' file backend wrote (one file per connection)."""
    found = []
    for path in Path(folder).iterdir():
        separator = "-" * 79
        for chunk in path.read_text().split(separator):
            if chunk.strip():
                found.append(message_from_string(chunk.strip())["To"])
    return found


@needs_broker
@transactional
def test_sweep_run_twice_on_two_workers_sends_each_owner_exactly_one_email(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the workers need a database shared with the test: set DATABASE_URL=postgres://…")
    owners, commander = make_world()
    outbox = tmp_path / "mail"
    outbox.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),  # the test database, where make_world's rows are committed
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "EMAIL_URL": f"filemail:///{outbox}",  # django-environ drops one slash: keep the path absolute
    }
    app.control.purge()
    workers = [start_worker("reminders-a", env), start_worker("reminders-b", env)]
    try:
        deadline = time.monotonic() + 90
        replies = []
        while len(replies) < 2 and time.monotonic() < deadline and all(w.poll() is None for w in workers):
            replies = [r for r in app.control.ping(timeout=1.0) or [] if any(str(os.getpid()) in k for k in r)]
        assert len(replies) == 2, "the two workers did not come up"
        # Twice, at the same time: each sweep plans and enqueues a send per reminder.
        tasks.action_item_reminders_sweep.delay()
        tasks.action_item_reminders_sweep.delay()
        while time.monotonic() < deadline:
            rows = list(ActionItemReminder.objects.values_list("status", flat=True))
            if len(rows) == 4 and set(rows) == {"sent"} and queue_empty():
                break
            time.sleep(0.5)
        time.sleep(1)  # a late duplicate send would land now
    finally:
        stop(workers)
    assert sorted(ActionItemReminder.objects.values_list("kind", flat=True)) == [
        "due_soon",
        "escalation",
        "overdue",
        "overdue",
    ]
    assert set(ActionItemReminder.objects.values_list("status", flat=True)) == {"sent"}
    sent = sorted(recipients(outbox))
    assert sent == sorted([*(o.email for o in owners), commander.email])


@pytest.mark.postgres
@transactional
def test_racing_sweeps_and_sends_claim_each_reminder_once():
    make_world()
    barrier = threading.Barrier(4)
    errors = []

    def run():
        try:
            barrier.wait(timeout=10)
            for reminder_id in services.action_item_reminders_plan():
                services.action_item_reminder_send(reminder_id=reminder_id)
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert ActionItemReminder.objects.count() == 4
    assert set(ActionItemReminder.objects.values_list("status", flat=True)) == {"sent"}
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        ["owner0@example.com", "owner1@example.com", "owner2@example.com", "cmdr@example.com"]
    )

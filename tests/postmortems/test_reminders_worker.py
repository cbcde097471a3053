"""Reminders under real concurrency: two workers on a real broker, and racing claims on PostgreSQL.

The worker test needs a real broker (CI: CELERY_BROKER_URL=redis://127.0.0.1:6379/0) and a database
the workers can share with the test (PostgreSQL); it skips and says why otherwise.
"""

import threading
import time
from datetime import timedelta
from email import message_from_string
from pathlib import Path

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
from tests.worker import running_workers, worker_env

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
    app.control.purge()
    # django-environ drops one slash of filemail:///: keep the path absolute.
    with running_workers("reminders-a", "reminders-b", env=worker_env(EMAIL_URL=f"filemail:///{outbox}")):
        deadline = time.monotonic() + 90
        # Twice, at the same time: each sweep plans and enqueues a send per reminder.
        tasks.action_item_reminders_sweep.delay()
        tasks.action_item_reminders_sweep.delay()
        while time.monotonic() < deadline:
            rows = list(ActionItemReminder.objects.values_list("status", flat=True))
            if len(rows) == 4 and set(rows) == {"sent"} and queue_empty():
                break
            time.sleep(0.5)
        time.sleep(1)  # a late duplicate send would land now
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

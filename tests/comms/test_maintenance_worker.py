"""Maintenance notices with real workers on a real broker: each subscriber is told exactly once.

Needs a real broker (CI: CELERY_BROKER_URL=redis://…) and a database the workers share with the
test (PostgreSQL); skips and says why otherwise.
"""

import time
from datetime import timedelta
from email import message_from_string
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from comms import tasks
from comms.models import MaintenanceNotice
from incidents_site.celery import app
from tests.comms.factories import SubscriberFactory, maintenance_scheduled
from tests.incidents.factories import ServiceFactory
from tests.worker import running_workers, worker_env

BROKER = settings.CELERY_BROKER_URL
needs_broker = pytest.mark.skipif(
    BROKER.startswith(("filesystem://", "memory://")),
    reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does)",
)
SUBSCRIBERS = 40


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
    app.control.purge()
    with running_workers("maintenance-a", "maintenance-b", env=worker_env(EMAIL_URL=f"filemail:///{outbox}")):
        tasks.maintenance_sweep.delay()  # as beat would, twice at once: one plans, both may send
        tasks.maintenance_sweep.delay()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if MaintenanceNotice.objects.filter(maintenance=maintenance, status="sent").count() == SUBSCRIBERS:
                break
            time.sleep(0.5)
        tasks.maintenance_notices_send.delay(maintenance.pk)  # a duplicate message, late
        time.sleep(3)
    assert sorted(_recipients(outbox)) == sorted(s.email for s in told)  # each exactly once, nobody else
    assert MaintenanceNotice.objects.filter(maintenance=maintenance, status="sent").count() == SUBSCRIBERS

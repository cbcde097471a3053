"""Outbound webhooks through a real Celery worker on a real broker (CI: Redis and PostgreSQL).

A committed change is delivered by the worker to a local receiver; a 500 is retried (countdown)
and then delivered, with the same webhook-id and a valid signature each time.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from comms.models import WebhookDelivery
from incidents_site.celery import app
from tests.comms.factories import WebhookEndpointFactory
from tests.comms.webhook_receiver import start_receiver, verify
from tests.incidents.factories import declare

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(
        settings.CELERY_BROKER_URL.startswith("filesystem://"),
        reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does)",
    ),
    pytest.mark.postgres,  # the worker (another process) must see the test database
]


@pytest.fixture
def worker():
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "WEBHOOK_RETRY_BASE_SECONDS": "1",
    }
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    name = f"webhooks-test-{os.getpid()}"
    process = subprocess.Popen(
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
            f"{name}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            replies = app.control.ping(timeout=1.0) or []
            if any(name in worker_name for reply in replies for worker_name in reply):
                break
        else:
            pytest.fail(f"the worker did not come up on {settings.CELERY_BROKER_URL}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_delivers_and_retries(worker):
    receiver = start_receiver()
    try:
        receiver.script = [500]
        endpoint = WebhookEndpointFactory(url=receiver.url, allow_private_destination=True, events=["incident.created"])
        incident = declare("Checkout down")  # commits: the signal creates the delivery and enqueues it

        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        deadline = time.monotonic() + 60
        while delivery.state != WebhookDelivery.State.DELIVERED and time.monotonic() < deadline:
            time.sleep(0.3)
            delivery.refresh_from_db()
        assert delivery.state == WebhookDelivery.State.DELIVERED, (delivery.state, delivery.error)
        assert delivery.attempts == 2 and delivery.response_status_code == 200
        assert len(receiver.requests) == 2
        assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.event_id}
        assert all(verify(endpoint.secret, r.headers, r.body) for r in receiver.requests)
        assert incident.reference.encode() in receiver.requests[-1].body
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()

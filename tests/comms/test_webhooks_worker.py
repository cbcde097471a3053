"""Outbound webhooks through a real Celery worker on a real broker (CI: Redis and PostgreSQL).

A committed change is delivered by the worker to a local receiver; a 500 is retried (countdown)
and then delivered, with the same webhook-id and a valid signature each time.
"""

import time

import pytest
from django.conf import settings

from comms.models import WebhookDelivery
from tests.comms.factories import WebhookEndpointFactory
from tests.comms.webhook_receiver import start_receiver, verify
from tests.incidents.factories import declare
from tests.worker import running_workers, worker_env

pytestmark = [
    pytest.mark.skipif(
        settings.CELERY_BROKER_URL.startswith("filesystem://"),
        reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does)",
    ),
    pytest.mark.postgres,  # the worker (another process) must see the test database
]


@pytest.fixture
def worker():
    with running_workers("webhooks-test", env=worker_env(WEBHOOK_RETRY_BASE_SECONDS=1), quiet=False) as [process]:
        yield process


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

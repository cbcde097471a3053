"""Delivery faults (issue 12): a malformed webhook answer fails only its own delivery; a crashed
worker's deliveries are taken over within minutes with the production defaults."""

import socket
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from comms import services
from comms.models import Delivery, Update
from tests.comms.factories import SubscriberFactory, UpdateFactory
from tests.incidents.factories import ServiceFactory, declare

pytestmark = pytest.mark.django_db


class GarbageServer:
    """A local TCP server that answers every request with bytes that are not HTTP."""

    def __init__(self, answer=b"HELLO THERE\r\n\r\n"):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    self.requests += 1
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        self.thread.join(timeout=10)


def _published_with_deliveries(subscribers):
    checkout = ServiceFactory(slug="checkout", name="Checkout", is_public=True)
    for kwargs in subscribers:
        SubscriberFactory(**kwargs)
    update = UpdateFactory(incident=declare("Checkout errors", services=[checkout]))
    Update.objects.filter(pk=update.pk).update(status=Update.Status.PUBLISHED, published_at=timezone.now())
    update.refresh_from_db()
    with transaction.atomic():
        services.update_deliveries_create(update=update)
    return update


def test_a_malformed_webhook_answer_fails_that_delivery_and_the_rest_of_the_chunk_is_sent(settings):
    settings.COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE = True
    with GarbageServer() as server:
        update = _published_with_deliveries(
            [
                {"channel": "webhook", "email": "", "url": f"http://127.0.0.1:{server.port}/hook"},
                {"email": "ana@example.com"},
                {"email": "bo@example.com"},
            ]
        )
        ids = list(Delivery.objects.filter(update=update).order_by("-channel", "id").values_list("pk", flat=True))
        retries = services.deliveries_send(delivery_ids=ids)
    states = dict(Delivery.objects.filter(update=update).values_list("address", "state"))
    hook = Delivery.objects.get(update=update, channel="webhook")
    assert server.requests == 1
    assert states["ana@example.com"] == states["bo@example.com"] == "sent"
    assert sorted(m.to[0] for m in mail.outbox) == ["ana@example.com", "bo@example.com"]
    assert hook.state == "pending" and hook.claimed_at is None  # not stuck in "sending"
    assert "BadStatusLine" in hook.last_error
    assert retries == [(hook.pk, 1)]


def test_an_unforeseen_error_on_one_delivery_is_retried_and_spares_the_others():
    _published_with_deliveries([{"email": "ana@example.com"}, {"email": "bo@example.com"}])
    real = services.deliveries._email_for

    def broken_for_ana(delivery, context):
        if delivery.address == "ana@example.com":
            raise KeyError("a template bug")
        return real(delivery, context)

    with mock.patch("comms.services.deliveries._email_for", side_effect=broken_for_ana):
        retries = services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    ana = Delivery.objects.get(address="ana@example.com")
    assert ana.state == "pending" and "KeyError" in ana.last_error and retries == [(ana.pk, 1)]
    assert Delivery.objects.get(address="bo@example.com").state == "sent"


def test_with_the_default_settings_a_crashed_workers_deliveries_are_retried_within_minutes(settings):
    """Production defaults (not overridden): claims of a dead worker expire after two minutes, and
    pending messages it had reserved are re-enqueued once no worker has claimed anything for as long."""
    for name in ("COMMS_DELIVERY_CLAIM_TIMEOUT", "COMMS_DELIVERY_REQUEUE_AFTER", "COMMS_DELIVERY_CLAIM_HEARTBEAT"):
        assert not hasattr(settings, name) or getattr(settings, name) == {
            "COMMS_DELIVERY_CLAIM_TIMEOUT": 120,
            "COMMS_DELIVERY_REQUEUE_AFTER": 3600,
            "COMMS_DELIVERY_CLAIM_HEARTBEAT": 30,
        }[name]
    update = _published_with_deliveries([{"email": f"r{n}@example.com"} for n in range(4)])
    crash = timezone.now()
    ids = list(Delivery.objects.filter(update=update).order_by("id").values_list("pk", flat=True))
    # The dead worker had claimed two (sending) and reserved two more messages (pending, enqueued).
    Delivery.objects.filter(pk__in=ids[:2]).update(state="sending", claimed_at=crash, enqueued_at=crash)
    Delivery.objects.filter(pk__in=ids[2:]).update(enqueued_at=crash)
    with mock.patch("comms.services.deliveries.task_enqueue", return_value=True) as enqueue:
        assert services.deliveries_sweep(now=crash + timedelta(seconds=60)) == 0  # may still be alive
        assert services.deliveries_sweep(now=crash + timedelta(minutes=3)) == 4
    assert sorted(enqueue.call_args.args[1]) == ids


def test_a_live_worker_renews_its_claim_so_a_slow_chunk_is_not_taken_over(settings):
    settings.COMMS_DELIVERY_CLAIM_HEARTBEAT = 0  # renew before every send
    update = _published_with_deliveries([{"email": f"r{n}@example.com"} for n in range(3)])
    ids = list(Delivery.objects.filter(update=update).order_by("id").values_list("pk", flat=True))
    seen = []
    real = services.deliveries._send_one

    def watching(delivery, context, connection):
        seen.append(Delivery.objects.get(pk=ids[-1]).claimed_at)
        return real(delivery, context, connection)

    with mock.patch("comms.services.deliveries._send_one", side_effect=watching):
        assert services.deliveries_send(delivery_ids=ids) == []
    assert seen[0] < seen[1] < seen[2]  # the last row's claim was renewed while the chunk ran
    assert Delivery.objects.filter(update=update, state="sent").count() == 3 and len(mail.outbox) == 3

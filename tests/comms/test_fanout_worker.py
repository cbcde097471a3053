"""Fan-out with a real Celery worker on a real broker (Redis) and PostgreSQL.

* A worker SIGKILLed mid-fan-out: every recipient gets the update; the killed worker's claims are
  taken over after the claim timeout and sent rows are never sent again. The one thing no design
  closes is a message handed to the mail backend whose "sent" mark the kill prevented: it goes again,
  with the same Message-ID (at most one per killed pool process; the test counts them).
* Redis stopped at publish time: the update and its deliveries are saved; the sweep sends them once
  Redis is back.

Needs CELERY_BROKER_URL=redis://… (CI sets it) and DATABASE_URL=postgres://… (the worker process
must reach the test database); skipped otherwise.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from comms import services
from comms.models import Delivery, Subscriber, Update
from incidents_site.celery import app
from tests.comms.factories import UpdateFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare
from tests.worker import ROOT, worker_env, worker_start, worker_stop

BROKER = os.environ.get("CELERY_BROKER_URL", "")

pytestmark = [
    pytest.mark.skipif(
        not BROKER.startswith(("redis://", "rediss://")),
        reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does); the filesystem broker is not one",
    ),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

SEPARATOR = "\n" + "-" * 79 + "\n"  # Django's file e-mail backend writes one after each message


def _env(mail_dir, **extra):
    """A worker's environment: the test database and broker, e-mail to files; the delivery timeouts
    are the production defaults (only the chunks are small, so the kill lands mid-way)."""
    return worker_env(
        EMAIL_URL=f"filemail:///{mail_dir}",  # four slashes: an absolute path
        COMMS_DELIVERY_CHUNK_SIZE=10,
        DJANGO_SETTINGS_MODULE="incidents_site.settings",
        **extra,
    )


def _start_worker(mail_dir, name, **env):
    return worker_start(name, env=_env(mail_dir, **env), pool="prefork", concurrency=2)


def _messages(mail_dir):
    """[(recipient, message id)] for every e-mail written so far."""
    found = []
    for path in Path(mail_dir).glob("*.log"):
        for message in path.read_text(errors="replace").split(SEPARATOR):
            if message.strip():
                to = re.search(r"^To: (.+)$", message, re.MULTILINE)[1].strip()
                message_id = re.search(r"^Message-ID: (.+)$", message, re.MULTILINE | re.IGNORECASE)[1].strip()
                found.append((to, message_id))
    return found


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _publish_to(n, services_):
    Subscriber.objects.bulk_create(
        Subscriber(channel="email", email=f"r{i:04d}@example.com", confirmed_at=timezone.now()) for i in range(n)
    )
    incident = declare("Checkout errors", severity=SeverityFactory(level=3), services=services_)
    update = UpdateFactory(incident=incident)
    Update.objects.filter(pk=update.pk).update(status=Update.Status.PUBLISHED, published_at=timezone.now())
    update.refresh_from_db()
    return update


@pytest.fixture
def clean_queue():
    app.control.purge()
    yield
    app.control.purge()


def test_sigkilled_worker_mid_fan_out_reaches_every_recipient_once_but_for_a_send_it_interrupted(settings, clean_queue):
    """With the production claim timeout, heartbeat and requeue settings (not shortened for the test):
    everything the dead worker held is sent within minutes of the crash by the sweep beat runs."""
    settings.COMMS_DELIVERY_CHUNK_SIZE = 10
    update = _publish_to(500, [ServiceFactory(slug="checkout")])
    mail_dir = tempfile.mkdtemp(prefix="fanout-kill-")
    worker = _start_worker(mail_dir, "fanout-kill")
    try:
        with transaction.atomic():
            assert services.update_deliveries_create(update=update) == 500
        # Publishing committed: the fan-out task is on the broker. Kill the worker mid-way.
        _wait_for(lambda: Delivery.objects.filter(update=update, state="sent").count() >= 120, 120, "120 sent")
        worker_stop(worker, crash=True)
    finally:
        worker_stop(worker, crash=True)
    sent_at_kill = Delivery.objects.filter(update=update, state="sent").count()
    in_flight = {
        f"<delivery-{pk}.update-{update.pk}@127.0.0.1>": address
        for pk, address in Delivery.objects.filter(update=update, state="sending").values_list("pk", "address")
    }
    written_at_kill = {message_id for _to, message_id in _messages(mail_dir)}
    # The one window no design closes (sent, not yet marked): at most one message per pool process.
    caught_in_window = set(in_flight) & written_at_kill
    assert sent_at_kill < 500, "the worker finished before it was killed: nothing was tested"
    assert len(caught_in_window) <= 2

    killed_at = time.monotonic()
    worker = _start_worker(mail_dir, "fanout-again")
    try:
        # What beat does: the sweep every minute, until everything is sent (at most five minutes).
        while Delivery.objects.filter(update=update, state="sent").count() < 500:
            assert time.monotonic() - killed_at < 300, "not every delivery was sent within 5 minutes of the crash"
            services.deliveries_sweep()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and Delivery.objects.filter(update=update, state="sent").count() < 500:
                time.sleep(0.5)
    finally:
        worker_stop(worker)
    recovered_in = time.monotonic() - killed_at
    messages = _messages(mail_dir)
    recipients = [to for to, _id in messages]
    assert sorted(set(recipients)) == sorted(f"r{i:04d}@example.com" for i in range(500))
    assert len(messages) == 500 + len(caught_in_window), (len(messages), caught_in_window)
    duplicated = {to for to in recipients if recipients.count(to) > 1}
    assert duplicated == {in_flight[mid] for mid in caught_in_window}
    assert len(set(messages)) == 500  # a duplicate carries the same Message-ID: mail clients show it once
    assert not Delivery.objects.filter(update=update).exclude(state="sent").exists()
    print(
        f"killed after {sent_at_kill} sent, {len(in_flight)} in flight, {len(caught_in_window)} caught "
        f"sent-not-marked; all sent {recovered_in:.0f} s after the crash"
    )


@contextmanager
def _redis_server(port):
    """A Redis of this test's own (the suite's broker keeps running for the other tests)."""
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _answers(port), 20, f"redis on port {port}")
        yield server
    finally:
        server.terminate()
        server.wait(timeout=20)


def _answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(script, mail_dir, broker):
    """Run `script` in a fresh Django process whose broker is `broker`."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + script],
        cwd=ROOT,
        env=_env(mail_dir, CELERY_BROKER_URL=broker, COMMS_DELIVERY_SWEEP_AFTER="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server to stop and start a Redis of its own")
def test_redis_stopped_at_publish_time_then_delivered_once_it_is_back(clean_queue):
    update = _publish_to(20, [ServiceFactory(slug="checkout")])
    mail_dir = tempfile.mkdtemp(prefix="fanout-down-")
    port = _free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    with _redis_server(port):
        pass  # it ran; now it is stopped
    assert not _answers(port)
    publish = _run(
        "from django.db import transaction\n"
        "from comms import services\n"
        "from comms.models import Update\n"
        f"update = Update.objects.get(pk={update.pk})\n"
        "with transaction.atomic():\n"
        "    print(services.update_deliveries_create(update=update))\n",
        mail_dir,
        broker,
    )
    assert publish.returncode == 0, publish.stderr[-3000:]
    assert publish.stdout.strip() == "20"
    assert "could not enqueue the fan-out" in publish.stderr  # logged, not raised
    assert Delivery.objects.filter(update=update, state="pending", enqueued_at__isnull=True).count() == 20

    with _redis_server(port):  # Redis is back
        worker = _start_worker(mail_dir, "fanout-back", CELERY_BROKER_URL=broker)
        try:
            sweep = _run("from comms import services\nprint(services.deliveries_sweep())\n", mail_dir, broker)
            assert sweep.returncode == 0, sweep.stderr[-3000:]
            assert sweep.stdout.strip() == "20"  # what beat runs every minute
            _wait_for(lambda: Delivery.objects.filter(update=update, state="sent").count() == 20, 120, "20 sent")
        finally:
            worker_stop(worker)
    assert sorted(to for to, _id in _messages(mail_dir)) == sorted(f"r{i:04d}@example.com" for i in range(20))

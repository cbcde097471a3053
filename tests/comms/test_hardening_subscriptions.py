"""Issue 11: /subscribe/ with the mail server down, one confirmation per address per 10 minutes, and a
rate limit per client address."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db.models import F
from django.test import Client

from comms import tasks
from comms.models import Subscriber
from comms.services import subscribers
from tests.comms.test_subscribers import link_in

pytestmark = pytest.mark.django_db

CLOSED_PORT = 18431  # in engineer 4's range; nothing listens there


def _subscribe(client, email="ana@example.com"):
    return client.post("/subscribe/", {"email": email})


def test_subscribing_while_the_mail_server_is_down_keeps_the_subscription(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", CLOSED_PORT, 2
    enqueued = []
    monkeypatch.setattr(subscribers, "task_enqueue", lambda name, *args, **kw: enqueued.append((name, args)))

    with django_capture_on_commit_callbacks(execute=True):
        answer = _subscribe(Client())

    assert answer.status_code == 200 and "Check your inbox" in answer.content.decode()  # was a 500
    subscriber = Subscriber.objects.get()
    assert not subscriber.is_active
    assert enqueued == [("subscriber_confirmation_send", (subscriber.pk, subscriber.confirmation_sent_at.isoformat()))]
    # The retry task: while mail is still down it raises for Celery to retry (it retries on mail errors)…
    (name, args) = enqueued[0]
    with pytest.raises(ConnectionRefusedError):
        tasks.subscriber_confirmation_send.run(*args)
    assert any(issubclass(ConnectionRefusedError, error) for error in tasks.subscriber_confirmation_send.autoretry_for)
    # …and once mail works the confirmation goes out, and its link confirms.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert tasks.subscriber_confirmation_send.run(*args) is True
    assert [m.to for m in mail.outbox] == [["ana@example.com"]]
    assert Client().post(link_in(mail.outbox[0], "confirm")).status_code == 200
    assert Subscriber.objects.get().is_active
    # A late duplicate of the task sends nothing more.
    assert tasks.subscriber_confirmation_send.run(*args) is False and len(mail.outbox) == 1


def test_an_address_gets_at_most_one_confirmation_per_ten_minutes(django_capture_on_commit_callbacks):
    for _ in range(5):  # five posts mailed the victim five times before
        with django_capture_on_commit_callbacks(execute=True):
            assert _subscribe(Client()).status_code == 200
    assert len(mail.outbox) == 1
    Subscriber.objects.update(confirmation_sent_at=F("confirmation_sent_at") - timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        _subscribe(Client())
    assert len(mail.outbox) == 2
    assert Client().post(link_in(mail.outbox[1], "confirm")).status_code == 200  # the latest link works


def test_subscribe_is_rate_limited_per_client_address(settings, django_capture_on_commit_callbacks):
    settings.COMMS_SUBSCRIBE_PER_ADDRESS_PER_HOUR = 3
    client = Client(REMOTE_ADDR="203.0.113.9")
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(3):
            assert _subscribe(client, f"person{n}@example.com").status_code == 200
        refused = _subscribe(client, "person9@example.com")
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Too many subscription requests" in refused.content.decode()
    assert not Subscriber.objects.filter(email="person9@example.com").exists() and len(mail.outbox) == 3
    assert _subscribe(Client(REMOTE_ADDR="203.0.113.10"), "other@example.com").status_code == 200

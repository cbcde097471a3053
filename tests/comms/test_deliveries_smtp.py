"""The subscriber fan-out against a real SMTP server (aiosmtpd): one connection per chunk, and each
subscriber's copy, made by the fast path (comms/services/email_merge.py), is exactly the message Django
would have built for them."""

import asyncio
import email
import email.policy
import threading
from unittest import mock

import pytest
from django.db import connection as db_connection
from django.db import transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from comms import services
from comms.models import Delivery, Update
from comms.services import deliveries as delivery_services
from comms.services import email_merge
from tests.comms.factories import SubscriberFactory, UpdateFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare

pytest.importorskip("aiosmtpd")
from aiosmtpd.smtp import SMTP  # noqa: E402

pytestmark = pytest.mark.django_db


class Inbox:
    """What the SMTP server received: (envelope recipients, raw bytes, connection) per message."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content, session.peer))
        return "250 OK"

    def parsed(self):
        return {rcpts[0]: email.message_from_bytes(raw, policy=email.policy.default) for rcpts, raw, _ in self.messages}


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on a free 127.0.0.1 port, in a thread; the e-mail settings point at it."""
    inbox = Inbox()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(loop.create_server(lambda: SMTP(inbox), "127.0.0.1", 0))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", holder["server"].sockets[0].getsockname()[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield inbox
    finally:
        loop.call_soon_threadsafe(holder["server"].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def update(db, django_capture_on_commit_callbacks):
    severity = SeverityFactory(level=3)
    incident = declare("Checkout errors", severity=severity, services=[ServiceFactory(slug="checkout", is_public=True)])
    update = UpdateFactory(incident=incident, title="Checkout is slow")
    Update.objects.filter(pk=update.pk).update(status=Update.Status.PUBLISHED, published_at=timezone.now())
    update.refresh_from_db()
    return update


def fan_out(update, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        services.update_deliveries_create(update=update)
    return list(Delivery.objects.filter(update=update).order_by("id"))


def built_the_usual_way(delivery):
    """The message Django builds for this delivery, as the SMTP server would receive it."""
    context = delivery_services._update_context(delivery.update)
    message = delivery_services._email_for(delivery, context)
    return email.message_from_bytes(message.message().as_bytes(linesep="\r\n"), policy=email.policy.default)


def comparable(message):
    # Date: when it was built; whitespace: where a long header line was folded (both are valid)
    headers = {k: " ".join(str(v).split()) for k, v in message.items() if k != "Date"}
    headers["Content-Type"] = message.get_content_type()  # the multipart boundary is random
    parts = [(part.get_content_type(), part.get_content()) for part in message.walk() if not part.is_multipart()]
    return headers, parts


def test_every_subscriber_gets_their_own_message_over_one_connection_per_chunk(
    update, smtp_server, django_capture_on_commit_callbacks
):
    subscribers = [SubscriberFactory(email=f"reader{n}@example.com") for n in range(12)]
    deliveries = fan_out(update, django_capture_on_commit_callbacks)
    merged = mock.patch.object(email_merge.MergedMessage, "bytes_for", autospec=True,
                               side_effect=email_merge.MergedMessage.bytes_for)  # fmt: skip
    with merged as bytes_for:
        assert services.deliveries_send(delivery_ids=[d.pk for d in deliveries]) == []
    assert bytes_for.call_count == 10  # the first two are built the usual way, the rest merged

    assert Delivery.objects.filter(update=update, state=Delivery.State.SENT).count() == 12
    received = smtp_server.parsed()
    assert sorted(received) == sorted(s.email for s in subscribers) and len(smtp_server.messages) == 12
    assert len({peer for _, _, peer in smtp_server.messages}) == 1  # the chunk's one connection, reused
    for delivery in Delivery.objects.filter(update=update).select_related("subscriber", "update__incident"):
        got, expected = received[delivery.address], built_the_usual_way(delivery)
        assert comparable(got) == comparable(expected)
        link = services.subscriber_unsubscribe_url(delivery.subscriber)
        assert got["List-Unsubscribe"].strip() == f"<{link}>" and got["To"] == delivery.address
        assert got["Message-ID"] == f"<delivery-{delivery.pk}.update-{update.pk}@{delivery_services._message_domain()}>"
        text = got.get_body(("plain",)).get_content()
        html = got.get_body(("html",)).get_content()
        assert link in text and link in html
        others = [s.email for s in subscribers if s.email != delivery.address]
        assert not any(other in got.as_string() for other in others)


def test_addresses_that_need_encoding_are_built_the_usual_way(update, smtp_server, django_capture_on_commit_callbacks):
    for n in range(3):
        SubscriberFactory(email=f"plain{n}@example.com")
    SubscriberFactory(email="leser@bücher.example")  # an international domain: punycode in the envelope
    deliveries = fan_out(update, django_capture_on_commit_callbacks)
    services.deliveries_send(delivery_ids=[d.pk for d in deliveries])
    received = smtp_server.parsed()
    assert "leser@xn--bcher-kva.example" in received
    idn = Delivery.objects.get(update=update, address="leser@bücher.example")
    assert comparable(received["leser@xn--bcher-kva.example"]) == comparable(built_the_usual_way(idn))


def test_templates_that_use_the_recipient_are_never_merged(update, smtp_server, settings, django_capture_on_commit_callbacks):
    """If a template writes anything of the recipient's (here their address), each copy is built on its own."""
    settings.TEMPLATES = [
        {
            **settings.TEMPLATES[0],
            "APP_DIRS": False,
            "OPTIONS": {
                **settings.TEMPLATES[0]["OPTIONS"],
                "loaders": [
                    ("django.template.loaders.locmem.Loader", {
                        "comms/email/update_external.txt": "Hello {{ delivery.address }}: {{ update.body }}",
                    }),
                    "django.template.loaders.app_directories.Loader",
                ],
            },
        }
    ]  # fmt: skip
    for n in range(5):
        SubscriberFactory(email=f"reader{n}@example.com")
    deliveries = fan_out(update, django_capture_on_commit_callbacks)
    services.deliveries_send(delivery_ids=[d.pk for d in deliveries])
    for address, message in smtp_server.parsed().items():
        assert message.get_body(("plain",)).get_content().startswith(f"Hello {address}:")


def test_queries_per_delivery_stay_constant_over_smtp(update, smtp_server, django_capture_on_commit_callbacks):
    for n in range(30):
        SubscriberFactory(email=f"reader{n}@example.com")
    ids = [d.pk for d in fan_out(update, django_capture_on_commit_callbacks)]
    counts = []
    for chunk in (ids[:10], ids[10:30]):
        with CaptureQueriesContext(db_connection) as queries:
            services.deliveries_send(delivery_ids=chunk)
        counts.append(len(queries))
    assert counts[1] - counts[0] == 10  # one UPDATE (sent) per delivery, the rest per chunk
    assert len(smtp_server.messages) == 30

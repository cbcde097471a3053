"""Publishing an update creates one delivery per recipient; workers claim, send, and never send twice."""

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from comms import services
from comms.models import Delivery, Subscriber, Update
from comms.status import public_ids
from incidents import services as incident_services
from tests.comms.factories import OutreachContactFactory, SubscriberFactory, UpdateFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager(settings):
    """Celery runs tasks in-process (the broker is not involved)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture
def checkout(db):
    return ServiceFactory(slug="checkout", name="Checkout", is_public=True)


@pytest.fixture
def search(db):
    return ServiceFactory(slug="search", name="Search", is_public=True)


def published(incident, audience=Update.Audience.EXTERNAL, **kwargs):
    update = UpdateFactory(incident=incident, audience=audience, **kwargs)
    Update.objects.filter(pk=update.pk).update(status=Update.Status.PUBLISHED, published_at=timezone.now())
    update.refresh_from_db()
    return update


def fan_out(update, django_capture_on_commit_callbacks, execute=False):
    """What the publishing service does: create the deliveries in its transaction."""
    with django_capture_on_commit_callbacks(execute=execute) as callbacks:
        with transaction.atomic():
            created = services.update_deliveries_create(update=update)
    return created, callbacks


def addresses(update, **filters):
    return set(Delivery.objects.filter(update=update, **filters).values_list("address", flat=True))


def test_subscribers_are_chosen_by_service_and_minimum_severity(checkout, search, django_capture_on_commit_callbacks):
    sev1, sev2, sev3 = (SeverityFactory(level=n) for n in (1, 2, 3))
    SubscriberFactory(email="all@example.com")
    SubscriberFactory(email="checkout@example.com", services=[checkout])
    SubscriberFactory(email="search@example.com", services=[search])
    SubscriberFactory(email="sev2-or-worse@example.com", min_severity=sev2)
    SubscriberFactory(email="sev3-or-worse@example.com", min_severity=sev3)
    SubscriberFactory(email="unconfirmed@example.com", confirmed_at=None)
    SubscriberFactory(email="gone@example.com", unsubscribed_at=timezone.now())
    incident = declare("Checkout errors", severity=sev3, services=[checkout])
    update = published(incident)
    created, callbacks = fan_out(update, django_capture_on_commit_callbacks)
    assert addresses(update) == {"all@example.com", "checkout@example.com", "sev3-or-worse@example.com"}
    assert created == 3 and len(callbacks) == 1  # one enqueue, after commit
    assert set(Delivery.objects.filter(update=update).values_list("state", flat=True)) == {"pending"}
    # Severity 1 reaches the Sev2-or-worse subscriber too.
    incident1 = declare("Everything down", severity=sev1, services=[checkout])
    update1 = published(incident1)
    fan_out(update1, django_capture_on_commit_callbacks)
    assert "sev2-or-worse@example.com" in addresses(update1)


def test_publishing_again_creates_no_second_delivery(checkout, django_capture_on_commit_callbacks):
    SubscriberFactory(email="Ana@Example.com")
    update = published(declare("Checkout errors", services=[checkout]))
    assert fan_out(update, django_capture_on_commit_callbacks)[0] == 1
    assert fan_out(update, django_capture_on_commit_callbacks)[0] == 0
    assert list(addresses(update)) == ["ana@example.com"]


def test_webhook_and_slack_subscribers_and_direct_outreach_follow_the_policy(checkout, django_capture_on_commit_callbacks):
    sev1 = SeverityFactory(level=1)
    sev3 = SeverityFactory(level=3)
    type(sev1).objects.filter(pk=sev1.pk).update(notify_direct_outreach=True, notify_email_subscribers=True)
    type(sev3).objects.filter(pk=sev3.pk).update(notify_direct_outreach=False, notify_email_subscribers=False)
    SubscriberFactory(email="person@example.com")
    SubscriberFactory(channel="webhook", email="", url="https://hooks.example.com/a")
    SubscriberFactory(channel="slack", email="", url="https://hooks.slack.example/T1")
    OutreachContactFactory(name="Acme", email="ops@acme.example", services=[checkout])
    OutreachContactFactory(name="Other", email="ops@other.example", services=[ServiceFactory(slug="other")])
    # The same person as subscriber and outreach contact gets one message.
    OutreachContactFactory(name="Person Inc", email="PERSON@example.com")
    big = published(declare("Down", severity=SeverityFactory(level=1), services=[checkout]))
    fan_out(big, django_capture_on_commit_callbacks)
    assert addresses(big) == {
        "person@example.com",
        "https://hooks.example.com/a",
        "https://hooks.slack.example/T1",
        "ops@acme.example",
    }
    assert addresses(big, audience="outreach") == {"ops@acme.example"}
    small = published(declare("Slow", severity=SeverityFactory(level=3), services=[checkout]))
    fan_out(small, django_capture_on_commit_callbacks)
    # No e-mail subscribers, no outreach for this severity; the webhooks mirror the status page.
    assert addresses(small) == {"https://hooks.example.com/a", "https://hooks.slack.example/T1"}


def test_internal_update_goes_to_the_role_holders(checkout, django_capture_on_commit_callbacks):
    lead = UserFactory(username="lead", email="lead@corp.example")
    scribe = UserFactory(username="scribe", email="scribe@corp.example")
    SubscriberFactory(email="public@example.com")
    incident = declare("Checkout errors", services=[checkout])
    incident_services.role_assign(incident=incident, role="commander", user=lead, actor=lead)
    incident_services.role_assign(incident=incident, role="scribe", user=scribe, actor=lead)
    incident_services.role_relieve(
        assignment=incident.role_assignments.get(user=scribe), actor=lead
    )
    update = published(incident, audience=Update.Audience.INTERNAL)
    fan_out(update, django_capture_on_commit_callbacks)
    assert addresses(update) == {"lead@corp.example"}
    assert addresses(update, audience="stakeholder") == {"lead@corp.example"}


def test_restricted_incident_external_update_reaches_no_external_audience(checkout, django_capture_on_commit_callbacks):
    SubscriberFactory(email="public@example.com")
    OutreachContactFactory(email="ops@acme.example")
    incident = declare("Payroll exposure", severity=SeverityFactory(level=1), services=[checkout], restricted=True)
    update = published(incident)
    fan_out(update, django_capture_on_commit_callbacks)
    assert not Delivery.objects.filter(update=update).exists()


def test_published_update_is_emailed_once_with_unsubscribe_headers(checkout, eager, django_capture_on_commit_callbacks):
    subscriber = SubscriberFactory(email="ana@example.com")
    update = published(
        declare("Checkout errors", services=[checkout]),
        title="Checkout errors",
        body="We are **on it**.",
        body_html="<p>We are <strong>on it</strong>.</p>",
    )
    fan_out(update, django_capture_on_commit_callbacks, execute=True)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    delivery = Delivery.objects.get(update=update)
    assert message.to == ["ana@example.com"] and "Checkout errors" in message.subject
    assert delivery.state == "sent" and delivery.sent_at is not None and delivery.attempts == 1
    unsubscribe = services.subscriber_unsubscribe_url(subscriber)
    assert message.extra_headers["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.extra_headers["Message-ID"].startswith(f"<delivery-{delivery.pk}.")
    assert unsubscribe in message.body
    html = message.alternatives[0][0]
    assert "<strong>on it</strong>" in html and unsubscribe in html
    # A redelivered message, a second worker, the sweep: nothing is sent again.
    services.deliveries_send(delivery_ids=[delivery.pk])
    services.deliveries_sweep(now=timezone.now() + timedelta(days=1))
    assert len(mail.outbox) == 1


def test_a_delivery_claimed_by_a_live_worker_is_skipped_and_a_dead_workers_claim_is_taken_over(checkout, django_capture_on_commit_callbacks):
    SubscriberFactory(email="ana@example.com")
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get(update=update)
    Delivery.objects.filter(pk=delivery.pk).update(state="sending", claimed_at=timezone.now())
    services.deliveries_send(delivery_ids=[delivery.pk])
    assert len(mail.outbox) == 0  # another worker is on it
    Delivery.objects.filter(pk=delivery.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    services.deliveries_send(delivery_ids=[delivery.pk])
    assert len(mail.outbox) == 1
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"


def answering(answers):
    """Stands in for the webhook POST: answers[host] is (status, text); the calls are recorded."""
    return mock.patch(
        "comms.webhooks.destination_post",
        side_effect=lambda destination, body, headers, timeout: (*answers(destination.host), None),
    )


def posted(post):
    """{host: the JSON body} of the recorded POSTs."""
    return {c.args[0].host: json.loads(c.args[1]) for c in post.call_args_list}


@pytest.fixture
def public_dns():
    """The example hosts resolve to a public address (tests have no DNS)."""
    with mock.patch("comms.webhooks.host_resolve", return_value=("93.184.216.34",)):
        yield


def test_webhook_answers_decide_sent_retry_or_failed(checkout, public_dns, django_capture_on_commit_callbacks):
    for name in ("ok", "gone", "busy"):
        SubscriberFactory(channel="webhook", email="", url=f"https://{name}.example.com/hook")
    SubscriberFactory(channel="slack", email="", url="https://slack.example.com/T1")
    update = published(declare("Checkout errors", services=[checkout]), title="Checkout errors")
    fan_out(update, django_capture_on_commit_callbacks)
    answers = {
        "ok.example.com": (204, ""),
        "gone.example.com": (410, "no such hook"),
        "busy.example.com": (503, "try later"),
        "slack.example.com": (200, "ok"),
    }
    with answering(answers.__getitem__) as post:
        retries = services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    states = dict(Delivery.objects.values_list("address", "state"))
    assert states == {
        "https://ok.example.com/hook": "sent",
        "https://gone.example.com/hook": "failed",
        "https://busy.example.com/hook": "pending",
        "https://slack.example.com/T1": "sent",
    }
    busy = Delivery.objects.get(address="https://busy.example.com/hook")
    assert retries == [(busy.pk, 1)] and "503" in busy.last_error
    assert "410" in Delivery.objects.get(address="https://gone.example.com/hook").last_error
    bodies = posted(post)
    assert bodies["ok.example.com"]["update"]["id"] == public_ids.encode("update", update.pk)  # no database ids
    assert "Checkout errors" in bodies["slack.example.com"]["text"]
    # The retry succeeds later; after the last attempt a temporary failure is final.
    with answering(lambda host: (200, "")):
        assert services.deliveries_send(delivery_ids=[busy.pk]) == []
    assert Delivery.objects.get(pk=busy.pk).state == "sent"


def test_temporary_failures_give_up_after_the_last_attempt(checkout, settings, public_dns, django_capture_on_commit_callbacks):
    settings.COMMS_DELIVERY_MAX_ATTEMPTS = 2
    SubscriberFactory(channel="webhook", email="", url="https://busy.example.com/hook")
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    with answering(lambda host: (500, "")):
        assert services.deliveries_send(delivery_ids=[delivery.pk]) == [(delivery.pk, 1)]
        assert services.deliveries_send(delivery_ids=[delivery.pk]) == []
    delivery.refresh_from_db()
    assert delivery.state == "failed" and "gave up after 2 attempts" in delivery.last_error


def test_webhooks_to_private_addresses_are_refused(checkout, django_capture_on_commit_callbacks):
    SubscriberFactory(channel="webhook", email="", url="http://127.0.0.1:8000/admin/")
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    with mock.patch("comms.webhooks.destination_post") as post:
        services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    assert not post.called
    delivery = Delivery.objects.get()
    assert delivery.state == "failed" and "loopback" in delivery.last_error


def test_refused_address_is_a_permanent_failure(checkout, django_capture_on_commit_callbacks):
    import smtplib

    SubscriberFactory(email="nobody@example.com")
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    refused = smtplib.SMTPRecipientsRefused({"nobody@example.com": (550, b"no such user")})
    with mock.patch("django.core.mail.backends.locmem.EmailBackend.send_messages", side_effect=refused):
        assert services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True))) == []
    delivery = Delivery.objects.get()
    assert delivery.state == "failed" and "refused" in delivery.last_error


def test_broker_down_at_publish_keeps_the_deliveries_and_the_sweep_sends_them(checkout, eager, django_capture_on_commit_callbacks):
    SubscriberFactory(email="ana@example.com")
    update = published(declare("Checkout errors", services=[checkout]))
    with mock.patch("comms.tasks.update_deliveries_fan_out.apply_async", side_effect=OSError("broker down")):
        fan_out(update, django_capture_on_commit_callbacks, execute=True)  # no exception reaches the publisher
    delivery = Delivery.objects.get(update=update)
    assert delivery.state == "pending" and delivery.enqueued_at is None and not mail.outbox
    assert services.deliveries_sweep() == 0  # too young: the publish may still be enqueueing
    services.deliveries_sweep(now=timezone.now() + timedelta(minutes=2))
    assert Delivery.objects.get(pk=delivery.pk).state == "sent" and len(mail.outbox) == 1


def test_publishing_through_the_update_service_fans_out(checkout, eager, django_capture_on_commit_callbacks):
    writer = UserFactory(username="erin", groups=["Communications"])
    SubscriberFactory(email="ana@example.com")
    # Sev3: e-mail subscribers hear of it, no approval needed (the seeded policy).
    update = UpdateFactory(incident=declare("Checkout errors", severity=SeverityFactory(level=3), services=[checkout]))
    with django_capture_on_commit_callbacks(execute=True):
        services.update_publish(update=update, actor=writer)
    assert [m.to for m in mail.outbox] == [["ana@example.com"]]
    progress = services.update_delivery_progress(update)
    assert progress["sent"] == 1 and progress["total"] == 1 and str(progress) == "sent 1 (of 1)"


def test_delivery_progress_counts_each_state(checkout, django_capture_on_commit_callbacks):
    for n in range(4):
        SubscriberFactory(email=f"s{n}@example.com")
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    ids = list(Delivery.objects.order_by("id").values_list("pk", flat=True))
    Delivery.objects.filter(pk=ids[0]).update(state="sent", sent_at=timezone.now())
    Delivery.objects.filter(pk=ids[1]).update(state="failed", last_error="550")
    progress = services.update_delivery_progress(update)
    assert dict(progress) == {"pending": 2, "sending": 0, "sent": 1, "failed": 1, "total": 4}
    assert str(progress) == "pending 2 / sent 1 / failed 1 (of 4)"


def test_sending_a_chunk_costs_a_constant_number_of_queries_per_delivery(
    checkout, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    for n in range(30):
        SubscriberFactory(email=f"s{n}@example.com")
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    ids = list(Delivery.objects.values_list("pk", flat=True))
    # Claim (1) + load (1) + the incident's public services for its public name (1) + one "sent" per
    # delivery + the unsubscribe link (no query).
    with django_assert_max_num_queries(3 + len(ids)):
        services.deliveries_send(delivery_ids=ids)
    assert Delivery.objects.filter(state="sent").count() == 30 and len(mail.outbox) == 30


def test_staff_see_failures_in_the_admin(checkout, client, django_capture_on_commit_callbacks):
    SubscriberFactory(email="ok@example.com")
    SubscriberFactory(email="bad@example.com")
    writer = UserFactory(username="erin", groups=["Communications"])
    update = published(declare("Checkout errors", services=[checkout]))
    fan_out(update, django_capture_on_commit_callbacks)
    Delivery.objects.filter(address="ok@example.com").update(state="sent", sent_at=timezone.now())
    Delivery.objects.filter(address="bad@example.com").update(state="failed", last_error="550 no such user")
    client.force_login(writer)
    page = client.get("/admin/comms/delivery/", {"state__exact": "failed"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "bad@example.com" in body and "550 no such user" in body and "ok@example.com" not in body
    update_page = client.get(f"/admin/comms/update/{update.pk}/change/").content.decode()
    assert "sent 1 / failed 1 (of 2)" in update_page


def test_subscriber_model_rules(checkout):
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Subscriber.objects.create(channel="webhook", url="")
    SubscriberFactory(email="ana@example.com")
    with pytest.raises(services.SubscriberError):
        services.subscriber_create(channel="email", email="ANA@example.com")

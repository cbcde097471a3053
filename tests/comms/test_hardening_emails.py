"""Issue 11: titles with newlines (alert summaries) never break e-mail subjects, and a restricted
incident's acknowledgement escalation tells nothing to an address whose person may not see it."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from comms import services
from comms.models import Delivery, Update
from incidents import services as incident_services
from incidents.mailing import subject_line
from incidents.models import Severity
from tests.comms.factories import SubscriberFactory, UpdateFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

ALERT_TITLE = "HighErrorRate: errors above 5%\non checkout-api\r\n(job=api)"


def test_subject_line_is_one_line():
    assert subject_line(ALERT_TITLE) == "HighErrorRate: errors above 5% on checkout-api (job=api)"
    assert len(subject_line("x" * 500)) == 200


def test_an_update_whose_title_has_newlines_is_mailed(django_capture_on_commit_callbacks):
    checkout = ServiceFactory(slug="checkout", name="Checkout", is_public=True)
    SubscriberFactory(email="ana@example.com")
    incident = declare(ALERT_TITLE, severity=SeverityFactory(level=3), services=[checkout])
    update = UpdateFactory(incident=incident, audience="external", title=ALERT_TITLE)
    Update.objects.filter(pk=update.pk).update(status=Update.Status.PUBLISHED, published_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False):
        with transaction.atomic():
            services.update_deliveries_create(update=update)
    services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    assert Delivery.objects.get().state == "sent"  # BadHeaderError ("can't contain newlines") before
    (message,) = mail.outbox
    assert "\n" not in message.subject and "\r" not in message.subject
    assert "errors above 5% on checkout-api" in message.subject


def _unacknowledged_restricted(escalation_contact, commander=None):
    severity = SeverityFactory(level=2)
    Severity.objects.filter(pk=severity.pk).update(ack_target_minutes=15, escalation_contact=escalation_contact)
    incident = declare("Payroll export leaked\nto a partner bucket", severity=Severity.objects.get(pk=severity.pk))
    if commander is not None:
        incident_services.role_assign(incident=incident, role="commander", user=commander, actor=None)
    incident_services.incident_restriction_set(incident=incident, restricted=True, actor=None)
    incident.refresh_from_db()
    return incident


def _escalate():
    services.ack_escalation_sweep(now=timezone.now() + timedelta(minutes=16))


def test_a_restricted_incident_escalates_to_someone_who_may_see_it():
    commander = UserFactory(username="cora", email="cora@corp.example")
    _unacknowledged_restricted("oncall-managers@corp.example", commander=commander)
    _escalate()
    (message,) = mail.outbox
    assert message.to == ["cora@corp.example"]  # the shared mailbox, which may not see it, is skipped


def test_without_anyone_who_may_see_it_the_contact_is_told_nothing_of_it():
    UserFactory(username="otto", email="oncall-managers@corp.example")  # a user, but not a participant
    incident = _unacknowledged_restricted("oncall-managers@corp.example")
    _escalate()
    (message,) = mail.outbox
    assert message.to == ["oncall-managers@corp.example"]
    text = message.subject + message.body
    assert "needs attention" in text and "not acknowledged in time" in text
    for secret in (incident.reference, "Payroll", f"/incidents/incident/{incident.pk}/", incident.severity.name):
        assert secret not in text, secret


def test_a_contact_who_may_see_it_gets_the_usual_message():
    contact = UserFactory(username="mona", email="oncall-managers@corp.example")
    incident = _unacknowledged_restricted("oncall-managers@corp.example")
    incident_services.incident_member_add(incident=incident, user=contact, actor=None)
    _escalate()
    (message,) = mail.outbox
    assert incident.reference in message.subject and "\n" not in message.subject

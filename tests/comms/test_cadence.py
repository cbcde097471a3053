"""Update-cadence nudges (once per due window) and acknowledgement escalation (once)."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from comms import services
from comms.models import IncidentNudge, Update
from incidents import services as incident_services
from incidents.models import Severity
from tests.comms.factories import UpdateFactory
from tests.incidents.factories import SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(db):
    return {
        "commander": UserFactory(username="cora", email="cora@corp.example"),
        "comms": UserFactory(username="cole", email="cole@corp.example"),
    }


def incident_with_roles(people, interval=30, ack=15, detected_ago=0, **kwargs):
    severity = SeverityFactory(level=2)
    Severity.objects.filter(pk=severity.pk).update(update_interval_minutes=interval, ack_target_minutes=ack, **kwargs)
    severity.refresh_from_db()
    detected = timezone.now() - timedelta(minutes=detected_ago)
    incident = declare("Checkout errors", severity=severity, detected_at=detected)
    actor = None  # the on-call system assigns them: a person doing so would acknowledge the incident
    incident_services.role_assign(incident=incident, role="commander", user=people["commander"], actor=actor)
    incident_services.role_assign(incident=incident, role="communications_lead", user=people["comms"], actor=actor)
    incident.refresh_from_db()
    return incident


def sent_to():
    return sorted((m.to[0], m.subject) for m in mail.outbox)


def test_comms_lead_is_nudged_once_per_due_window_and_the_commander_when_a_whole_interval_late(people):
    incident = incident_with_roles(people, interval=30)
    due = incident.detected_at + timedelta(minutes=30)
    assert services.update_cadence_sweep(now=due - timedelta(minutes=1)) == 0 and not mail.outbox
    services.update_cadence_sweep(now=due + timedelta(minutes=1))
    services.update_cadence_sweep(now=due + timedelta(minutes=2))  # the beat again: nothing new
    assert sent_to() == [("cole@corp.example", f"[{incident.reference}] An update is due")]
    services.update_cadence_sweep(now=due + timedelta(minutes=31))
    services.update_cadence_sweep(now=due + timedelta(minutes=45))
    assert sent_to() == [
        ("cole@corp.example", f"[{incident.reference}] An update is due"),
        ("cora@corp.example", f"[{incident.reference}] Update overdue"),
    ]
    assert IncidentNudge.objects.filter(incident=incident, state="sent").count() == 2
    # Publishing an update opens a new due window: a new nudge when that one comes due.
    published_at = due + timedelta(minutes=50)
    update = UpdateFactory(incident=incident, audience=Update.Audience.INTERNAL)
    Update.objects.filter(pk=update.pk).update(status="published", published_at=published_at)
    services.update_cadence_sweep(now=published_at + timedelta(minutes=10))
    assert len(mail.outbox) == 2
    services.update_cadence_sweep(now=published_at + timedelta(minutes=31))
    assert len(mail.outbox) == 3 and mail.outbox[-1].to == ["cole@corp.example"]


def test_no_nudges_for_incidents_that_are_not_open(people):
    incident = incident_with_roles(people, interval=30)
    incident_services.incident_transition(incident=incident, to="resolved", actor=people["commander"])
    services.update_cadence_sweep(now=timezone.now() + timedelta(hours=5))
    assert not mail.outbox


def test_without_a_communications_lead_the_commander_is_nudged(people):
    incident = incident_with_roles(people, interval=30)
    lead = incident.role_assignments.get(role="communications_lead")
    incident_services.role_relieve(assignment=lead, actor=people["commander"])
    services.update_cadence_sweep(now=incident.detected_at + timedelta(minutes=31))
    assert [m.to for m in mail.outbox] == [["cora@corp.example"]]


def test_unacknowledged_incident_escalates_once_to_the_contact_or_the_commander(people):
    with_contact = incident_with_roles(people, ack=15, escalation_contact="oncall-managers@corp.example")
    detected = with_contact.detected_at
    assert services.ack_escalation_sweep(now=detected + timedelta(minutes=14)) == 0
    services.ack_escalation_sweep(now=detected + timedelta(minutes=16))
    services.ack_escalation_sweep(now=detected + timedelta(minutes=40))
    assert [m.to for m in mail.outbox] == [["oncall-managers@corp.example"]]
    assert "Not acknowledged within 15 minutes" in mail.outbox[0].subject
    # Without a contact, the commander hears of it.
    Severity.objects.filter(level=2).update(escalation_contact="")
    no_contact = declare("Search slow", severity=SeverityFactory(level=2))
    incident_services.role_assign(incident=no_contact, role="commander", user=people["commander"], actor=None)
    services.ack_escalation_sweep(now=timezone.now() + timedelta(minutes=16))
    assert mail.outbox[-1].to == ["cora@corp.example"] and len(mail.outbox) == 2


def test_acknowledged_incidents_do_not_escalate(people):
    incident = incident_with_roles(people, ack=15)
    incident_services.incident_acknowledge(incident=incident, actor=people["commander"])
    services.ack_escalation_sweep(now=timezone.now() + timedelta(hours=1))
    assert not mail.outbox


def test_restricted_incident_nudges_do_not_name_it(people):
    incident = incident_with_roles(people, interval=30, escalation_contact="oncall-managers@corp.example")
    incident_services.incident_restriction_set(incident=incident, restricted=True, actor=None)
    services.ack_escalation_sweep(now=timezone.now() + timedelta(minutes=16))
    assert "Checkout errors" not in mail.outbox[0].body and incident.reference in mail.outbox[0].body


def test_sweep_tasks_run_twice_without_sending_twice(people, settings):
    from comms import tasks

    incident = incident_with_roles(people, interval=1, ack=1, detected_ago=5)
    tasks.update_cadence_sweep()
    tasks.update_cadence_sweep()
    tasks.ack_escalation_sweep()
    tasks.ack_escalation_sweep()
    kinds = sorted(IncidentNudge.objects.filter(incident=incident).values_list("kind", flat=True))
    assert kinds == ["ack_escalation", "update_due", "update_overdue"]
    assert len(mail.outbox) == 3

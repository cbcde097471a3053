"""Acknowledgement escalation (issue 12): a person declaring, taking command, or writing a note or any
step acknowledges the incident, so the person running it is not told it is unacknowledged."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from comms import services
from comms.models import IncidentNudge
from incidents import services as incident_services
from incidents.models import RoleAssignment
from tests.incidents.factories import UserFactory, declare

pytestmark = pytest.mark.django_db

LATER = timedelta(hours=2)  # well past every severity's acknowledgement target


def _escalations():
    return IncidentNudge.objects.filter(kind=IncidentNudge.Kind.ACK_ESCALATION)


def test_declaring_in_person_with_command_acknowledges_and_nobody_is_escalated_to(sev1):
    rita = UserFactory(username="rita", email="rita@example.com", groups=["Responders"])
    incident = incident_services.incident_declare_by_person(
        person=rita, commander=rita, title="Checkout down", severity=sev1
    )
    incident.refresh_from_db()
    assert incident.acknowledged_at == incident.detected_at
    services.ack_escalation_sweep(now=timezone.now() + LATER)
    assert not _escalations().exists() and not mail.outbox


def test_taking_command_acknowledges_an_alert_opened_incident(sev1):
    rita = UserFactory(username="rita", email="rita@example.com", groups=["Responders"])
    incident = declare("Checkout down", severity=sev1, actor=None)  # opened by an alert
    assert incident.acknowledged_at is None
    incident_services.role_assign(incident=incident, role=RoleAssignment.Role.COMMANDER, user=rita, actor=rita)
    incident.refresh_from_db()
    assert incident.acknowledged_at is not None
    services.ack_escalation_sweep(now=timezone.now() + LATER)
    assert not _escalations().exists()


def test_a_note_by_a_person_acknowledges_but_a_machine_event_does_not(sev1):
    rita = UserFactory(username="rita", groups=["Responders"])
    incident = declare("Checkout down", severity=sev1, actor=None)
    incident_services.timeline_note_add(incident=incident, actor=None, body="alert fired again")
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    incident_services.timeline_note_add(incident=incident, actor=rita, body="looking at the database")
    incident.refresh_from_db()
    assert incident.acknowledged_at is not None


def test_a_backdated_note_never_acknowledges_before_detection(sev1):
    rita = UserFactory(username="rita", groups=["Responders"])
    incident = declare("Checkout down", severity=sev1, actor=None)
    incident_services.timeline_note_add(
        incident=incident, actor=rita, body="saw errors earlier", occurred_at=incident.detected_at - timedelta(hours=1)
    )
    incident.refresh_from_db()
    assert incident.acknowledged_at == incident.detected_at


def test_an_unacknowledged_incident_is_still_escalated(sev1):
    boss = UserFactory(username="boss", email="boss@example.com")
    incident = declare("Checkout down", severity=sev1, actor=None)
    incident_services.role_assign(incident=incident, role=RoleAssignment.Role.COMMANDER, user=boss, actor=None)
    services.ack_escalation_sweep(now=timezone.now() + LATER)
    assert _escalations().filter(incident=incident).exists()

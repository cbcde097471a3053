"""Update-cadence nudges and acknowledgement escalation: one reminder row per incident, kind and
due window, claimed before its e-mail goes."""

import smtplib
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.mailing import subject_line
from incidents.models import Incident, RoleAssignment

from ..models import IncidentNudge
from .deliveries import _claim_timeout, _message_domain, delivery_log
from .notices import NOTICE_KINDS
from .subscribers import _normalise_email
from .updates import incident_next_update_due


def _role_email(incident, role):
    assignment = (
        RoleAssignment.objects.filter(incident=incident, role=role, relieved_at__isnull=True)
        .select_related("user")
        .first()
    )
    return _normalise_email(assignment.user.email) if assignment and assignment.user.email else ""


def _nudge_recipients(incident, kind):
    Role = RoleAssignment.Role
    commander = _role_email(incident, Role.COMMANDER)
    contact = _normalise_email(incident.severity.escalation_contact)
    if kind == IncidentNudge.Kind.UPDATE_DUE:
        ordered = (_role_email(incident, Role.COMMUNICATIONS_LEAD), commander, contact)
    elif kind == IncidentNudge.Kind.UPDATE_OVERDUE:
        ordered = (commander, contact)
    else:  # acknowledgement escalation: the configured contact, its commander otherwise
        ordered = (contact, commander)
    return _first_who_may_see(incident, [e for e in ordered if e])


def _address_sees(incident, address):
    """Whether an active user with this e-mail address may see the incident."""
    users = get_user_model().objects.filter(email__iexact=address, is_active=True)
    return any(Incident.objects.visible_to(user).filter(pk=incident.pk).exists() for user in users)


def _first_who_may_see(incident, addresses):
    """[the first address], preferring, for a restricted incident, one whose person may see it."""
    if incident.is_restricted:
        addresses = [a for a in addresses if _address_sees(incident, a)] or addresses
    return addresses[:1]


# A restricted incident's reminder to an address whose person may not see it (the escalation contact is
# often a shared mailbox): it says that something needs attention and nothing of what.
REDACTED_SUBJECT = "A restricted incident needs attention"
REDACTED_BODY = (
    "An incident you are a contact for needs attention ({what}).\n\n"
    "It is restricted: its details are shown only to its participants, and this address is not one of them. "
    "If you should be, ask an administrator to add you; otherwise tell the incident team through your usual channel.\n"
    "{site_url}/admin/\n"
)


def _nudge_text(nudge, context):
    """(subject, body) of a reminder: the templates, or nothing of the incident for those who may not see it."""
    incident = nudge.incident
    if incident.is_restricted and not all(_address_sees(incident, a) for a in nudge.recipients):
        what = "not acknowledged in time" if nudge.kind == IncidentNudge.Kind.ACK_ESCALATION else "an update is due"
        return REDACTED_SUBJECT, REDACTED_BODY.format(what=what, site_url=settings.SITE_URL)
    subject = subject_line(render_to_string("comms/email/nudge_subject.txt", context))
    return subject, render_to_string("comms/email/nudge.txt", context)


def _nudges_create(candidates):
    """candidates: [(incident, kind, window)]; creates the rows not there yet (unique per window)."""
    rows = []
    for incident, kind, window in candidates:
        recipients = _nudge_recipients(incident, kind)
        if recipients:
            rows.append(IncidentNudge(incident=incident, kind=kind, window=window, recipients=recipients))
        else:
            delivery_log.warning("%s for incident %s: nobody to tell", kind, incident.pk)
    IncidentNudge.objects.bulk_create(rows, ignore_conflicts=True)


def update_cadence_sweep(*, now=None):
    """Beat: for each open incident whose update is due, nudge the communications lead once per due
    window; overdue by a whole interval, the commander too (once per window). Then send what is pending."""
    now = now or timezone.now()
    candidates = []
    for incident in Incident.objects.open().select_related("severity"):
        due = incident_next_update_due(incident)
        if due is None or now < due:
            continue
        candidates.append((incident, IncidentNudge.Kind.UPDATE_DUE, due))
        if now >= due + timedelta(minutes=incident.severity.update_interval_minutes):
            candidates.append((incident, IncidentNudge.Kind.UPDATE_OVERDUE, due))
    _nudges_create(candidates)
    # Notices (review requested, resolution drafted) normally go at once; the ones that did not go again here.
    kinds = [IncidentNudge.Kind.UPDATE_DUE, IncidentNudge.Kind.UPDATE_OVERDUE, *NOTICE_KINDS]
    return nudges_send_pending(kinds=kinds, now=now)


def ack_escalation_sweep(*, now=None):
    """Beat: an open incident not acknowledged within its severity's target: tell the escalation
    contact (its commander otherwise), once."""
    now = now or timezone.now()
    candidates = [
        (incident, IncidentNudge.Kind.ACK_ESCALATION, incident.detected_at)
        for incident in Incident.objects.open().filter(acknowledged_at__isnull=True).select_related("severity")
        if now >= incident.detected_at + timedelta(minutes=incident.severity.ack_target_minutes)
    ]
    _nudges_create(candidates)
    return nudges_send_pending(kinds=[IncidentNudge.Kind.ACK_ESCALATION], now=now)


def nudges_send_pending(*, kinds, now=None):
    sent = 0
    now = now or timezone.now()
    stale = now - _claim_timeout()
    pending = IncidentNudge.objects.filter(kind__in=kinds).filter(
        Q(state=IncidentNudge.State.PENDING) | Q(state=IncidentNudge.State.SENDING, claimed_at__lt=stale)
    )
    for nudge_id in pending.values_list("id", flat=True):
        sent += nudge_send(nudge_id=nudge_id)
    return sent


def nudge_send(*, nudge_id):
    """Claim the reminder, send it, mark it sent. A reminder already sent (or being sent) is skipped."""
    now = timezone.now()
    claimable = Q(state=IncidentNudge.State.PENDING) | Q(
        state=IncidentNudge.State.SENDING, claimed_at__lt=now - _claim_timeout()
    )
    if not IncidentNudge.objects.filter(claimable, pk=nudge_id).update(
        state=IncidentNudge.State.SENDING, claimed_at=now, attempts=F("attempts") + 1
    ):
        return 0
    nudge = IncidentNudge.objects.select_related("incident__severity").get(pk=nudge_id)
    ours = IncidentNudge.objects.filter(pk=nudge_id, state=IncidentNudge.State.SENDING, claimed_at=now)
    incident = nudge.incident
    context = {
        "nudge": nudge,
        "incident": incident,
        "admin_url": settings.SITE_URL + reverse("admin:incidents_incident_change", args=[incident.pk]),
        "interval": incident.severity.update_interval_minutes,
        "ack_target": incident.severity.ack_target_minutes,
        "review_url": settings.SITE_URL + reverse("admin:comms_update_changelist") + "?review=mine",
    }
    try:
        subject, body = _nudge_text(nudge, context)
        EmailMultiAlternatives(
            subject=subject,
            body=body,
            to=nudge.recipients,
            headers={"Message-ID": f"<nudge-{nudge.pk}@{_message_domain()}>"},
        ).send()
    except (smtplib.SMTPException, OSError, ValueError) as error:
        state = IncidentNudge.State.FAILED if nudge.attempts >= 6 else IncidentNudge.State.PENDING
        ours.update(state=state, last_error=str(error)[:2000])
        return 0
    ours.update(state=IncidentNudge.State.SENT, sent_at=timezone.now(), last_error="")
    return 1



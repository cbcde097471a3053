"""The public resolution that follows an internal one.

An incident resolved internally while its public state is still open: the "resolved" update is
drafted from its template (or a plain text), put in the review queue (its approvers are told), and the
communications lead (else the commander, else the severity's escalation contact) is told (a notice:
comms/services/notices.py). The public page keeps showing the incident until that update is
published: resolving internally never resolves publicly by itself. Hooked to the incidents'
timeline_event_committed signal (incidents imports nothing of comms).
"""

import logging

from django.db import transaction
from django.dispatch import receiver

from incidents.models import Incident, RoleAssignment, Service, TimelineEvent
from incidents.signals import timeline_event_committed

from ..models import ComponentStatus, IncidentNudge, Update, UpdateTemplate
from .notices import notice_create
from .updates import update_draft_create, update_submit

log = logging.getLogger("comms.resolution")

UNRESOLVED_PUBLIC = (Update.PublicStatus.INVESTIGATING, Update.PublicStatus.IDENTIFIED, Update.PublicStatus.MONITORING)
RESOLVED_BODY = "This incident has been resolved: {{ services_are }} working normally again."


def _lead_email(incident):
    Role = RoleAssignment.Role
    for role in (Role.COMMUNICATIONS_LEAD, Role.COMMANDER):
        assignment = (
            RoleAssignment.objects.filter(incident=incident, role=role, relieved_at__isnull=True)
            .exclude(user__email="")
            .select_related("user")
            .first()
        )
        if assignment is not None:
            return assignment.user.email
    return incident.severity.escalation_contact


def _resolved_template(incident):
    templates = UpdateTemplate.objects.filter(
        is_active=True, audience=Update.Audience.EXTERNAL, public_status=Update.PublicStatus.RESOLVED
    ).order_by("name")
    # One for this severity first, else one for any severity.
    return templates.filter(severity=incident.severity_id).first() or templates.filter(severity__isnull=True).first()


@transaction.atomic
def incident_resolution_draft(*, incident_id, resolved_at):
    """After an incident is resolved: draft and submit its public "resolved" update when its public
    state is still open, and tell the communications lead. Returns the draft (None when not needed).
    Running it again does nothing while a resolving update is waiting."""
    incident = Incident.objects.select_for_update().select_related("severity").get(pk=incident_id)
    if incident.is_restricted or incident.status not in Incident.RESOLVED_OR_LATER_STATUSES:
        return None
    external = Update.objects.filter(incident=incident, audience=Update.Audience.EXTERNAL)
    latest = (
        external.filter(status=Update.Status.PUBLISHED)
        .order_by("-published_at", "-id")
        .values_list("public_status", flat=True)
        .first()
    )
    if latest not in UNRESOLVED_PUBLIC:
        return None  # never public, or already resolved publicly
    waiting = external.exclude(status=Update.Status.PUBLISHED).filter(public_status=Update.PublicStatus.RESOLVED)
    if waiting.exists():
        return None
    named = (
        external.filter(status=Update.Status.PUBLISHED, components__service__is_public=True)
        .values_list("components__service", flat=True)
        .distinct()
    )
    components = [(service, ComponentStatus.OPERATIONAL) for service in Service.objects.filter(pk__in=set(named))]
    template = _resolved_template(incident)
    draft = update_draft_create(
        incident=incident,
        actor=None,
        audience=Update.Audience.EXTERNAL,
        public_status=Update.PublicStatus.RESOLVED,
        template=template,
        body="" if template is not None else RESOLVED_BODY,
        components=components,
    )
    draft = update_submit(update=draft, actor=None)
    notice_create(incident, IncidentNudge.Kind.RESOLUTION_DRAFTED, resolved_at, [_lead_email(incident)])
    return draft


@receiver(timeline_event_committed, dispatch_uid="comms.resolution_draft")
def _incident_resolved(sender, event_id, incident_id, kind, **kwargs):
    if kind != TimelineEvent.Kind.STATUS_CHANGED:
        return
    event = TimelineEvent.objects.filter(pk=event_id).values("data", "occurred_at").first()
    if event is None or event["data"].get("to") != Incident.Status.RESOLVED:
        return
    try:
        incident_resolution_draft(incident_id=incident_id, resolved_at=event["occurred_at"])
    except Exception:  # noqa: BLE001 - the incident change has committed; never fail the person's request
        log.exception("could not draft the resolving update of incident %s", incident_id)

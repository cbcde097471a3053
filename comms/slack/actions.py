"""What Slack asks of an incident, done through the same services as the admin, as the person who asked.

Each function checks the person's permissions (the ones the admin and the API require) and that they
may see the incident, then calls the incidents or comms service and returns a line for them.
IncidentError/UpdateError messages are passed on; nothing changes when any check fails.
"""

from django.db import transaction

from comms.services import UpdateError, update_draft_create, update_submit
from incidents.models import Incident, RoleAssignment, Service, Severity
from incidents.services import (
    IncidentError,
    incident_acknowledge,
    incident_declare,
    incident_severity_change,
    incident_transition,
    role_assign,
    timeline_note_add,
)

from .blocks import declare_modal, incident_url, status_text
from .models import SlackChannel, SlackEvent
from .people import SlackRefused, django_user_for

VIEW = ("incidents.view_incident",)
CHANGE = (*VIEW, "incidents.change_incident")
ASSIGN_ROLE = (*VIEW, "incidents.add_roleassignment")
ADD_NOTE = (*VIEW, "incidents.add_timelineevent")
DRAFT_UPDATE = (*VIEW, "comms.add_update")
DECLARE = ("incidents.add_incident",)


def incident_for_channel(channel_id):
    """The incident whose Slack channel this is, or None."""
    if not channel_id:
        return None
    row = SlackChannel.objects.select_related("incident").filter(channel_id=channel_id).first()
    return row.incident if row else None


def _allowed(user, permissions, incident=None, what="do this"):
    if not user.has_perms(permissions):
        raise SlackRefused(f"Your account ({user.get_username()}) may not {what}. Nothing was changed.")
    if incident is not None and not Incident.objects.visible_to(user).filter(pk=incident.pk).exists():
        # Restricted and not theirs: say no more than the admin would.
        raise SlackRefused("There is no incident here that your account may see. Nothing was changed.")


def _done(call):
    try:
        return call()
    except (IncidentError, UpdateError) as exc:
        raise SlackRefused(f"{exc} Nothing was changed.") from None


def slack_status(*, actor, incident):
    _allowed(actor, VIEW, incident, "see incidents")
    return status_text(incident)


def slack_acknowledge(*, actor, incident):
    _allowed(actor, CHANGE, incident, "change incidents")
    if incident.acknowledged_at is not None:
        return f"{incident.reference} was already acknowledged."
    _done(lambda: incident_acknowledge(incident=incident, actor=actor))
    return f"You acknowledged {incident.reference}."


def slack_transition(*, actor, incident, to):
    _allowed(actor, CHANGE, incident, "change incidents")
    incident = _done(lambda: incident_transition(incident=incident, to=to, actor=actor))
    return f"{incident.reference} is now {incident.get_status_display().lower()}."


def slack_severity(*, actor, incident, level):
    _allowed(actor, CHANGE, incident, "change incidents")
    severity = Severity.objects.filter(level=level).first()
    if severity is None:
        levels = ", ".join(str(level) for level in Severity.objects.values_list("level", flat=True))
        raise SlackRefused(f"There is no severity level {level} (levels: {levels}). Nothing was changed.")
    _done(lambda: incident_severity_change(incident=incident, severity=severity, actor=actor))
    return f"{incident.reference} is now {severity.label} {severity.name}."


def slack_role_assign(*, actor, incident, role, user):
    _allowed(actor, ASSIGN_ROLE, incident, "assign roles")
    if not user.is_active:
        raise SlackRefused(f"{user.get_username()}'s account is not active. Nothing was changed.")
    _done(lambda: role_assign(incident=incident, role=role, user=user, actor=actor))
    label = RoleAssignment.Role(role).label.lower()
    who = "You are" if user.pk == actor.pk else f"{user.get_username()} is"
    return f"{who} now {label} of {incident.reference}."


def slack_take_command(*, actor, incident):
    return slack_role_assign(actor=actor, incident=incident, role=RoleAssignment.Role.COMMANDER, user=actor)


def slack_note(*, actor, incident, text, occurred_at=None, author=None, author_name=""):
    """A note from Slack, asked for by `actor`. Written in the name of the message's author when they
    have an account that sees the incident, else in the actor's name with the author's Slack name."""
    _allowed(actor, ADD_NOTE, incident, "add notes")
    if author is not None and author.pk != actor.pk:
        if not Incident.objects.visible_to(author).filter(pk=incident.pk).exists():
            author = None
    if author is None:
        author, text = actor, (f"{author_name} in Slack: {text}" if author_name else text)
    return _done(lambda: timeline_note_add(incident=incident, actor=author, body=text, occurred_at=occurred_at))


def slack_update_draft(*, actor, incident, text):
    """An internal update drafted from Slack and submitted for review (published from the admin)."""
    _allowed(actor, DRAFT_UPDATE, incident, "draft updates")

    @transaction.atomic
    def draft():
        update = update_draft_create(incident=incident, actor=actor, audience="internal", body=text)
        return update_submit(update=update, actor=actor)

    update = _done(draft)
    return f"Internal update drafted and submitted for review: <{incident_url(incident)}|{incident.reference}> (update #{update.pk})."


def slack_declare(*, actor, title, level, service_slugs=(), restricted=False, view_id=""):
    """Declare from the modal. The view id is recorded with it, so a resubmitted form declares once."""
    _allowed(actor, DECLARE, what="declare incidents")
    title = (title or "").strip()
    if not title:
        raise SlackRefused("An incident needs a title.")
    max_length = Incident._meta.get_field("title").max_length
    if len(title) > max_length:
        raise SlackRefused(f"A title has at most {max_length} characters.")
    severity = Severity.objects.filter(level=level).first()
    if severity is None:
        raise SlackRefused("Choose a severity.")
    services = list(Service.objects.filter(slug__in=service_slugs))

    @transaction.atomic
    def declare():
        if view_id:
            marker, created = SlackEvent.objects.get_or_create(
                event_id=f"view:{view_id}", defaults={"kind": "view_submission", "state": SlackEvent.State.DONE}
            )
            if not created:
                return marker.incident
        incident = incident_declare(
            title=title, severity=severity, actor=actor, services=services, restricted=restricted
        )
        if view_id:
            SlackEvent.objects.filter(pk=marker.pk).update(incident=incident, result=incident.reference)
        return incident

    return _done(declare)


# ---- the slash command and the buttons ------------------------------------------------------------


def declare_form_open(*, actor, title, trigger_id, channel_id, client):
    """Open the declare modal (views.open must follow the command within 3 s, so it runs in the request)."""
    _allowed(actor, DECLARE, what="declare incidents")
    view = declare_modal(
        title=title,
        severities=list(Severity.objects.order_by("level")),
        services=list(Service.objects.order_by("name")[:100]),
        channel_id=channel_id,
    )
    try:
        client.views_open(trigger_id=trigger_id, view=view)
    except Exception as exc:  # noqa: BLE001 - Slack slow or down: say so, change nothing
        raise SlackRefused(
            f"Could not open the declare form ({type(exc).__name__}). Nothing was changed; try again."
        ) from None


def command_execute(*, command, actor, incident, client):
    """Run a parsed `/incident` command (other than help and declare) on the channel's incident."""
    name = command.name
    if name == "status":
        return slack_status(actor=actor, incident=incident)
    if name == "ack":
        return slack_acknowledge(actor=actor, incident=incident)
    if name in ("mitigated", "resolved"):
        return slack_transition(actor=actor, incident=incident, to=name)
    if name == "sev":
        return slack_severity(actor=actor, incident=incident, level=command.level)
    if name == "lead":
        return slack_take_command(actor=actor, incident=incident)
    if name == "role":
        try:
            user = django_user_for(command.slack_user_id, client=client)
        except SlackRefused:
            raise SlackRefused(
                f"<@{command.slack_user_id}> has no account in the incident tool with their Slack e-mail address. "
                "Nothing was changed."
            ) from None
        return slack_role_assign(actor=actor, incident=incident, role=command.role, user=user)
    if name == "note":
        slack_note(actor=actor, incident=incident, text=command.text)
        return f"Note added to the timeline of {incident.reference}."
    if name == "update":
        return slack_update_draft(actor=actor, incident=incident, text=command.text)
    raise SlackRefused(f"`/incident {name}` cannot be used here.")


BUTTONS = {
    "incident_acknowledge": slack_acknowledge,
    "incident_take_command": slack_take_command,
    "incident_mitigated": lambda *, actor, incident: slack_transition(actor=actor, incident=incident, to="mitigated"),
    "incident_resolved": lambda *, actor, incident: slack_transition(actor=actor, incident=incident, to="resolved"),
}


def button_press(*, action_id, value, actor):
    """A header button: the incident is the button's value."""
    if action_id not in BUTTONS:
        raise SlackRefused("This button does nothing any more.")
    incident = Incident.objects.filter(pk=int(value) if str(value).isdigit() else 0).first()
    if incident is None:
        raise SlackRefused("There is no incident here that your account may see. Nothing was changed.")
    return BUTTONS[action_id](actor=actor, incident=incident)

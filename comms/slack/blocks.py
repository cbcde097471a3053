"""What the app shows in Slack: channel names, topics, the pinned header, announcements, the declare modal."""

import re

from django.conf import settings
from django.urls import reverse

from incidents.models import Incident, Severity, TimelineEvent

Status = Incident.Status
Kind = TimelineEvent.Kind

DECLARE_CALLBACK = "incident_declare"
# Header buttons: action_id → what it does. The button's value is the incident's id.
ACTION_ACKNOWLEDGE = "incident_acknowledge"
ACTION_TAKE_COMMAND = "incident_take_command"
ACTION_MITIGATED = "incident_mitigated"
ACTION_RESOLVED = "incident_resolved"
MAX_CHANNEL_NAME = 80
MAX_TOPIC = 250


def incident_url(incident):
    return settings.SITE_URL + reverse("admin:incidents_incident_change", args=[incident.pk])


def channel_name(incident, suffix=""):
    """`inc-1042-checkout-payments-failing`: lowercase letters, digits and hyphens, at most 80 characters."""
    words = re.sub(r"[^a-z0-9]+", "-", incident.title.lower()).strip("-")
    prefix = f"inc-{incident.number}"
    name = f"{prefix}-{words}" if words else prefix
    return (name[: MAX_CHANNEL_NAME - len(suffix)].rstrip("-") + suffix)[:MAX_CHANNEL_NAME]


def _commander(incident):
    commander = incident.commander
    if commander is None:
        return "nobody yet"
    return commander.get_full_name() or commander.get_username()


def topic_text(incident):
    text = (
        f"{incident.severity.label} {incident.severity.name} · {incident.get_status_display()} · "
        f"Commander: {_commander(incident)}"
    )
    return text[:MAX_TOPIC]


def status_text(incident):
    """The incident in a few lines (the header's text, `/incident status`)."""
    services = ", ".join(service.name for service in incident.services.all()) or "none named"
    lines = [
        f"*{incident.reference} {incident.title}*" + (" (restricted)" if incident.is_restricted else ""),
        f"Severity: {incident.severity.label} {incident.severity.name} · Status: {incident.get_status_display()}"
        f" · Commander: {_commander(incident)}",
        f"Services: {services} · Acknowledged: {'yes' if incident.acknowledged_at else 'not yet'}",
        f"<{incident_url(incident)}|Open in the incident tool>",
    ]
    return "\n".join(lines)


def _button(text, action_id, incident, style=None):
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": str(incident.pk),
    }
    if style:
        button["style"] = style
    return button


def header_buttons(incident):
    """The header's buttons for what the incident allows now (a closed one has none)."""
    buttons = []
    if incident.acknowledged_at is None and incident.is_open:
        buttons.append(_button("Acknowledge", ACTION_ACKNOWLEDGE, incident, "primary"))
    if incident.is_open or incident.status == Status.RESOLVED:
        buttons.append(_button("Take command", ACTION_TAKE_COMMAND, incident))
    allowed = Incident.TRANSITIONS[incident.status]
    if Status.MITIGATED in allowed:
        buttons.append(_button("Mitigated", ACTION_MITIGATED, incident))
    if Status.RESOLVED in allowed:
        buttons.append(_button("Resolved", ACTION_RESOLVED, incident, "primary"))
    return buttons


def header_message(incident):
    """(text, blocks) of the pinned header; chat.update replaces both as the incident changes."""
    text = status_text(incident)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    buttons = header_buttons(incident)
    if buttons:
        blocks.append({"type": "actions", "block_id": "incident_header", "elements": buttons})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "Run it here with `/incident help`."}]})
    return text, blocks


def _by(event):
    return f" by {event.actor.get_full_name() or event.actor.get_username()}" if event.actor else ""


def announcement_text(event, incident):
    """One line for the announcement channel, or "" when this change is not announced."""
    ref = f"<{incident_url(incident)}|{incident.reference}> {incident.title}"
    data = event.data if isinstance(event.data, dict) else {}
    if event.kind == Kind.DECLARED:
        return f":rotating_light: {ref} declared{_by(event)} ({incident.severity.label} {incident.severity.name})."
    if event.kind == Kind.STATUS_CHANGED:
        to = Status(data["to"]).label.lower() if data.get("to") in Status.values else incident.get_status_display()
        return f"{ref} is now *{to}*{_by(event)}."
    if event.kind == Kind.SEVERITY_CHANGED:
        labels = dict(
            Severity.objects.filter(level__in=[data.get("from"), data.get("to")]).values_list("level", "label")
        )
        before, after = (labels.get(data.get(end), f"level {data.get(end)}") for end in ("from", "to"))
        return f"{ref}: severity {before} → *{after}*{_by(event)}."
    if event.kind == Kind.ROLE_ASSIGNED and data.get("role") == "commander":
        previous = f" from {data['from']}" if data.get("from") else ""
        return f"{ref}: *{data.get('to')}* took command{previous}."
    if event.kind == Kind.UPDATE_PUBLISHED and data.get("audience") == "internal":
        return f"{ref}: {event.body}"
    return ""


def declare_modal(*, title, severities, services, channel_id=""):
    """The declare form (views.open). private_metadata carries the channel the command came from."""
    severity_options = [
        {"text": {"type": "plain_text", "text": f"{s.label} {s.name}"[:75]}, "value": str(s.level)} for s in severities
    ]
    blocks = [
        {
            "type": "input",
            "block_id": "title",
            "label": {"type": "plain_text", "text": "Title"},
            "element": {
                "type": "plain_text_input",
                "action_id": "value",
                "max_length": 200,
                **({"initial_value": title[:200]} if title else {}),
            },
        },
        {
            "type": "input",
            "block_id": "severity",
            "label": {"type": "plain_text", "text": "Severity"},
            "element": {"type": "static_select", "action_id": "value", "options": severity_options},
        },
    ]
    if services:
        blocks.append(
            {
                "type": "input",
                "block_id": "services",
                "optional": True,
                "label": {"type": "plain_text", "text": "Services affected"},
                "element": {
                    "type": "multi_static_select",
                    "action_id": "value",
                    "options": [
                        {"text": {"type": "plain_text", "text": s.name[:75]}, "value": s.slug} for s in services[:100]
                    ],
                },
            }
        )
    blocks.append(
        {
            "type": "input",
            "block_id": "restricted",
            "optional": True,
            "label": {"type": "plain_text", "text": "Visibility"},
            "element": {
                "type": "checkboxes",
                "action_id": "value",
                "options": [
                    {
                        "text": {"type": "plain_text", "text": "Restricted"},
                        "description": {
                            "type": "plain_text",
                            "text": "Security, legal or a named customer: private channel, never announced.",
                        },
                        "value": "restricted",
                    }
                ],
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": DECLARE_CALLBACK,
        "private_metadata": channel_id,
        "title": {"type": "plain_text", "text": "Declare an incident"},
        "submit": {"type": "plain_text", "text": "Declare"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }

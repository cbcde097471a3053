"""Incident changes → Slack work, after they commit (incidents.signals.timeline_event_committed).

Whatever changed it (Slack, the admin, the API, alert ingestion), the incident's channel follows:
declaring opens one when the severity's policy says so (private when restricted), every change after
that updates the header, the topic and the invitations. Declarations, status and severity changes,
handovers of command and published internal updates are announced in SLACK_ANNOUNCE_CHANNEL when the
severity's policy says so, never for restricted incidents. Only rows are written here; Celery talks
to Slack. A failure here is logged and never reaches the change that was just committed.
"""

import logging

from django.dispatch import receiver

from incidents.models import TimelineEvent
from incidents.signals import timeline_event_committed

from . import tasks  # noqa: F401  registers the Slack tasks with Celery (the outbox enqueues them by name)
from .blocks import announcement_text
from .conf import slack_enabled
from .models import SlackCall, SlackChannel
from .outbox import channel_sync_request, slack_call_create

logger = logging.getLogger(__name__)

Kind = TimelineEvent.Kind
# Changes that the channel shows (header, topic, invitations); notes and alerts change nothing there.
CHANNEL_KINDS = {
    Kind.STATUS_CHANGED,
    Kind.ACKNOWLEDGED,
    Kind.SEVERITY_CHANGED,
    Kind.ROLE_ASSIGNED,
    Kind.ROLE_RELIEVED,
    Kind.FIELDS_CHANGED,
    Kind.RESTRICTION_CHANGED,
    Kind.MEMBER_ADDED,
}


def slack_work_for_event(*, event_id):
    """The Slack calls a committed timeline event asks for (none when Slack is off)."""
    if not slack_enabled():
        return []
    event = TimelineEvent.objects.select_related("actor", "incident__severity").filter(pk=event_id).first()
    if event is None:
        return []
    incident, severity = event.incident, event.incident.severity
    calls = []
    has_channel = SlackChannel.objects.filter(incident=incident).exists()
    if (
        not has_channel
        and severity.slack_channel
        and incident.is_open
        and event.kind in (Kind.DECLARED, Kind.SEVERITY_CHANGED)
    ):
        calls.append(slack_call_create(kind=SlackCall.Kind.CHANNEL_OPEN, incident=incident, key=f"open:{incident.pk}"))
    elif has_channel and event.kind in CHANNEL_KINDS:
        calls.append(channel_sync_request(incident))
    if severity.slack_announce and not incident.is_restricted:
        text = announcement_text(event, incident)
        if text:
            calls.append(
                slack_call_create(
                    kind=SlackCall.Kind.ANNOUNCE, incident=incident, key=f"announce:{event.pk}", payload={"text": text}
                )
            )
    return [call for call in calls if call is not None]


@receiver(timeline_event_committed, dispatch_uid="comms.slack.timeline_event_committed")
def _on_timeline_event_committed(sender, event_id, incident_id, kind, **kwargs):
    try:
        slack_work_for_event(event_id=event_id)
    except Exception:
        logger.exception("Could not queue the Slack work for timeline event %s", event_id)

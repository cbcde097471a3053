"""Events from Slack (Events API): a 📌 on a message, or a message starting with `note:`, in an incident's
channel becomes a timeline note with the message's author and original time.

Receiving only records the event (one row per Slack event_id, so Slack's retries change nothing) and
hands it to Celery: reading the message and the author's e-mail are Web API calls. A message becomes
at most one note (SlackNote is unique per channel and message), however often it is pinned. Edits and
deletions in Slack (message_changed, message_deleted) are ignored: the timeline keeps what was said.
"""

import logging
import re
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from slack_sdk.errors import SlackApiError, SlackClientError

from comms.enqueue import task_enqueue

from .actions import incident_for_channel, slack_note
from .conf import slack_client
from .models import SlackEvent, SlackNote
from .outbox import ephemeral_send
from .people import SlackRefused, django_user_for, slack_user_get

logger = logging.getLogger(__name__)

State = SlackEvent.State
PIN = "pushpin"
NOTE_PREFIX = re.compile(r"^\s*note:\s*", re.IGNORECASE)


def _ids(*values):
    return all(isinstance(value, str) and 0 < len(value) <= 32 for value in values)


def _relevant(event):
    """(channel, message ts) of an event that may make a note, or None for everything else."""
    kind = event.get("type")
    if kind == "reaction_added" and event.get("reaction") == PIN:
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "message" and _ids(item.get("channel"), item.get("ts")):
            return item["channel"], item["ts"]
    if kind == "message" and not event.get("subtype") and not event.get("bot_id"):
        text = event.get("text")
        if isinstance(text, str) and NOTE_PREFIX.match(text) and _ids(event.get("channel"), event.get("ts")):
            return event["channel"], event["ts"]
    return None  # edits, deletions, other reactions, bots, anything else


def slack_event_receive(payload):
    """Record an event_callback worth acting on and enqueue it; a retry (same event_id) records nothing."""
    event, event_id = payload.get("event"), payload.get("event_id")
    if not isinstance(event, dict) or not isinstance(event_id, str) or not 0 < len(event_id) <= 100:
        return None
    if _relevant(event) is None:
        return None
    channel_id, _ts = _relevant(event)
    incident = incident_for_channel(channel_id)
    if incident is None:
        return None
    try:
        with transaction.atomic():
            row = SlackEvent.objects.create(event_id=event_id, kind=event["type"], incident=incident, payload=payload)
    except IntegrityError:
        return None  # Slack retried an event we already have
    transaction.on_commit(lambda: task_enqueue("slack_event_process", row.pk, what=f"Slack event {row.pk}"))
    return row


def _message(client, channel_id, ts):
    """The message a reaction points at: top-level (conversations.history) or in a thread (conversations.replies)."""
    history = client.conversations_history(channel=channel_id, latest=ts, oldest=ts, inclusive=True, limit=1)
    for message in history.get("messages") or []:
        if message.get("ts") == ts:
            return message
    # A reply in a thread: the thread comes back parent first, so ask for the window around this one.
    replies = client.conversations_replies(channel=channel_id, ts=ts, oldest=ts, latest=ts, inclusive=True, limit=2)
    for message in replies.get("messages") or []:
        if message.get("ts") == ts:
            return message
    return None


def _time_of(ts):
    return datetime.fromtimestamp(float(ts), tz=UTC)


def _author(slack_id, client):
    """(account, Slack name) of a message's author; the account is None when they have none here."""
    if not slack_id:
        return None, ""
    try:
        return django_user_for(slack_id, client=client), ""
    except SlackRefused:
        return None, slack_user_get(slack_id, client=client).name or slack_id


def _finish(row, state, result):
    SlackEvent.objects.filter(pk=row.pk).update(state=state, result=result, processed_at=timezone.now())
    return state


def slack_event_process(*, event_pk):
    """Turn a recorded event into a note (or say why not). Safe to run twice."""
    row = SlackEvent.objects.filter(pk=event_pk, state=State.PENDING).first()
    if row is None:
        return None
    SlackEvent.objects.filter(pk=row.pk).update(attempts=row.attempts + 1)
    event = row.payload["event"]
    channel_id, ts = _relevant(event)
    incident = incident_for_channel(channel_id)
    if incident is None or SlackNote.objects.filter(channel_id=channel_id, message_ts=ts).exists():
        return _finish(row, State.IGNORED, "Not an incident channel, or this message is a note already.")
    client = slack_client()
    asker = event.get("user") or ""  # who pinned it, or who wrote the note: message
    try:
        actor = django_user_for(asker, client=client)
        if event["type"] == "reaction_added":
            message = _message(client, channel_id, ts)
            if message is None:
                return _finish(row, State.IGNORED, "The message is gone.")
            text, author_id = message.get("text") or "", message.get("user") or ""
        else:
            text, author_id = NOTE_PREFIX.sub("", event.get("text") or ""), asker
        author, author_name = _author(author_id, client)
        with transaction.atomic():
            note = slack_note(
                actor=actor,
                incident=incident,
                text=text,
                occurred_at=_time_of(ts),
                author=author,
                author_name=author_name,
            )
            SlackNote.objects.create(
                channel_id=channel_id,
                message_ts=ts,
                incident=incident,
                timeline_event=note,
                author_slack_id=author_id,
                captured_by_slack_id=asker or "",
            )
            SlackEvent.objects.filter(pk=row.pk).update(
                state=State.DONE, result=f"Note #{note.pk} on {incident.reference}.", processed_at=timezone.now()
            )
        return State.DONE
    except SlackRefused as exc:
        if asker:
            ephemeral_send(channel_id=channel_id, slack_user_id=asker, text=str(exc))
        return _finish(row, State.REFUSED, str(exc))
    except IntegrityError:
        return _finish(row, State.IGNORED, "This message is a note already.")
    except (SlackApiError, SlackClientError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if row.attempts + 1 >= settings.SLACK_MAX_ATTEMPTS:
            return _finish(row, State.FAILED, f"Gave up after {row.attempts + 1} attempts: {error}")
        logger.warning("Slack event %s: %s; the sweep tries again", row.event_id, error)
        SlackEvent.objects.filter(pk=row.pk).update(result=f"Will try again: {error}")
        return None

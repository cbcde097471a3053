"""The timeline from chat: 📌 or `note:` makes one note with its author and original time; Slack's
retries make nothing more; edits and deletions never rewrite history."""

from datetime import UTC, datetime

import pytest

from comms.slack.models import SlackChannel, SlackEvent
from incidents.models import TimelineEvent
from tests.comms.slack.helpers import event_callback, pin
from tests.incidents.factories import declare

pytestmark = pytest.mark.django_db

CHANNEL = "C0INC1"
TS = "1764740000.000200"  # a message from earlier in the incident


@pytest.fixture
def incident(slack, severities):
    incident = declare(
        "Checkout errors", severity=severities[3], actor=None, detected_at=datetime(2025, 12, 3, 5, tzinfo=UTC)
    )
    SlackChannel.objects.create(
        incident=incident, channel_id=CHANNEL, name="inc-checkout", header_ts="1764730000.000001"
    )
    slack.messages[(CHANNEL, TS)] = {
        "type": "message",
        "user": "U0ALICE",
        "text": "Payments fail for EU cards only",
        "ts": TS,
    }
    return incident


def notes(incident):
    return list(incident.timeline.filter(kind=TimelineEvent.Kind.NOTE))


def post_event(poster, capture, payload, **headers):
    with capture(execute=True):
        response = poster.event(payload, **headers)
    assert response.status_code == 200
    return response


def test_a_pinned_message_becomes_a_note_with_its_author_and_time_and_a_retry_makes_no_second(
    slack, poster, responder, alice, incident, django_capture_on_commit_callbacks
):
    payload = event_callback(pin(channel=CHANNEL, ts=TS, user="U0RITA", author="U0ALICE"), event_id="Ev0PIN1")
    post_event(poster, django_capture_on_commit_callbacks, payload)
    [note] = notes(incident)
    assert note.body == "Payments fail for EU cards only"
    assert note.actor == alice  # the message's author, not the person who pinned it
    assert note.occurred_at == datetime.fromtimestamp(float(TS), tz=UTC)
    assert slack.to("conversations.history") == [
        {"channel": CHANNEL, "latest": TS, "oldest": TS, "inclusive": "1", "limit": "1"}
    ]
    # Slack retries the same event (we were slow to answer): nothing more.
    post_event(
        poster,
        django_capture_on_commit_callbacks,
        payload,
        HTTP_X_SLACK_RETRY_NUM="1",
        HTTP_X_SLACK_RETRY_REASON="http_timeout",
    )
    # Someone else pins the same message: still one note.
    again = event_callback(pin(channel=CHANNEL, ts=TS, user="U0ALICE", author="U0ALICE"), event_id="Ev0PIN2")
    post_event(poster, django_capture_on_commit_callbacks, again)
    assert len(notes(incident)) == 1
    assert SlackEvent.objects.filter(event_id="Ev0PIN1").count() == 1


def test_a_note_colon_message_becomes_a_note(slack, poster, responder, incident, django_capture_on_commit_callbacks):
    message = {
        "type": "message",
        "channel": CHANNEL,
        "user": "U0RITA",
        "text": "note: Rolled back to v41",
        "ts": "1764740100.000300",
    }
    post_event(poster, django_capture_on_commit_callbacks, event_callback(message))
    [note] = notes(incident)
    assert (note.body, note.actor) == ("Rolled back to v41", responder)
    assert note.occurred_at == datetime.fromtimestamp(1764740100.0003, tz=UTC)
    assert slack.methods() == ["users.info"]  # the text is in the event: no history call


def test_edits_and_deletions_never_rewrite_history(
    slack, poster, responder, incident, django_capture_on_commit_callbacks
):
    ts = "1764740100.000300"
    message = {"type": "message", "channel": CHANNEL, "user": "U0RITA", "text": "note: Rolled back to v41", "ts": ts}
    post_event(poster, django_capture_on_commit_callbacks, event_callback(message))
    edited = {
        "type": "message",
        "subtype": "message_changed",
        "channel": CHANNEL,
        "ts": "1764740200.000400",
        "message": {"type": "message", "user": "U0RITA", "text": "note: Rolled back to v40", "ts": ts},
        "previous_message": {"type": "message", "user": "U0RITA", "text": "note: Rolled back to v41", "ts": ts},
    }
    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "channel": CHANNEL,
        "ts": "1764740300.0005",
        "deleted_ts": ts,
    }
    post_event(poster, django_capture_on_commit_callbacks, event_callback(edited))
    post_event(poster, django_capture_on_commit_callbacks, event_callback(deleted))
    [note] = notes(incident)
    assert note.body == "Rolled back to v41"
    assert SlackEvent.objects.count() == 1  # the edit and the deletion were not even recorded


def test_ordinary_messages_other_reactions_and_other_channels_are_ignored(
    slack, poster, responder, incident, django_capture_on_commit_callbacks
):
    post_event(
        poster,
        django_capture_on_commit_callbacks,
        event_callback(
            {"type": "message", "channel": CHANNEL, "user": "U0RITA", "text": "looking", "ts": "1764740100.1"}
        ),
    )
    post_event(
        poster, django_capture_on_commit_callbacks, event_callback({**pin(channel=CHANNEL, ts=TS), "reaction": "eyes"})
    )
    post_event(poster, django_capture_on_commit_callbacks, event_callback(pin(channel="C0GENERAL", ts=TS)))
    assert notes(incident) == [] and not SlackEvent.objects.exists() and slack.calls == []


def test_someone_without_an_account_is_told_and_no_note_is_made(
    slack, poster, incident, django_capture_on_commit_callbacks
):
    post_event(poster, django_capture_on_commit_callbacks, event_callback(pin(channel=CHANNEL, ts=TS, user="U0NOBODY")))
    assert notes(incident) == []
    [told] = slack.to("chat.postEphemeral")
    assert told["user"] == "U0NOBODY" and "nobody@example.com" in told["text"]
    assert SlackEvent.objects.get().state == "refused"


def test_the_author_without_an_account_is_named_in_the_note(
    slack, poster, responder, incident, django_capture_on_commit_callbacks
):
    slack.messages[(CHANNEL, TS)]["user"] = "U0NOBODY"
    post_event(poster, django_capture_on_commit_callbacks, event_callback(pin(channel=CHANNEL, ts=TS, user="U0RITA")))
    [note] = notes(incident)
    assert note.actor == responder
    assert note.body == "No Account in Slack: Payments fail for EU cards only"

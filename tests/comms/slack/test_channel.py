"""The header buttons move the lifecycle; every change (from Slack or the admin) updates the pinned
header in place (chat.update), the topic and the invitations."""

import pytest

from comms.slack.models import SlackCall, SlackChannel
from incidents.models import TimelineEvent
from incidents.services import incident_transition, role_assign
from tests.comms.slack.conftest import ANNOUNCE
from tests.comms.slack.helpers import button_press
from tests.incidents.factories import declare

pytestmark = pytest.mark.django_db


@pytest.fixture
def opened(slack, severities, django_capture_on_commit_callbacks):
    """A SEV2 incident raised by alerting (nobody acknowledged it), its channel opened by the worker."""
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout payments failing", severity=severities[2], actor=None)
    channel = SlackChannel.objects.get(incident=incident)
    assert channel.channel_id and channel.header_ts
    slack.calls.clear()
    return incident, channel


def _header_updates(slack, channel):
    return [c for c in slack.to("chat.update") if c["channel"] == channel.channel_id and c["ts"] == channel.header_ts]


def _buttons(update):
    return [e["action_id"] for b in update["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_a_button_press_moves_the_lifecycle_and_updates_the_header(
    slack, poster, responder, opened, django_capture_on_commit_callbacks
):
    incident, channel = opened
    payload = button_press(
        action_id="incident_mitigated", incident=incident, channel=channel.channel_id, message_ts=channel.header_ts
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = poster.interaction(payload)
    assert response.status_code == 200
    incident.refresh_from_db()
    assert incident.status == "mitigated"
    moved = incident.timeline.get(kind=TimelineEvent.Kind.STATUS_CHANGED)
    assert moved.actor == responder and moved.data["to"] == "mitigated"

    [update] = _header_updates(slack, channel)
    assert "Status: Mitigated" in update["text"]
    assert _buttons(update) == ["incident_take_command", "incident_resolved"]  # acknowledged by the move
    [topic] = slack.to("conversations.setTopic")
    assert topic["topic"] == "SEV2 High · Mitigated · Commander: nobody yet"
    [announced] = [m for m in slack.to("chat.postMessage") if m["channel"] == ANNOUNCE]
    assert "is now *mitigated*" in announced["text"]


def test_take_command_and_acknowledge_buttons(slack, poster, responder, opened, django_capture_on_commit_callbacks):
    incident, channel = opened
    for action_id in ("incident_acknowledge", "incident_take_command"):
        payload = button_press(
            action_id=action_id, incident=incident, channel=channel.channel_id, message_ts=channel.header_ts
        )
        with django_capture_on_commit_callbacks(execute=True):
            assert poster.interaction(payload).status_code == 200
    incident.refresh_from_db()
    assert incident.acknowledged_at is not None and incident.commander == responder
    last = _header_updates(slack, channel)[-1]
    assert "Commander: rita" in last["text"]
    assert "incident_acknowledge" not in _buttons(last)
    # The new commander is in the channel already (invited once, not again).
    assert slack.to("conversations.invite") == [{"channel": channel.channel_id, "users": "U0RITA"}]


def test_changes_from_the_admin_update_the_header_and_invite_role_holders(
    slack, responder, alice, opened, django_capture_on_commit_callbacks
):
    incident, channel = opened
    with django_capture_on_commit_callbacks(execute=True):
        role_assign(incident=incident, role="technical_lead", user=alice, actor=responder)
    assert slack.to("conversations.invite") == [{"channel": channel.channel_id, "users": "U0ALICE"}]
    assert len(_header_updates(slack, channel)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        incident_transition(incident=incident, to="resolved", actor=responder)
    assert "Status: Resolved" in _header_updates(slack, channel)[-1]["text"]
    assert SlackCall.objects.filter(state="done").count() == SlackCall.objects.count()


def test_a_button_pressed_without_permission_changes_nothing_and_says_why(
    slack, poster, viewer, opened, django_capture_on_commit_callbacks
):
    incident, channel = opened
    payload = button_press(
        action_id="incident_resolved",
        incident=incident,
        channel=channel.channel_id,
        message_ts=channel.header_ts,
        user="U0VICTOR",
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert poster.interaction(payload).status_code == 200
    incident.refresh_from_db()
    assert incident.status == "detected"
    [told] = slack.to("chat.postEphemeral")
    assert told["user"] == "U0VICTOR" and "may not change incidents" in told["text"]
    assert not slack.to("chat.update")


def test_a_note_changes_nothing_in_the_channel(slack, responder, opened, django_capture_on_commit_callbacks):
    from incidents.services import timeline_note_add

    incident, _channel = opened
    with django_capture_on_commit_callbacks(execute=True):
        timeline_note_add(incident=incident, actor=responder, body="Looking at the payment provider")
    assert not slack.to("chat.update")


def test_a_published_internal_update_is_announced(slack, responder, opened, django_capture_on_commit_callbacks):
    from comms.services import update_draft_create, update_publish

    incident, _channel = opened
    with django_capture_on_commit_callbacks(execute=True):
        internal = update_draft_create(
            incident=incident, actor=responder, audience="internal", body="Rolled back; payments recover."
        )
        update_publish(update=internal, actor=responder)
    [announced] = [m for m in slack.to("chat.postMessage") if m["channel"] == ANNOUNCE]
    assert "Internal update published: Rolled back; payments recover." in announced["text"]
    assert incident.reference in announced["text"]


def test_a_severity_change_is_announced_with_the_severities_labels(
    slack, responder, opened, severities, django_capture_on_commit_callbacks
):
    from incidents.services import incident_severity_change

    incident, _channel = opened
    with django_capture_on_commit_callbacks(execute=True):
        incident_severity_change(incident=incident, severity=severities[1], actor=responder)
    [announced] = [m for m in slack.to("chat.postMessage") if m["channel"] == ANNOUNCE]
    assert "severity SEV2 → *SEV1* by rita." in announced["text"]
    assert "SEV1 Critical" in slack.to("chat.update")[-1]["text"]

"""`/incident declare` end to end: the command opens the modal, the submission declares through the
incidents service, and Celery opens the channel (invitations, pinned header, topic) and announces."""

import pytest

from comms.slack.models import SlackCall, SlackChannel
from incidents.models import Incident, TimelineEvent
from tests.comms.slack.conftest import ANNOUNCE
from tests.comms.slack.helpers import declare_submission
from tests.incidents.factories import ServiceFactory

pytestmark = pytest.mark.django_db


def test_a_signed_declare_opens_the_modal_then_declares_and_opens_the_channel(
    slack, poster, responder, severities, django_capture_on_commit_callbacks
):
    ServiceFactory(slug="payments", name="Payments")
    response = poster.command("declare Checkout payments failing")
    assert response.status_code == 200
    [opened] = slack.to("views.open")
    assert opened["trigger_id"] == "13345224609.738474920.8088930838d88f008e0"
    blocks = {block["block_id"]: block for block in opened["view"]["blocks"]}
    assert blocks["title"]["element"]["initial_value"] == "Checkout payments failing"
    assert [o["value"] for o in blocks["severity"]["element"]["options"]] == ["1", "2", "3", "4"]
    assert not Incident.objects.exists()  # the form is open; nothing declared yet

    with django_capture_on_commit_callbacks(execute=True):
        response = poster.interaction(
            declare_submission(title="Checkout payments failing", level=2, services=["payments"])
        )
    assert response.status_code == 200
    assert response.json() == {"response_action": "clear"}

    incident = Incident.objects.get()
    assert (incident.title, incident.severity.level, incident.is_restricted) == ("Checkout payments failing", 2, False)
    assert list(incident.services.values_list("slug", flat=True)) == ["payments"]
    declared = incident.timeline.get(kind=TimelineEvent.Kind.DECLARED)
    assert declared.actor == responder

    [created] = slack.to("conversations.create")
    assert created["name"] == f"inc-{incident.number}-checkout-payments-failing"
    assert created["is_private"] == "0"
    channel = SlackChannel.objects.get(incident=incident)
    assert slack.to("conversations.invite") == [{"channel": channel.channel_id, "users": "U0RITA"}]
    header = [m for m in slack.to("chat.postMessage") if m["channel"] == channel.channel_id]
    assert len(header) == 1
    assert f"{incident.reference} Checkout payments failing" in header[0]["text"]
    buttons = [e["text"]["text"] for b in header[0]["blocks"] if b["type"] == "actions" for e in b["elements"]]
    # Acknowledge is offered while nobody has (declaring may count as acknowledging it).
    expected = (["Acknowledge"] if incident.acknowledged_at is None else []) + ["Take command", "Mitigated", "Resolved"]
    assert buttons == expected
    assert slack.to("pins.add") == [{"channel": channel.channel_id, "timestamp": channel.header_ts}]
    [topic] = slack.to("conversations.setTopic")
    assert topic["topic"] == "SEV2 High · Detected · Commander: nobody yet"
    # SEV2's policy announces declarations.
    [announced] = [m for m in slack.to("chat.postMessage") if m["channel"] == ANNOUNCE]
    assert incident.reference in announced["text"] and "declared" in announced["text"]
    assert set(SlackCall.objects.values_list("state", flat=True)) == {"done"}


def test_a_restricted_incident_gets_a_private_channel_and_is_never_announced(
    slack, poster, responder, severities, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        poster.interaction(declare_submission(title="Leaked credentials", level=1, restricted=True))
    incident = Incident.objects.get()
    assert incident.is_restricted
    [created] = slack.to("conversations.create")
    assert created["is_private"] == "1"
    assert not [m for m in slack.to("chat.postMessage") if m["channel"] == ANNOUNCE]
    assert not SlackCall.objects.filter(kind="announce").exists()


def test_severity_policy_decides_channel_and_announcement(
    slack, poster, responder, severities, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        poster.interaction(declare_submission(title="Typo on the pricing page", level=4))
    assert Incident.objects.count() == 1
    assert not slack.to("conversations.create")  # SEV4: no channel
    assert not slack.to("chat.postMessage")  # and no announcement


def test_a_resubmitted_form_declares_once(slack, poster, responder, severities, django_capture_on_commit_callbacks):
    payload = declare_submission(title="Search is slow", level=3, view_id="V0SAME")
    with django_capture_on_commit_callbacks(execute=True):
        assert poster.interaction(payload).status_code == 200
        assert poster.interaction(payload).status_code == 200
    assert Incident.objects.count() == 1
    assert len(slack.to("conversations.create")) == 1


def test_declaring_without_an_account_shows_why_in_the_form_and_changes_nothing(slack, poster, severities):
    response = poster.interaction(declare_submission(title="Search is slow", level=3, user="U0NOBODY"))
    assert response.json()["response_action"] == "errors"
    assert "nobody@example.com" in response.json()["errors"]["title"]
    assert not Incident.objects.exists()


def test_declare_needs_the_permission_to_declare(slack, poster, viewer, severities):
    response = poster.command("declare Search is slow", user="U0VICTOR")
    assert response.json()["response_type"] == "ephemeral"
    assert "may not declare incidents" in response.json()["text"]
    assert not slack.to("views.open")
    response = poster.interaction(declare_submission(title="Search is slow", level=3, user="U0VICTOR"))
    assert response.json()["response_action"] == "errors"
    assert not Incident.objects.exists()

"""`/incident` in an incident's channel: each command through the admin's services, as the person asking."""

import pytest

from comms.models import Update
from comms.slack.commands import CommandError, command_parse
from comms.slack.models import SlackChannel
from incidents.models import RoleAssignment, TimelineEvent
from tests.incidents.factories import ServiceFactory, declare

pytestmark = pytest.mark.django_db

CHANNEL = "C0INC1"


@pytest.fixture
def incident(severities):
    incident = declare(
        "Checkout errors", severity=severities[3], actor=None, services=[ServiceFactory(slug="checkout")]
    )
    SlackChannel.objects.create(
        incident=incident, channel_id=CHANNEL, name="inc-checkout", header_ts="1700000000.000001"
    )
    return incident


def text_of(response):
    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    return body["text"]


def test_parsing():
    assert command_parse("").name == "help"
    assert command_parse("sev SEV2").level == 2
    assert command_parse("role comms <@U0ALICE|alice>").role == "communications_lead"
    assert command_parse("role expert <@U0ALICE>").slack_user_id == "U0ALICE"
    assert command_parse("note  Rolled back  ").text == "Rolled back"
    for bad in ("sev high", "role boss <@U1>", "role tech alice", "note", "frobnicate", "ack now"):
        with pytest.raises(CommandError):
            command_parse(bad)


def test_help_and_unknown_commands_answer_at_once(slack, poster):
    assert "/incident declare" in text_of(poster.command("help"))
    assert "Unknown command `frobnicate`" in text_of(poster.command("frobnicate"))
    assert slack.calls == []


def test_ack_status_sev_lead_mitigated_resolved(slack, poster, responder, incident):
    assert text_of(poster.command("ack", channel=CHANNEL)) == f"You acknowledged {incident.reference}."
    incident.refresh_from_db()
    assert incident.acknowledged_at is not None and incident.status == "triaging"
    assert incident.timeline.get(kind=TimelineEvent.Kind.ACKNOWLEDGED).actor == responder

    assert "Checkout errors" in text_of(poster.command("status", channel=CHANNEL))
    assert text_of(poster.command("sev 2", channel=CHANNEL)) == f"{incident.reference} is now SEV2 High."
    assert "no severity level 9" in text_of(poster.command("sev 9", channel=CHANNEL))
    assert (
        text_of(poster.command("lead", channel=CHANNEL)) == f"You are now incident commander of {incident.reference}."
    )
    assert text_of(poster.command("mitigated", channel=CHANNEL)) == f"{incident.reference} is now mitigated."
    assert text_of(poster.command("resolved", channel=CHANNEL)) == f"{incident.reference} is now resolved."
    incident.refresh_from_db()
    assert (incident.status, incident.severity.level, incident.commander) == ("resolved", 2, responder)
    # A step the lifecycle forbids is explained and changes nothing.
    assert "cannot move from resolved to mitigated" in text_of(poster.command("mitigated", channel=CHANNEL))


def test_role_note_and_update(slack, poster, responder, alice, incident):
    answer = text_of(poster.command("role comms <@U0ALICE|alice>", channel=CHANNEL))
    assert answer == f"alice is now communications lead of {incident.reference}."
    assert RoleAssignment.objects.get(incident=incident, role="communications_lead").user == alice

    assert "Note added" in text_of(poster.command("note Rolled back the deploy", channel=CHANNEL))
    note = incident.timeline.get(kind=TimelineEvent.Kind.NOTE)
    assert (note.body, note.actor) == ("Rolled back the deploy", responder)

    assert "submitted for review" in text_of(
        poster.command("update Payments recover after the rollback.", channel=CHANNEL)
    )
    update = Update.objects.get(incident=incident)
    assert (update.audience, update.status, update.body, update.author) == (
        "internal",
        "in_review",
        "Payments recover after the rollback.",
        responder,
    )


def test_role_for_someone_without_an_account_changes_nothing(slack, poster, responder, incident):
    answer = text_of(poster.command("role scribe <@U0NOBODY|nobody>", channel=CHANNEL))
    assert "<@U0NOBODY> has no account" in answer
    assert not RoleAssignment.objects.filter(incident=incident).exists()


def test_outside_an_incident_channel_says_where_to_run_it(slack, poster, responder, incident):
    assert "Run this in an incident's channel" in text_of(poster.command("ack", channel="C0GENERAL"))
    incident.refresh_from_db()
    assert incident.acknowledged_at is None


def test_no_matching_account_gets_a_clear_message_and_nothing_changes(slack, poster, incident):
    answer = text_of(poster.command("ack", user="U0NOBODY", channel=CHANNEL))
    assert "No active account in the incident tool has your Slack e-mail address (nobody@example.com)" in answer
    assert "Nothing was changed" in answer
    incident.refresh_from_db()
    assert incident.acknowledged_at is None


def test_without_the_permission_nothing_changes(slack, poster, viewer, incident):
    before = incident.timeline.count()
    for command in ("ack", "mitigated", "sev 1", "lead", "note hello", "update hello"):
        assert "may not" in text_of(poster.command(command, user="U0VICTOR", channel=CHANNEL))
    incident.refresh_from_db()
    assert incident.timeline.count() == before and incident.status == "detected"
    assert not Update.objects.exists()


def test_a_restricted_incident_is_invisible_to_outsiders_in_slack_too(slack, poster, responder, alice, incident):
    from incidents.services import incident_restriction_set

    incident_restriction_set(incident=incident, restricted=True, actor=None)
    answer = text_of(poster.command("status", channel=CHANNEL))
    assert "no incident here that your account may see" in answer
    assert "Checkout" not in answer


def test_the_slack_user_is_asked_for_once_then_cached(slack, poster, responder, incident):
    poster.command("status", channel=CHANNEL)
    poster.command("status", channel=CHANNEL)
    assert slack.methods().count("users.info") == 1


def test_a_slow_slack_never_makes_us_miss_slacks_3_seconds(settings, slack, poster, responder, incident):
    import time

    settings.SLACK_REQUEST_TIMEOUT_SECONDS = 0.5
    slack.delays["users.info"] = 2
    started = time.monotonic()
    answer = text_of(poster.command("ack", channel=CHANNEL))
    assert time.monotonic() - started < 1.5
    assert answer.startswith("Could not ask Slack who you are") and "Nothing was changed" in answer
    incident.refresh_from_db()
    assert incident.acknowledged_at is None

    slack.delays = {"views.open": 2}
    started = time.monotonic()
    answer = text_of(poster.command("declare Checkout is down"))  # users.info answers at once now
    assert time.monotonic() - started < 1.5
    assert answer.startswith("Could not open the declare form")

"""Slack down or slow never blocks or fails an incident change: the call waits as a row, is retried
(Retry-After on 429, backoff on 5xx) and is visible in the admin until it is delivered."""

from datetime import timedelta

import pytest
from django.utils import timezone

from comms.slack import outbox
from comms.slack.models import SlackCall
from incidents.services import incident_transition
from tests.comms.slack.conftest import ANNOUNCE
from tests.incidents.factories import declare

pytestmark = pytest.mark.django_db


def announcements(slack):
    return [m for m in slack.to("chat.postMessage") if m["channel"] == ANNOUNCE]


def time_passes(call):
    """What the countdown (or the sweep) waits for: the call is due now."""
    SlackCall.objects.filter(pk=call.pk).update(next_attempt_at=timezone.now())


def test_429_then_500_leave_the_change_alone_and_the_post_is_delivered_later(
    slack, responder, severities, django_capture_on_commit_callbacks
):
    incident = declare("Checkout errors", severity=severities[1], actor=None)
    slack.script["chat.postMessage"] = [
        (429, {"Retry-After": "7"}, {"ok": False, "error": "ratelimited"}),
        (500, {}, b"<html>Internal Server Error</html>"),
    ]
    started = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        incident = incident_transition(incident=incident, to="responding", actor=responder)
    incident.refresh_from_db()
    assert incident.status == "responding"  # committed, whatever Slack said

    call = SlackCall.objects.get(kind="announce")
    assert (call.state, call.attempts) == ("pending", 1)
    assert "HTTP 429" in call.last_error and "wait 7 s" in call.last_error
    assert call.next_attempt_at >= started + timedelta(seconds=7)
    assert outbox.slack_call_run(call_id=call.pk) is None  # not due yet: Retry-After is respected

    time_passes(call)
    outbox.slack_call_run(call_id=call.pk)
    call.refresh_from_db()
    assert (call.state, call.attempts) == ("pending", 2)
    assert "HTTP 500" in call.last_error
    assert call.next_attempt_at > timezone.now() + timedelta(seconds=3)  # backoff: 4 × base after the second failure

    time_passes(call)
    outbox.slack_call_run(call_id=call.pk)
    call.refresh_from_db()
    assert (call.state, call.attempts, call.last_error) == ("done", 3, "")
    assert len(slack.to("chat.postMessage")) == 3  # two refused, one delivered
    assert "is now *responding*" in announcements(slack)[-1]["text"]
    assert outbox.slack_call_run(call_id=call.pk) is None  # a duplicate message does nothing


def test_slack_unreachable_changes_nothing_for_the_incident(
    settings, slack, responder, severities, django_capture_on_commit_callbacks
):
    settings.SLACK_API_URL = "http://127.0.0.1:9/api/"  # nothing listens there
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[1], actor=responder)
    assert incident.pk and incident.timeline.count() >= 1
    calls = SlackCall.objects.all()
    assert {c.kind for c in calls} == {"channel_open", "announce"}
    assert {c.state for c in calls} == {"pending"}
    assert all("URLError" in c.last_error or "Connection" in c.last_error for c in calls)


def test_a_permanent_error_fails_at_once_and_an_administrator_sends_it_again(
    slack, responder, severities, django_capture_on_commit_callbacks
):
    severities[1].slack_channel = False  # only the announcement posts
    severities[1].save()
    slack.script["chat.postMessage"] = [(200, {}, {"ok": False, "error": "not_in_channel"})]
    with django_capture_on_commit_callbacks(execute=True):
        declare("Checkout errors", severity=severities[1], actor=None)
    call = SlackCall.objects.get(kind="announce")
    assert call.state == "failed"
    assert "chat.postMessage: HTTP 200, not_in_channel. Not retried" in call.last_error
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.slack_call_retry(call=call)
    call.refresh_from_db()
    assert call.state == "done"
    assert len(announcements(slack)) == 2  # refused once, then delivered


def test_giving_up_after_the_last_attempt(settings, slack, severities, django_capture_on_commit_callbacks):
    settings.SLACK_MAX_ATTEMPTS = 2
    severities[1].slack_channel = False  # only the announcement posts
    severities[1].save()
    slack.script["chat.postMessage"] = [(503, {}, b"")] * 2
    with django_capture_on_commit_callbacks(execute=True):
        declare("Checkout errors", severity=severities[1], actor=None)
    call = SlackCall.objects.get(kind="announce")
    time_passes(call)
    outbox.slack_call_run(call_id=call.pk)
    call.refresh_from_db()
    assert call.state == "failed" and "Gave up after 2 attempts" in call.last_error


def test_the_sweep_sends_calls_the_broker_never_got(slack, severities, monkeypatch, django_capture_on_commit_callbacks):
    handed = []
    monkeypatch.setattr(outbox, "task_enqueue", lambda name, *args, **kw: handed.append((name, args)) and False)
    with django_capture_on_commit_callbacks(execute=True):
        declare("Checkout errors", severity=severities[1], actor=None)
    assert set(SlackCall.objects.values_list("state", flat=True)) == {"pending"}
    assert slack.calls == []  # the broker never passed them on
    handed.clear()
    assert outbox.slack_sweep(now=timezone.now() + timedelta(minutes=1)) == (2, 0)
    assert sorted(handed) == sorted(("slack_call_run", (pk,)) for pk in SlackCall.objects.values_list("pk", flat=True))


def test_one_channel_update_waits_per_incident(
    slack, responder, severities, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[2], actor=None)
    monkeypatch.setattr(outbox, "_enqueue_call", lambda call_id, countdown=None: None)
    with django_capture_on_commit_callbacks(execute=True):
        incident = incident_transition(incident=incident, to="triaging", actor=responder)
        incident = incident_transition(incident=incident, to="responding", actor=responder)
    assert SlackCall.objects.filter(kind="channel_sync", state="pending").count() == 1


def test_a_channel_update_waits_for_the_channel_to_be_opened(
    slack, responder, severities, monkeypatch, django_capture_on_commit_callbacks
):
    later = []
    monkeypatch.setattr(outbox, "_enqueue_call", lambda call_id, countdown=None: later.append(call_id))
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[2], actor=None)
    opening = SlackCall.objects.get(kind="channel_open")
    from comms.slack.models import SlackChannel

    SlackChannel.objects.create(incident=incident, name="inc-x")  # opening has begun, nothing in Slack yet
    with django_capture_on_commit_callbacks(execute=True):
        incident_transition(incident=incident, to="responding", actor=responder)
    sync = SlackCall.objects.get(kind="channel_sync")
    outbox.slack_call_run(call_id=sync.pk)
    sync.refresh_from_db()
    assert (sync.state, sync.attempts) == ("pending", 0)  # not counted as a failure: it waits
    outbox.slack_call_run(call_id=opening.pk)
    time_passes(sync)
    outbox.slack_call_run(call_id=sync.pk)
    sync.refresh_from_db()
    assert sync.state == "done"
    assert "Status: Responding" in slack.to("chat.update")[-1]["text"]


def test_a_deleted_header_is_posted_again(slack, responder, severities, django_capture_on_commit_callbacks):
    from comms.slack.models import SlackChannel

    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[3], actor=None)
    old_ts = SlackChannel.objects.get(incident=incident).header_ts
    slack.script["chat.update"] = [(200, {}, {"ok": False, "error": "message_not_found"})]
    with django_capture_on_commit_callbacks(execute=True):
        incident_transition(incident=incident, to="responding", actor=responder)
    channel = SlackChannel.objects.get(incident=incident)
    assert channel.header_ts != old_ts
    assert slack.to("pins.add")[-1] == {"channel": channel.channel_id, "timestamp": channel.header_ts}
    assert "Status: Responding" in slack.to("chat.postMessage")[-1]["text"]


def test_a_channel_update_that_fails_or_was_stuck_gives_way_to_a_newer_one_waiting(
    slack, responder, severities, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[3], actor=None)
    monkeypatch.setattr(outbox, "_enqueue_call", lambda call_id, countdown=None: None)
    updates = []
    for to in ("triaging", "responding", "mitigated"):
        with django_capture_on_commit_callbacks(execute=True):
            incident = incident_transition(incident=incident, to=to, actor=responder)
        update = SlackCall.objects.get(kind="channel_sync", state="pending")
        SlackCall.objects.filter(pk=update.pk).update(  # a worker is on it (since long, for the last one)
            state="sending", attempts=1, last_attempt_at=timezone.now() - timedelta(minutes=10 * (to == "responding"))
        )
        updates.append(update)
    with django_capture_on_commit_callbacks(execute=True):
        incident_transition(incident=incident, to="resolved", actor=responder)
    waiting = SlackCall.objects.get(kind="channel_sync", state="pending")

    # The first one's attempt fails: instead of a second waiting update, it is done.
    failed = outbox._failed_attempt(SlackCall.objects.get(pk=updates[0].pk), "chat.update: HTTP 500.")
    assert (failed.state, failed.last_error) == ("done", outbox.SUPERSEDED)
    # The second one's worker died: the sweep does not make it wait twice either.
    outbox.slack_sweep()
    assert SlackCall.objects.get(pk=updates[1].pk).state == "done"
    assert list(SlackCall.objects.filter(kind="channel_sync", state="pending")) == [waiting]


def test_a_taken_channel_name_gets_a_suffix(slack, severities, django_capture_on_commit_callbacks):
    from comms.slack.models import SlackChannel

    with django_capture_on_commit_callbacks() as committed:
        incident = declare("Checkout errors", severity=severities[3], actor=None)
    name = f"inc-{incident.number}-checkout-errors"
    slack.channels[name] = "C0OLD"  # left from an earlier install, say
    with django_capture_on_commit_callbacks(execute=True):
        for callback in committed:
            callback()
    assert [c["name"] for c in slack.to("conversations.create")] == [name, f"{name}-2"]
    channel = SlackChannel.objects.get(incident=incident)
    assert channel.name == f"{name}-2" and channel.channel_id != "C0OLD"

"""Calls to the Slack Web API: a SlackCall row first, then a Celery task that makes them.

An incident change never waits for Slack: the receiver writes rows after the change committed and
hands their ids to Celery. Running a call claims its row (pending → sending, a conditional UPDATE), so
a duplicated message does nothing. A 429 waits as long as Slack's Retry-After says; 5xx answers,
Slack's transient errors, timeouts and connection errors back off (BASE, 4×BASE, 16×BASE… seconds);
other errors (a revoked token, a missing scope) fail at once. After SLACK_MAX_ATTEMPTS the call fails.
Failed and waiting calls are listed in the admin (Communications → Slack calls), where they can be
sent again. Each handler is idempotent step by step: what Slack already has (the channel, the header
message, an invitation) is recorded as it happens and not done twice.
"""

import http.client
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from slack_sdk.errors import SlackApiError, SlackClientError

from comms.enqueue import task_enqueue
from incidents.models import Incident, RoleAssignment, TimelineEvent

from .blocks import channel_name, header_message, topic_text
from .conf import slack_client
from .models import SlackCall, SlackChannel, SlackEvent
from .people import slack_id_for

logger = logging.getLogger(__name__)

Kind = SlackCall.Kind
State = SlackCall.State
# A countdown longer than this is left to the sweep (no long ETAs on Redis).
MAX_COUNTDOWN_SECONDS = 300
# A row still "sending" after this long belongs to a worker that died: it is made again.
SENDING_LEASE = timedelta(minutes=5)
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
ALREADY_DONE = {"already_in_channel", "already_pinned", "cant_invite_self"}
NAME_SUFFIXES = ("", "-2", "-3", "-4", "-5")


class _Later(Exception):
    """Not yet (the channel is still being opened): try again soon without counting an attempt."""


# ---- making rows ----------------------------------------------------------------------------------


def _enqueue_call(call_id, countdown=None):
    task_enqueue("slack_call_run", call_id, countdown=countdown, what=f"Slack call {call_id}")


def slack_call_create(*, kind, incident=None, key=None, payload=None):
    """A call to make; with a key, making it again creates nothing. Sent once the transaction commits."""
    try:
        with transaction.atomic():
            call = SlackCall.objects.create(kind=kind, incident=incident, key=key, payload=payload or {})
    except IntegrityError:
        return None  # the same key, or a channel update already waiting for this incident
    transaction.on_commit(lambda: _enqueue_call(call.pk))
    return call


def channel_sync_request(incident):
    """Bring the channel up to date. One update waits per incident: it reads the latest state when it runs."""
    return slack_call_create(kind=Kind.CHANNEL_SYNC, incident=incident)


def ephemeral_send(*, channel_id, slack_user_id, text):
    """Tell one person something in a channel (chat.postEphemeral), e.g. why a button did nothing."""
    return slack_call_create(kind=Kind.EPHEMERAL, payload={"channel": channel_id, "user": slack_user_id, "text": text})


# ---- running them ---------------------------------------------------------------------------------


def _participants(incident):
    """Who is invited: role holders (current), members, and whoever declared it."""
    users = [
        a.user
        for a in RoleAssignment.objects.filter(incident=incident, relieved_at__isnull=True).select_related("user")
    ]
    users += [m.user for m in incident.members.select_related("user")]
    declared = TimelineEvent.objects.filter(incident=incident, kind=TimelineEvent.Kind.DECLARED).select_related("actor")
    users += [event.actor for event in declared if event.actor is not None]
    unique = {user.pk: user for user in users if user.is_active}
    return list(unique.values())


def _ok_if(exc, errors):
    """Swallow a Slack error that means the work is already done."""
    if not (isinstance(exc, SlackApiError) and exc.response.get("error") in errors):
        raise exc


def _invite(channel, incident, client):
    for user in _participants(incident):
        slack_id = slack_id_for(user, client=client)
        if slack_id is None or slack_id in channel.invited:
            continue
        try:
            client.conversations_invite(channel=channel.channel_id, users=slack_id)
        except SlackApiError as exc:
            _ok_if(exc, ALREADY_DONE)
        channel.invited = [*channel.invited, slack_id]
        SlackChannel.objects.filter(pk=channel.pk).update(invited=channel.invited)


def _topic(channel, incident, client):
    topic = topic_text(incident)
    if topic != channel.topic:
        client.conversations_setTopic(channel=channel.channel_id, topic=topic)
        SlackChannel.objects.filter(pk=channel.pk).update(topic=topic)


def _load(call):
    return Incident.objects.select_related("severity", "commander").get(pk=call.incident_id)


def _channel_open(call, client):
    incident = _load(call)
    channel, _created = SlackChannel.objects.get_or_create(
        incident=incident, defaults={"name": channel_name(incident), "is_private": incident.is_restricted}
    )
    if not channel.channel_id:
        channel.is_private = channel.is_private or incident.is_restricted  # restricted since the row was made
        for suffix in NAME_SUFFIXES:
            name = channel_name(incident, suffix)
            try:
                created = client.conversations_create(name=name, is_private=channel.is_private)["channel"]
                break
            except SlackApiError as exc:
                if exc.response.get("error") != "name_taken" or suffix == NAME_SUFFIXES[-1]:
                    raise
        channel.channel_id, channel.name = created["id"], created.get("name", name)
        SlackChannel.objects.filter(pk=channel.pk).update(
            channel_id=channel.channel_id, name=channel.name, is_private=channel.is_private
        )
    _invite(channel, incident, client)
    if not channel.header_ts:
        _header_post(channel, incident, client)
    _topic(channel, incident, client)


def _header_post(channel, incident, client):
    text, blocks = header_message(incident)
    posted = client.chat_postMessage(channel=channel.channel_id, text=text, blocks=blocks, unfurl_links=False)
    channel.header_ts = posted["ts"]
    SlackChannel.objects.filter(pk=channel.pk).update(header_ts=channel.header_ts)
    try:
        client.pins_add(channel=channel.channel_id, timestamp=channel.header_ts)
    except SlackApiError as exc:
        _ok_if(exc, ALREADY_DONE)


def _channel_sync(call, client):
    incident = _load(call)
    channel = SlackChannel.objects.filter(incident=incident).first()
    if channel is None or not (channel.channel_id and channel.header_ts):
        opening = SlackCall.objects.filter(
            incident=incident, kind=Kind.CHANNEL_OPEN, state__in=(State.PENDING, State.SENDING)
        )
        if opening.exists():
            raise _Later()
        return  # no channel (yet): the opening, when it comes, shows the latest state
    _invite(channel, incident, client)
    text, blocks = header_message(incident)
    try:
        client.chat_update(channel=channel.channel_id, ts=channel.header_ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        if exc.response.get("error") != "message_not_found":
            raise
        _header_post(channel, incident, client)  # someone deleted the header: a new one takes its place
    _topic(channel, incident, client)


def _announce(call, client):
    target = settings.SLACK_ANNOUNCE_CHANNEL
    if not target:
        return
    if call.incident_id and Incident.objects.filter(pk=call.incident_id, is_restricted=True).exists():
        return  # restricted since: never announced
    client.chat_postMessage(channel=target, text=call.payload["text"], unfurl_links=False)


def _ephemeral(call, client):
    payload = call.payload
    client.chat_postEphemeral(channel=payload["channel"], user=payload["user"], text=payload["text"])


HANDLERS = {
    Kind.CHANNEL_OPEN: _channel_open,
    Kind.CHANNEL_SYNC: _channel_sync,
    Kind.ANNOUNCE: _announce,
    Kind.EPHEMERAL: _ephemeral,
}


def retry_delay(attempts):
    """Seconds to wait after the attempts-th failed attempt: base, 4×base, 16×base…, at most an hour."""
    return min(settings.SLACK_RETRY_BASE_SECONDS * 4 ** (attempts - 1), 3600)


SUPERSEDED = "A newer channel update was waiting already: it shows the latest state."


def _set(queryset, **fields):
    """Update the rows; a channel update going back to "pending" while another one waits is done instead."""
    try:
        with transaction.atomic():
            return queryset.update(**fields)
    except IntegrityError:  # slackcall_one_pending_sync: the waiting one will show the latest state
        return queryset.update(state=State.DONE, done_at=timezone.now(), last_error=SUPERSEDED)


def _finish(call, **fields):
    _set(SlackCall.objects.filter(pk=call.pk, state=State.SENDING), **fields)
    call.refresh_from_db()
    return call


def _failed_attempt(call, error, delay=None):
    if call.attempts >= settings.SLACK_MAX_ATTEMPTS:
        return _finish(call, state=State.FAILED, last_error=f"{error} Gave up after {call.attempts} attempts.")
    delay = retry_delay(call.attempts) if delay is None else delay
    call = _finish(
        call, state=State.PENDING, next_attempt_at=timezone.now() + timedelta(seconds=delay), last_error=error
    )
    if call.state == State.PENDING and delay <= MAX_COUNTDOWN_SECONDS:
        _enqueue_call(call.pk, countdown=delay)
    return call


def _api_error(exc):
    """(message, retry?, Retry-After seconds or None) for an answer Slack gave."""
    response = exc.response
    status = response.status_code
    error = response.get("error") if isinstance(response.data, dict) else None
    method = response.api_url.rsplit("/", 1)[-1]
    message = f"{method}: HTTP {status}" + (f", {error}" if error else "") + "."
    if status == 429:
        try:
            retry_after = max(int(response.headers.get("Retry-After") or response.headers.get("retry-after") or 1), 1)
        except ValueError:
            retry_after = 30
        return f"{message} Slack asked us to wait {retry_after} s.", True, retry_after
    return message, status >= 500 or error in TRANSIENT_ERRORS, None


def slack_call_run(*, call_id):
    """Make one call if it is waiting and due; a duplicate message (or a done one) does nothing."""
    now = timezone.now()
    claimed = SlackCall.objects.filter(
        pk=call_id, state=State.PENDING, next_attempt_at__lte=now + timedelta(seconds=1)
    ).update(state=State.SENDING, attempts=F("attempts") + 1, last_attempt_at=now)
    if not claimed:
        return None
    call = SlackCall.objects.get(pk=call_id)
    try:
        HANDLERS[call.kind](call, slack_client())
    except _Later:
        call = _finish(
            call, state=State.PENDING, attempts=F("attempts") - 1, next_attempt_at=now + timedelta(seconds=2)
        )
        if call.state == State.PENDING:
            _enqueue_call(call.pk, countdown=2)
        return call
    except SlackApiError as exc:
        message, retry, retry_after = _api_error(exc)
        if retry:
            return _failed_attempt(call, message, retry_after)
        return _finish(
            call, state=State.FAILED, last_error=f"{message} Not retried: fix the cause, then send it again."
        )
    except (SlackClientError, OSError, http.client.HTTPException) as exc:
        return _failed_attempt(call, f"{type(exc).__name__}: {exc}".rstrip(": "))
    return _finish(call, state=State.DONE, done_at=timezone.now(), last_error="")


def slack_call_retry(*, call):
    """Send a failed call again from the start of its backoff schedule (an administrator's action)."""
    retried = _set(
        SlackCall.objects.filter(pk=call.pk, state=State.FAILED),
        state=State.PENDING,
        attempts=0,
        next_attempt_at=timezone.now(),
        last_error="",
    )
    if retried and SlackCall.objects.filter(pk=call.pk, state=State.PENDING).exists():
        transaction.on_commit(lambda: _enqueue_call(call.pk))
    return bool(retried)


def slack_sweep(*, now=None, grace=timedelta(seconds=30), limit=500):
    """Beat, every minute: calls that are due (long backoffs, broker down), calls a dead worker held, and
    events never processed. Returns (calls enqueued, events enqueued)."""
    now = now or timezone.now()
    for stuck in SlackCall.objects.filter(state=State.SENDING, last_attempt_at__lt=now - SENDING_LEASE)[:limit]:
        _set(
            SlackCall.objects.filter(pk=stuck.pk, state=State.SENDING),
            state=State.PENDING,
            next_attempt_at=now,
            last_error="The worker stopped while sending: made again.",
        )
    due = list(
        SlackCall.objects.filter(state=State.PENDING, next_attempt_at__lte=now - grace)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    for call_id in due:
        _enqueue_call(call_id)
    events = list(
        SlackEvent.objects.filter(
            Q(state=SlackEvent.State.PENDING), received_at__lte=now - grace, attempts__lt=settings.SLACK_MAX_ATTEMPTS
        ).values_list("pk", flat=True)[:limit]
    )
    for event_id in events:
        task_enqueue("slack_event_process", event_id, what=f"Slack event {event_id}")
    return len(due), len(events)

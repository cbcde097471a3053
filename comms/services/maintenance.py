"""Scheduled maintenance on the status page and the notices its subscribers get."""

import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.mailing import subject_line

from ..enqueue import task_enqueue
from ..models import MaintenanceNotice, MaintenanceUpdate, ScheduledMaintenance, Subscriber
from ..rendering import markdown_render, slack_escape
from ..status import public_ids
from ._settings import setting as _setting
from .deliveries import (
    DeliveryRetry,
    SubscriberWebhookRefused,
    _claim_timeout,
    _message_domain,
    subscriber_webhook_post,
)
from .subscribers import subscriber_list_for, subscriber_unsubscribe_url

# ---- Status page: scheduled maintenance ----

# A maintenance is scheduled, then moves scheduled -> in progress -> (verifying) -> completed, each
# step writing a public MaintenanceUpdate. Subscribers of its public services (e-mail, webhook, Slack)
# hear of it MAINTENANCE_NOTICE_HOURS before it starts (or when staff say "notify now"), again when an
# announced window is rescheduled, and when it starts and when it completes: one MaintenanceNotice row
# per maintenance, subscriber, kind and window, claimed (pending -> sending) by a worker before it goes.

maintenance_log = logging.getLogger("comms.maintenance")

MAINTENANCE_MESSAGES = {  # Statuspage's default texts, used when staff write none
    ScheduledMaintenance.Status.IN_PROGRESS: "Scheduled maintenance is currently in progress. "
    "We will provide updates as necessary.",
    ScheduledMaintenance.Status.VERIFYING: "Verification is currently underway for the maintenance items.",
    ScheduledMaintenance.Status.COMPLETED: "The scheduled maintenance has been completed.",
}
Status, Kind = ScheduledMaintenance.Status, MaintenanceNotice.Kind
MAINTENANCE_EDITABLE_FIELDS = ("name", "body", "scheduled_for", "scheduled_until", "impact", "auto_transition")
NOTICE_BATCH = 200


class MaintenanceError(Exception):
    """A maintenance change the rules refuse; the message is for the person who asked."""


def _maintenance_check(*, name, scheduled_for, scheduled_until):
    if not (name or "").strip():
        raise MaintenanceError("A maintenance needs a name.")
    if scheduled_for is None or scheduled_until is None:
        raise MaintenanceError("A maintenance needs the start and end of its window.")
    if scheduled_until <= scheduled_for:
        raise MaintenanceError("The window must end after it starts.")


@transaction.atomic
def maintenance_schedule(
    *,
    name,
    body,
    services,
    scheduled_for,
    scheduled_until,
    actor=None,
    impact=ScheduledMaintenance.Impact.MAINTENANCE,
    auto_transition=True,
):
    """Schedule a maintenance window; its first public update says what will happen (the body)."""
    _maintenance_check(name=name, scheduled_for=scheduled_for, scheduled_until=scheduled_until)
    services = list(services)
    if not services:
        raise MaintenanceError("Choose the services the maintenance affects.")
    maintenance = ScheduledMaintenance.objects.create(
        name=name.strip(),
        body=body,
        body_html=markdown_render(body),
        scheduled_for=scheduled_for,
        scheduled_until=scheduled_until,
        impact=impact,
        auto_transition=auto_transition,
    )
    maintenance.services.set(services)
    MaintenanceUpdate.objects.create(
        maintenance=maintenance,
        status=ScheduledMaintenance.Status.SCHEDULED,
        body=body,
        body_html=maintenance.body_html,
        created_by=actor,
    )
    return maintenance


def _lock_maintenance(maintenance):
    return ScheduledMaintenance.objects.select_for_update().get(pk=maintenance.pk)


@transaction.atomic
def maintenance_edit(*, maintenance, actor=None, services=None, **fields):
    """Change a maintenance that has not completed. While it is still scheduled, its first update
    (the announcement) follows the body; later the history stays as it was written."""
    unknown = set(fields) - set(MAINTENANCE_EDITABLE_FIELDS)
    if unknown:
        raise MaintenanceError(f"These cannot be edited: {', '.join(sorted(unknown))}.")
    locked = _lock_maintenance(maintenance)
    if locked.status == ScheduledMaintenance.Status.COMPLETED:
        raise MaintenanceError("A completed maintenance cannot be changed.")
    window = (locked.scheduled_for, locked.scheduled_until)
    for name, value in fields.items():
        setattr(locked, name, value)
    _maintenance_check(name=locked.name, scheduled_for=locked.scheduled_for, scheduled_until=locked.scheduled_until)
    locked.body_html = markdown_render(locked.body)
    locked.save()
    if services is not None:
        services = list(services)
        if not services:
            raise MaintenanceError("Choose the services the maintenance affects.")
        locked.services.set(services)
    if "body" in fields and locked.status == ScheduledMaintenance.Status.SCHEDULED:
        locked.updates.filter(status=ScheduledMaintenance.Status.SCHEDULED).update(
            body=locked.body, body_html=locked.body_html
        )
    moved = window != (locked.scheduled_for, locked.scheduled_until)
    if moved and locked.announced_at is not None and locked.status == ScheduledMaintenance.Status.SCHEDULED:
        maintenance_notices_create(maintenance=locked, kind=MaintenanceNotice.Kind.RESCHEDULED)
    return locked


@transaction.atomic
def maintenance_transition(*, maintenance, to, actor=None, body="", at=None):
    """Move a maintenance on (scheduled -> in progress -> verifying -> completed) with a public update.

    Repeating the current status does nothing; a move the lifecycle forbids raises MaintenanceError.
    """
    locked = _lock_maintenance(maintenance)
    if locked.status == to:
        return locked
    if to not in ScheduledMaintenance.TRANSITIONS[locked.status]:
        raise MaintenanceError(
            f"A maintenance cannot go from {locked.get_status_display().lower()} "
            f"to {ScheduledMaintenance.Status(to).label.lower()}."
        )
    at = at or timezone.now()
    locked.status = to
    if to == ScheduledMaintenance.Status.IN_PROGRESS and locked.started_at is None:
        locked.started_at = at
    if to == ScheduledMaintenance.Status.COMPLETED:
        locked.completed_at = at
    locked.save(update_fields=["status", "started_at", "completed_at", "updated_at"])
    body = (body or "").strip() or MAINTENANCE_MESSAGES[to]
    MaintenanceUpdate.objects.create(
        maintenance=locked, status=to, body=body, body_html=markdown_render(body), created_by=actor, created_at=at
    )
    kind = {Status.IN_PROGRESS: Kind.STARTED, Status.COMPLETED: Kind.COMPLETED}.get(to)
    if kind is not None:
        maintenance_notices_create(maintenance=locked, kind=kind, now=at)
    return locked


def maintenance_recipients(maintenance):
    """Confirmed subscribers (e-mail, webhook, Slack) who hear of incidents on its public services."""
    services = [s for s in maintenance.services.all() if s.is_public]
    if not services:
        return Subscriber.objects.none()  # work on internal services only is nobody outside's business
    return subscriber_list_for(services=services, severity=None)


@transaction.atomic
def maintenance_notices_create(*, maintenance, kind=MaintenanceNotice.Kind.UPCOMING, now=None):
    """Tell the maintenance's subscribers of it: one notice per subscriber, kind and window (a repeat
    creates nothing new), sent by Celery after commit. Returns how many notices are new."""
    now = now or timezone.now()
    locked = _lock_maintenance(maintenance)
    announcing = kind in (Kind.UPCOMING, Kind.RESCHEDULED)
    if announcing and locked.status == ScheduledMaintenance.Status.COMPLETED:
        raise MaintenanceError("This maintenance has completed; there is nothing to announce.")
    mine = MaintenanceNotice.objects.filter(maintenance=locked, kind=kind, window_start=locked.scheduled_for)
    before = mine.count()
    subscriber_ids = list(maintenance_recipients(locked).values_list("pk", flat=True))
    MaintenanceNotice.objects.bulk_create(
        [
            MaintenanceNotice(maintenance=locked, subscriber_id=pk, kind=kind, window_start=locked.scheduled_for)
            for pk in subscriber_ids
        ],
        batch_size=1000,
        ignore_conflicts=True,
    )
    created = mine.count() - before
    if announcing and locked.announced_at is None:
        locked.announced_at = now
        locked.save(update_fields=["announced_at", "updated_at"])
    maintenance_id = locked.pk
    transaction.on_commit(lambda: maintenance_notices_enqueue(maintenance_id=maintenance_id))
    return created


def maintenance_notices_enqueue(*, maintenance_id):
    task_enqueue("maintenance_notices_send", maintenance_id, what=f"the notices of maintenance {maintenance_id}")


def _maintenance_email(notice, context, connection):
    subscriber = notice.subscriber
    unsubscribe_url = subscriber_unsubscribe_url(subscriber)
    context = {
        **context,
        "subscriber": subscriber,
        "unsubscribe_url": unsubscribe_url,
        "notice": notice,
        "event": MAINTENANCE_EVENTS[notice.kind],
    }
    message = EmailMultiAlternatives(
        subject=subject_line(render_to_string("comms/status/email/maintenance_subject.txt", context)),
        body=render_to_string("comms/status/email/maintenance.txt", context),
        to=[subscriber.email],
        connection=connection,
        headers={
            "Message-ID": f"<maintenance-notice-{notice.pk}@{_message_domain()}>",
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    message.attach_alternative(render_to_string("comms/status/email/maintenance.html", context), "text/html")
    message.send()


MAINTENANCE_EVENTS = {
    Kind.UPCOMING: "Scheduled maintenance",
    Kind.RESCHEDULED: "Maintenance rescheduled",
    Kind.STARTED: "Maintenance started",
    Kind.COMPLETED: "Maintenance completed",
}


def _maintenance_payload(notice, context):
    maintenance = notice.maintenance
    what = MAINTENANCE_EVENTS[notice.kind]
    if notice.subscriber.channel == Subscriber.Channel.SLACK:
        when = f"{maintenance.scheduled_for:%Y-%m-%d %H:%M} – {maintenance.scheduled_until:%Y-%m-%d %H:%M %Z}"
        return {"text": f"*{what}: {slack_escape(maintenance.name)}*\n{when}\n<{context['url']}|Details>"}
    return {
        "event": f"maintenance.{notice.kind}",
        "maintenance": {
            "id": public_ids.encode("maintenance", maintenance.pk),
            "name": maintenance.name,
            "status": maintenance.status,
            "scheduled_for": maintenance.scheduled_for.isoformat(),
            "scheduled_until": maintenance.scheduled_until.isoformat(),
            "components": [s.name for s in context["services"]],
            "url": context["url"],
        },
        "status_page_url": context["status_page_url"],
    }


def _maintenance_webhook(notice, context, ours):
    """POST the notice to a webhook or Slack subscriber: 1 when sent, else 0 (failed, or pending again)."""
    try:
        subscriber_webhook_post(notice.subscriber.url, _maintenance_payload(notice, context))
    except SubscriberWebhookRefused as error:
        ours.update(status=MaintenanceNotice.Status.FAILED, attempts=F("attempts") + 1, error=str(error)[:2000])
        return 0
    except DeliveryRetry as error:
        gave_up = notice.attempts + 1 >= _setting("COMMS_DELIVERY_MAX_ATTEMPTS", 6)
        status = MaintenanceNotice.Status.FAILED if gave_up else MaintenanceNotice.Status.PENDING
        ours.update(status=status, claimed_at=None, attempts=F("attempts") + 1, error=str(error)[:2000])
        return 0
    ours.update(status=MaintenanceNotice.Status.SENT, sent_at=timezone.now(), attempts=F("attempts") + 1, error="")
    return 1


def _maintenance_context(maintenance):
    tz = settings.STATUS_PAGE_TIME_ZONE or settings.TIME_ZONE
    return {
        "maintenance": maintenance,
        "services": [s for s in maintenance.services.all() if s.is_public],
        "time_zone": tz,
        "url": settings.SITE_URL + reverse("status:maintenance", args=[public_ids.encode("maintenance", maintenance.pk)]),
        "status_page_url": settings.SITE_URL + reverse("status:index"),
        "page_name": settings.STATUS_PAGE_NAME,
    }


def maintenance_notices_send(*, maintenance_id, now=None):
    """Send the maintenance's pending notices, a batch at a time: claim (pending -> sending, or a
    sending one whose worker died), send, mark sent at once. A duplicate task finds nothing to claim.
    Returns how many were sent."""
    claim_timeout = _claim_timeout()
    maintenance = ScheduledMaintenance.objects.filter(pk=maintenance_id).prefetch_related("services").first()
    if maintenance is None:
        return 0
    context = _maintenance_context(maintenance)
    sent = 0
    connection = get_connection()
    try:
        while True:
            now = timezone.now()
            claimable = Q(status=MaintenanceNotice.Status.PENDING) | Q(
                status=MaintenanceNotice.Status.SENDING, claimed_at__lt=now - claim_timeout
            )
            batch = list(
                MaintenanceNotice.objects.filter(claimable, maintenance_id=maintenance_id)
                .order_by("id")
                .values_list("pk", flat=True)[:NOTICE_BATCH]
            )
            if not batch:
                return sent
            MaintenanceNotice.objects.filter(claimable, pk__in=batch).update(
                status=MaintenanceNotice.Status.SENDING, claimed_at=now
            )
            mine = MaintenanceNotice.objects.filter(pk__in=batch, status=MaintenanceNotice.Status.SENDING, claimed_at=now)
            for notice in mine.select_related("subscriber", "maintenance").order_by("id"):
                ours = MaintenanceNotice.objects.filter(pk=notice.pk, status=MaintenanceNotice.Status.SENDING, claimed_at=now)
                if not notice.subscriber.is_active:  # unsubscribed since the notice was made
                    ours.update(status=MaintenanceNotice.Status.FAILED, error="unsubscribed")
                    continue
                if notice.subscriber.channel != Subscriber.Channel.EMAIL:
                    sent += _maintenance_webhook(notice, context, ours)
                    continue
                try:
                    _maintenance_email(notice, context, connection)
                except (smtplib.SMTPRecipientsRefused, ValueError) as error:
                    ours.update(status=MaintenanceNotice.Status.FAILED, error=f"address refused: {error}"[:2000])
                    continue
                except (smtplib.SMTPException, OSError) as error:
                    # The server is unwell: this one and the rest of the batch go back to pending, and
                    # the sweep hands them to a worker again later.
                    connection.close()
                    ours.update(error=str(error)[:2000])
                    mine.update(status=MaintenanceNotice.Status.PENDING, claimed_at=None)
                    maintenance_log.warning("maintenance notice %s not sent: %s", notice.pk, error)
                    return sent
                ours.update(status=MaintenanceNotice.Status.SENT, sent_at=timezone.now(), error="")
                sent += 1
    finally:
        connection.close()


def maintenance_sweep(*, now=None):
    """Beat, every few minutes: start and complete maintenances whose window began or ended
    (those with automatic transitions), announce the ones starting within MAINTENANCE_NOTICE_HOURS,
    and hand unsent notices (broker down, worker died) to a worker again. Safe to run twice."""
    now = now or timezone.now()
    Status = ScheduledMaintenance.Status
    auto = ScheduledMaintenance.objects.filter(auto_transition=True)
    moved = []
    for maintenance in auto.filter(status__in=[Status.SCHEDULED, Status.IN_PROGRESS, Status.VERIFYING]).filter(
        Q(scheduled_for__lte=now)
    ):
        try:
            if maintenance.scheduled_until <= now:
                maintenance_transition(maintenance=maintenance, to=Status.COMPLETED, at=now)
            elif maintenance.status == Status.SCHEDULED:
                maintenance_transition(maintenance=maintenance, to=Status.IN_PROGRESS, at=now)
            else:
                continue
            moved.append(maintenance.pk)
        except MaintenanceError as error:  # moved by someone else in between
            maintenance_log.info("maintenance %s not moved: %s", maintenance.pk, error)
    horizon = now + timedelta(hours=settings.MAINTENANCE_NOTICE_HOURS)
    announced = []
    for maintenance in ScheduledMaintenance.objects.filter(
        status=Status.SCHEDULED, announced_at__isnull=True, scheduled_for__gt=now, scheduled_for__lte=horizon
    ):
        try:
            maintenance_notices_create(maintenance=maintenance, now=now)
            announced.append(maintenance.pk)
        except MaintenanceError as error:
            maintenance_log.info("maintenance %s not announced: %s", maintenance.pk, error)
    claim_timeout = _claim_timeout()
    stuck = (
        MaintenanceNotice.objects.filter(
            Q(status=MaintenanceNotice.Status.PENDING, created_at__lt=now - timedelta(seconds=60))
            | Q(status=MaintenanceNotice.Status.SENDING, claimed_at__lt=now - claim_timeout)
        )
        .values_list("maintenance_id", flat=True)
        .distinct()
    )
    retried = sorted(set(stuck) - set(announced))
    for maintenance_id in retried:
        maintenance_notices_enqueue(maintenance_id=maintenance_id)
    return {"moved": moved, "announced": announced, "retried": retried}


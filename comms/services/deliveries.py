"""Deliveries of published updates: one row per recipient, created in the publishing transaction,
sent by Celery after commit. A worker claims rows (pending -> sending), sends, marks each sent at once.

Subscribers hear of published external updates; stakeholders (the incident's active role holders) of
internal ones; direct-outreach contacts of external ones when the severity's policy says so.
"""

import functools
import http.client
import json
import logging
import smtplib
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Count, F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.mailing import subject_line
from incidents.models import RoleAssignment

from .. import webhooks
from ..enqueue import task_enqueue
from ..models import Delivery, Subscriber, Update
from ..public_name import incident_public_name
from ..rendering import markdown_render, slack_escape
from ..status import public_ids
from . import email_merge
from ._settings import setting as _setting
from .subscribers import (
    _normalise_email,
    outreach_contacts_for,
    stakeholder_lists_for,
    subscriber_list_for,
    subscriber_unsubscribe_url,
)

delivery_log = logging.getLogger("comms.deliveries")


# Where a published update goes (the deliveries work turns these into one delivery per recipient).
CHANNEL_STATUS_PAGE = "status_page"
CHANNEL_EMAIL_SUBSCRIBERS = "email_subscribers"
CHANNEL_DIRECT_OUTREACH = "direct_outreach"
CHANNEL_STAKEHOLDERS = "stakeholders"


class DeliveryRetry(Exception):
    """A temporary failure: the delivery is pending again and should be retried later."""


def update_channels(update):
    """The channels a published update goes to, from its incident's severity policy.

    External: the status page always, e-mail subscribers and the direct-outreach list when the
    severity says so. Internal: the incident's stakeholders (see update_stakeholder_emails).
    """
    if update.audience != Update.Audience.EXTERNAL:
        return [CHANNEL_STAKEHOLDERS]
    severity = update.incident.severity
    channels = [CHANNEL_STATUS_PAGE]
    if severity.notify_email_subscribers:
        channels.append(CHANNEL_EMAIL_SUBSCRIBERS)
    if severity.notify_direct_outreach:
        channels.append(CHANNEL_DIRECT_OUTREACH)
    return channels


def update_stakeholder_emails(update):
    """Who hears an internal update: the incident's current role holders, plus (unless the incident is
    restricted: it stays with its own people) the stakeholder lists of its services and severity and
    COMMS_STAKEHOLDER_EMAILS. Sorted, lower-cased, without duplicates."""
    incident = update.incident
    holders = RoleAssignment.objects.filter(
        incident_id=incident.pk, relieved_at__isnull=True, user__is_active=True
    ).exclude(user__email="")
    emails = set(holders.values_list("user__email", flat=True))
    if not incident.is_restricted:
        emails.update(getattr(settings, "COMMS_STAKEHOLDER_EMAILS", ()))
        for stakeholders in stakeholder_lists_for(services=list(incident.services.all()), severity=incident.severity):
            emails.update(u.email for u in stakeholders.users.all() if u.is_active and u.email)
            emails.update(stakeholders.email_list())
    return sorted({_normalise_email(e) for e in emails if e})


def update_recipients(update):
    """{(channel, address): unsaved Delivery} for everyone a published update reaches (nothing written).

    External updates go to e-mail subscribers (policy "email_subscribers"), webhook and Slack
    subscribers (whenever the update reaches the status page) and the direct-outreach contacts
    (policy "direct_outreach"); internal ones to the incident's stakeholders. An external update on a
    restricted incident reaches no external audience.
    """
    incident = update.incident
    channels = set(update_channels(update))
    rows = {}

    def add(channel, address, audience, **links):
        address = _normalise_email(address) if channel == Subscriber.Channel.EMAIL else address
        if address and (channel, address) not in rows:
            rows[(channel, address)] = Delivery(
                update=update, channel=channel, address=address, audience=audience, **links
            )

    if update.audience == Update.Audience.INTERNAL:
        if CHANNEL_STAKEHOLDERS in channels:
            for email in update_stakeholder_emails(update):
                add(Subscriber.Channel.EMAIL, email, Delivery.Audience.STAKEHOLDER)
    elif incident.is_restricted:
        delivery_log.info(
            "update %s on restricted incident %s: no external audience is told", update.pk, incident.pk
        )
    else:
        services = list(incident.services.all())
        subscribers = subscriber_list_for(services=services, severity=incident.severity)
        wanted = []
        if CHANNEL_EMAIL_SUBSCRIBERS in channels:
            wanted.append(Subscriber.Channel.EMAIL)
        if CHANNEL_STATUS_PAGE in channels:
            wanted += [Subscriber.Channel.WEBHOOK, Subscriber.Channel.SLACK]
        for pk, channel, email, url in subscribers.filter(channel__in=wanted).values_list(
            "pk", "channel", "email", "url"
        ):
            add(channel, email or url, Delivery.Audience.SUBSCRIBER, subscriber_id=pk)
        if CHANNEL_DIRECT_OUTREACH in channels:
            for pk, email in outreach_contacts_for(services=services).values_list("pk", "email"):
                add(Subscriber.Channel.EMAIL, email, Delivery.Audience.OUTREACH, outreach_contact_id=pk)
    return rows


def update_recipient_summary(update):
    """{"email": n, "webhook": n, "slack": n} of who publishing it would reach now (the confirm page)."""
    counts = {channel: 0 for channel in Subscriber.Channel.values}
    for channel, _address in update_recipients(update):
        counts[channel] += 1
    return counts


def update_deliveries_create(*, update):
    """Called by the publishing service inside its transaction: one delivery per recipient of a
    published update (update_recipients; a repeat creates nothing new), handed to Celery after
    commit. Returns the number of new rows."""
    rows = update_recipients(update)
    before = Delivery.objects.filter(update=update).count()
    Delivery.objects.bulk_create(rows.values(), batch_size=1000, ignore_conflicts=True)
    created = Delivery.objects.filter(update=update).count() - before
    update_id = update.pk
    transaction.on_commit(lambda: deliveries_enqueue_safely(update_id=update_id))
    return created


def deliveries_enqueue_safely(*, update_id):
    task_enqueue("update_deliveries_fan_out", update_id, what=f"the fan-out of update {update_id}")


def _chunks(ids, size):
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def deliveries_enqueue(*, delivery_ids):
    """Hand these deliveries to the broker in chunks and stamp them enqueued. Returns how many were."""
    done = 0
    for chunk in _chunks(list(delivery_ids), _setting("COMMS_DELIVERY_CHUNK_SIZE", 50)):
        if not task_enqueue("deliveries_send", chunk, what=f"{len(chunk)} deliveries"):
            break
        Delivery.objects.filter(pk__in=chunk, state__in=[Delivery.State.PENDING, Delivery.State.SENDING]).update(
            enqueued_at=timezone.now()
        )
        done += len(chunk)
    return done


def update_deliveries_fan_out(*, update_id):
    """The publish's one task: enqueue every delivery of the update not handed to the broker yet."""
    ids = list(
        Delivery.objects.filter(update_id=update_id, state=Delivery.State.PENDING, enqueued_at__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)
    )
    return deliveries_enqueue(delivery_ids=ids)


def deliveries_sweep(*, now=None):
    """Beat, every minute: re-enqueue deliveries the broker never got (down at publish time), ones
    claimed by a worker that died (sending, claim not renewed for the claim timeout) and lost ones:
    pending after enqueueing, either for REQUEUE_AFTER, or for a claim timeout while no worker has
    claimed anything (messages a crashed worker had reserved come back from Redis only after its
    visibility timeout, an hour; an idle queue means they are not simply waiting their turn)."""
    now = now or timezone.now()
    never = Q(state=Delivery.State.PENDING, enqueued_at__isnull=True) & Q(
        created_at__lt=now - timedelta(seconds=_setting("COMMS_DELIVERY_SWEEP_AFTER", 60))
    )
    lost = Q(
        state=Delivery.State.PENDING,
        enqueued_at__lt=now - timedelta(seconds=_setting("COMMS_DELIVERY_REQUEUE_AFTER", 3600)),
    )
    idle = not Delivery.objects.filter(claimed_at__gte=now - _claim_timeout()).exists()
    if idle:
        lost |= Q(state=Delivery.State.PENDING, enqueued_at__lt=now - _claim_timeout())
    stale = Q(state=Delivery.State.SENDING, claimed_at__lt=now - _claim_timeout())
    ids = list(
        Delivery.objects.filter(never | lost | stale)
        .order_by("id")
        .values_list("id", flat=True)[: _setting("COMMS_DELIVERY_SWEEP_LIMIT", 20000)]
    )
    return deliveries_enqueue(delivery_ids=ids)


def _claim_timeout():
    return timedelta(seconds=_setting("COMMS_DELIVERY_CLAIM_TIMEOUT", 120))


class DeliveryProgress(dict):
    """{"pending": n, "sending": n, "sent": n, "failed": n, "total": n}; reads "sent 480 / pending 15 / …"."""

    def __str__(self):
        if not self["total"]:
            return "No recipients."
        parts = [f"{state} {self[state]}" for state in Delivery.State.values if self[state] or state == "sent"]
        return " / ".join(parts) + f" (of {self['total']})"


def update_delivery_progress(update):
    """Counts per delivery state, one query: for the Update admin, the API and the benchmark."""
    counts = dict(Delivery.objects.filter(update=update).values_list("state").annotate(n=Count("id")).order_by())
    progress = DeliveryProgress({state: counts.get(state, 0) for state in Delivery.State.values})
    progress["total"] = sum(progress.values())
    return progress


# -- sending --


def _message_domain():
    return urlsplit(settings.SITE_URL).hostname or "localhost"


def subject_status_tag(public_status, headline):
    """"[Resolved] " before a subject, unless the headline already says it ("Resolved: Checkout")."""
    label = public_status or "Update"
    return "" if headline.lower().startswith(label.lower()) else f"[{label}] "


def _update_context(update):
    """What an update's messages say. External ones name the incident publicly (never its internal
    title or reference); internal ones go to the company's own people and may."""
    incident = update.incident
    body_html = update.body_html
    if not body_html:
        body_html = markdown_render(update.body)
    external = update.audience == Update.Audience.EXTERNAL
    name = incident_public_name(incident) if external else incident.title
    headline = getattr(update, "title", "") or name
    public_status = update.get_public_status_display() if update.public_status else ""
    context = {
        "update": update,
        "headline": headline,
        "public_status": public_status,
        "subject_tag": subject_status_tag(public_status, headline),
        "body_html": body_html,
        "status_page_url": settings.SITE_URL + "/status/",
        "site_url": settings.SITE_URL,
    }
    if external:
        context |= {
            "incident_name": name,
            "public_impact": incident.public_impact,
            "incident_url": settings.SITE_URL + reverse("status:incident", args=[public_ids.encode("incident", incident.pk)]),
            "incident_public_id": public_ids.encode("incident", incident.pk),
        }
    else:
        context["incident"] = incident
    return context


def _message_id(delivery):
    return f"delivery-{delivery.pk}.update-{delivery.update_id}@{_message_domain()}"


def _email_for(delivery, context):
    update = delivery.update
    context = {**context, "delivery": delivery, "unsubscribe_url": None}
    headers = {"Message-ID": f"<{_message_id(delivery)}>"}
    if delivery.subscriber_id is not None:
        url = subscriber_unsubscribe_url(delivery.subscriber)
        context["unsubscribe_url"] = url
        headers["List-Unsubscribe"] = f"<{url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    kind = "internal" if update.audience == Update.Audience.INTERNAL else "external"
    message = EmailMultiAlternatives(
        subject=subject_line(render_to_string(f"comms/email/update_{kind}_subject.txt", context)),
        body=render_to_string(f"comms/email/update_{kind}.txt", context),
        to=[delivery.address],
        headers=headers,
    )
    message.attach_alternative(render_to_string(f"comms/email/update_{kind}.html", context), "text/html")
    return message


def _webhook_payload(delivery, context):
    update = delivery.update
    if delivery.channel == Subscriber.Channel.SLACK:
        # Everything written by people is escaped: "<!channel>" in a body must not ping a customer's channel.
        status = f" — {slack_escape(context['public_status'])}" if context["public_status"] else ""
        headline, body = slack_escape(context["headline"]), slack_escape(update.body)
        return {"text": f"*{headline}*{status}\n{body}\n<{context['status_page_url']}|Status page>"}
    return {
        "event": "update.published",
        "incident": {  # its public identity only: never the internal title or reference
            "id": context["incident_public_id"],
            "name": context["incident_name"],
            "impact_statement": context["public_impact"],
            "url": context["incident_url"],
        },
        "headline": context["headline"],
        "update": {
            "id": public_ids.encode("update", update.pk),
            "status": update.public_status,
            "body": update.body,
            "body_html": context["body_html"],
            "published_at": update.published_at.isoformat() if update.published_at else None,
        },
        "status_page_url": context["status_page_url"],
    }


class _Permanent(Exception):
    """A failure that trying again will not fix (a refused address, a 4xx)."""


SubscriberWebhookRefused = _Permanent


def _post_webhook(delivery, context):
    subscriber_webhook_post(delivery.address, _webhook_payload(delivery, context))


def subscriber_webhook_post(url, payload):
    """POST JSON to a subscriber's webhook with the outbound webhooks' guard: every address the host
    resolves to is checked, and the connection goes to a checked one (no DNS rebinding). Raises
    SubscriberWebhookRefused (permanent) or DeliveryRetry (try again later)."""
    allow_private = _setting("COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE", False)
    try:
        destination = webhooks.destination_check(url, allow_private=allow_private)
    except webhooks.DestinationRefused as error:
        raise _Permanent(f"{error} (COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE)") from None
    except webhooks.WebhookError as error:
        raise DeliveryRetry(str(error)) from None
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "incidents-subscriptions/1"}
    try:
        status, excerpt, _location = webhooks.destination_post(
            destination, body, headers, _setting("COMMS_WEBHOOK_TIMEOUT", 10)
        )
    except (OSError, http.client.HTTPException) as error:
        # HTTPException: a malformed answer (no status line, bad headers) is a failed attempt, retried.
        raise DeliveryRetry(f"{type(error).__name__}: {error}"[:500]) from None
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}: {excerpt[:200]}"
    if 400 <= status < 500 and status not in (408, 425, 429):
        raise _Permanent(detail)
    raise DeliveryRetry(detail)


def _email_send(delivery, context, connection):
    """Send one delivery's e-mail on the chunk's open connection.

    Subscribers' copies of one update over SMTP take the fast path (email_merge): the first two are
    built and sent the usual way, and if their messages differ only in address, Message-ID and
    unsubscribe link, the rest of the chunk gets the same bytes with those substituted.
    """
    recipient = None
    if delivery.subscriber_id is not None and isinstance(connection, SMTPBackend) and connection.connection:
        recipient = email_merge.Recipient(
            address=delivery.address,
            message_id=_message_id(delivery),
            unsubscribe_url=subscriber_unsubscribe_url(delivery.subscriber),
        )
    merge = context.get("_merge")  # not tried yet, (message, recipient) of the first copy, a MergedMessage, or False
    if recipient is not None and isinstance(merge, email_merge.MergedMessage):
        data = merge.bytes_for(recipient)
        if data is not None:
            connection.connection.sendmail(merge.from_email, [delivery.address], data)
            return
    message = _email_for(delivery, context)
    message.connection = connection
    message.send()
    if recipient is not None and merge is None:
        context["_merge"] = (message, recipient)
    elif recipient is not None and isinstance(merge, tuple):
        context["_merge"] = email_merge.MergedMessage.build(*merge, message, recipient) or False


def _send_one(delivery, context, connection):
    if delivery.channel == Subscriber.Channel.EMAIL:
        try:
            connection.open()  # once per chunk: kept open (SMTP session, mail file) until a failure closes it
            _email_send(delivery, context, connection)
        except (smtplib.SMTPRecipientsRefused, ValueError) as error:
            raise _Permanent(f"address refused: {error}") from None
        except smtplib.SMTPResponseException as error:
            if 500 <= error.smtp_code < 600:
                raise _Permanent(f"SMTP {error.smtp_code}: {error.smtp_error!r}") from None
            raise DeliveryRetry(f"SMTP {error.smtp_code}: {error.smtp_error!r}") from None
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryRetry(f"{type(error).__name__}: {error}") from None
    else:
        _post_webhook(delivery, context)


def _claim_heartbeat():
    return timedelta(seconds=_setting("COMMS_DELIVERY_CLAIM_HEARTBEAT", 30))


@functools.cache
def _mark_sent_sql():
    quote = db_connection.ops.quote_name
    table, column = quote(Delivery._meta.db_table), {f.name: quote(f.column) for f in Delivery._meta.concrete_fields}
    return (
        f"UPDATE {table} SET {column['state']} = %s, {column['sent_at']} = %s, {column['last_error']} = '' "
        f"WHERE {column['id']} = %s AND {column['state']} = %s AND {column['claimed_at']} = %s"
    )


def _delivery_mark_sent(delivery_id, claim):
    """sending -> sent for a row this worker still holds (its claim stamp): the fan-out's one statement
    per delivery, written out once, since building it with the ORM cost as much as running it."""
    adapt = db_connection.ops.adapt_datetimefield_value
    params = [Delivery.State.SENT.value, adapt(timezone.now()), delivery_id, Delivery.State.SENDING.value, adapt(claim)]
    with db_connection.cursor() as cursor:
        cursor.execute(_mark_sent_sql(), params)


def deliveries_send(*, delivery_ids):
    """Claim these deliveries, send each, mark each sent straight after its send.

    Claim: one conditional UPDATE (pending -> sending, or sending whose claim is older than the claim
    timeout: its worker died). A delivery already sent, failed, or claimed by a live worker is skipped,
    so a duplicate message does nothing. While it works through the chunk the worker renews its claim
    every COMMS_DELIVERY_CLAIM_HEARTBEAT seconds, so the claim timeout can be short (a crashed worker's
    rows are taken over within minutes) without a slow chunk being taken over while it is alive.
    Any failure of one delivery (a malformed HTTP answer, a bug in a template) is that delivery's:
    it is retried, and the rest of the chunk is sent. Returns [(delivery_id, attempts)] to retry later.
    """
    now = timezone.now()
    claimable = Q(state=Delivery.State.PENDING) | Q(state=Delivery.State.SENDING, claimed_at__lt=now - _claim_timeout())
    claimed = Delivery.objects.filter(claimable, pk__in=list(delivery_ids)).update(
        state=Delivery.State.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return []
    rows = list(
        Delivery.objects.filter(pk__in=list(delivery_ids), state=Delivery.State.SENDING, claimed_at=now)
        .select_related("update__incident", "subscriber")
        .order_by("id")
    )
    retries, contexts = [], {}
    max_attempts = _setting("COMMS_DELIVERY_MAX_ATTEMPTS", 6)
    claim = now  # the claim's stamp: rows still carrying it are this worker's
    connection = get_connection()
    try:
        for index, delivery in enumerate(rows):
            if timezone.now() - claim >= _claim_heartbeat():
                renewed = timezone.now()
                Delivery.objects.filter(
                    pk__in=[row.pk for row in rows[index:]], state=Delivery.State.SENDING, claimed_at=claim
                ).update(claimed_at=renewed)
                claim = renewed
            ours = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING, claimed_at=claim)
            try:
                context = contexts.get(delivery.update_id)
                if context is None:
                    context = contexts[delivery.update_id] = _update_context(delivery.update)
                _send_one(delivery, context, connection)
            except _Permanent as error:
                ours.update(state=Delivery.State.FAILED, last_error=str(error)[:2000])
                continue
            except Exception as error:  # noqa: BLE001 - DeliveryRetry, or anything unforeseen: retry this one
                if not isinstance(error, DeliveryRetry):
                    delivery_log.exception("delivery %s failed unexpectedly; it will be retried", delivery.pk)
                    error = f"{type(error).__name__}: {error}"
                connection.close()
                if delivery.attempts >= max_attempts:
                    ours.update(state=Delivery.State.FAILED, last_error=f"gave up after {delivery.attempts} attempts: {error}"[:2000])
                else:
                    ours.update(state=Delivery.State.PENDING, claimed_at=None, last_error=str(error)[:2000])
                    retries.append((delivery.pk, delivery.attempts))
                continue
            # The one window that cannot be closed: a worker killed right here has sent the message
            # but not marked it. Its row stays "sending" and is sent again after the claim timeout
            # (with the same Message-ID, so mail clients show it once).
            _delivery_mark_sent(delivery.pk, claim)
    finally:
        connection.close()
    return retries


def delivery_retry_countdown(attempts):
    return min(30 * 2 ** max(attempts - 1, 0), 600)



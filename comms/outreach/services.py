"""Direct outreach: draft from the incident, review and approve like an external update, send once per
contact. Every write is a function here; the admin and the tasks call them."""

import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.models import AccountContact, TimelineEvent
from incidents.selectors import incident_accounts_affected
from incidents.services import timeline_event_record

from .. import rendering
from ..enqueue import task_enqueue
from ..services.deliveries import _claim_timeout, _message_domain
from ..services.updates import APPROVE_PERMISSION, PUBLISH_EXTERNAL_PERMISSION
from .models import Outreach, OutreachDelivery

log = logging.getLogger("comms.outreach")

ACCOUNT_PLACEHOLDERS = {
    "account.name": "The account's name.",
    "account.services": "The incident's services that this account uses, comma-separated.",
}
UNSUBSCRIBE_SALT = "comms.outreach.unsubscribe"
BODY_MAX_CHARS = 20000
CHUNK = 50
MAX_ATTEMPTS = 6


class OutreachError(Exception):
    """An outreach step the rules refuse; the message is for the person who asked."""


def _lock(outreach):
    return Outreach.objects.select_for_update(of=("self",)).select_related("incident__severity").get(pk=outreach.pk)


def outreach_text_check(*, subject, body):
    if not (subject or "").strip():
        raise OutreachError("An outreach message needs a subject.")
    if not (body or "").strip():
        raise OutreachError("An outreach message needs a body.")
    if len(body) > BODY_MAX_CHARS:
        raise OutreachError(f"The body is longer than {BODY_MAX_CHARS:,} characters.")
    known = {**rendering.PLACEHOLDERS, **ACCOUNT_PLACEHOLDERS}
    for text in (subject, body):
        for match in rendering.PLACEHOLDER_RE.finditer(text):
            name = rendering.NAME_RE.fullmatch(match[1])
            if name is None or name[1] not in known:
                names = ", ".join(f"{{{{ {n} }}}}" for n in known)
                raise OutreachError(f"Unknown placeholder {match[0]}. Placeholders: {names}.")


def outreach_suggested_tiers(incident):
    """The tiers the incident's severity suggests outreach to (empty: outreach is not suggested)."""
    return list(incident.severity.outreach_tiers.all())


@transaction.atomic
def outreach_draft(*, incident, actor, subject, body, tiers=None, accounts=()):
    """A new draft. Without tiers, the severity's suggested tiers (or every tier if it suggests none)."""
    if incident.is_restricted:
        raise OutreachError("A restricted incident is not told to customers.")
    outreach_text_check(subject=subject, body=body)
    outreach = Outreach.objects.create(incident=incident, subject=subject.strip(), body=body, author=actor)
    outreach.tiers.set(outreach_suggested_tiers(incident) if tiers is None else tiers)
    outreach.accounts.set(accounts)
    return outreach


@transaction.atomic
def outreach_edit(*, outreach, actor, subject=None, body=None, tiers=None, accounts=None):
    """Change a draft's text or audience. Only drafts can be edited."""
    outreach = _lock(outreach)
    if outreach.status != Outreach.Status.DRAFT:
        raise OutreachError(f"Only drafts can be edited; this one is {outreach.get_status_display().lower()}.")
    outreach.subject = outreach.subject if subject is None else subject.strip()
    outreach.body = outreach.body if body is None else body
    outreach_text_check(subject=outreach.subject, body=outreach.body)
    outreach.save()
    if tiers is not None:
        outreach.tiers.set(tiers)
    if accounts is not None:
        outreach.accounts.set(accounts)
    return outreach


@transaction.atomic
def outreach_submit(*, outreach, actor):
    """Draft → in review (again: no-op)."""
    outreach = _lock(outreach)
    if outreach.status == Outreach.Status.IN_REVIEW:
        return outreach
    if outreach.status != Outreach.Status.DRAFT:
        raise OutreachError(f"Only a draft can be submitted; this one is {outreach.get_status_display().lower()}.")
    outreach.status, outreach.submitted_by, outreach.submitted_at = Outreach.Status.IN_REVIEW, actor, timezone.now()
    outreach.save(update_fields=["status", "submitted_by", "submitted_at", "updated_at"])
    return outreach


@transaction.atomic
def outreach_return(*, outreach, actor):
    """In review or approved → draft (the approval is dropped)."""
    outreach = _lock(outreach)
    if outreach.status == Outreach.Status.SENT:
        raise OutreachError("This message has been sent.")
    outreach.status = Outreach.Status.DRAFT
    outreach.submitted_by = outreach.submitted_at = outreach.approved_by = outreach.approved_at = None
    outreach.save()
    return outreach


@transaction.atomic
def outreach_approve(*, outreach, actor):
    """In review → approved, by someone allowed to approve updates who neither wrote nor submitted it."""
    outreach = _lock(outreach)
    if outreach.status == Outreach.Status.APPROVED:
        return outreach
    if outreach.status != Outreach.Status.IN_REVIEW:
        raise OutreachError("Submit the draft for review before approving it.")
    if not actor.has_perm(APPROVE_PERMISSION):
        raise OutreachError("Only the Communications group (or someone allowed to approve updates) can approve.")
    if actor.pk in (outreach.author_id, outreach.submitted_by_id):
        raise OutreachError("It must be approved by someone other than the person who wrote or submitted it.")
    outreach.status, outreach.approved_by, outreach.approved_at = Outreach.Status.APPROVED, actor, timezone.now()
    outreach.save(update_fields=["status", "approved_by", "approved_at", "updated_at"])
    return outreach


def outreach_recipients(outreach):
    """The contacts it goes to: opted in to incident e-mail, at an account the incident affects, in
    one of the chosen tiers (if any) and among the hand-picked accounts (if any)."""
    accounts = incident_accounts_affected(outreach.incident)
    tier_ids = [t.pk for t in outreach.tiers.all()]
    if tier_ids:
        accounts = accounts.filter(tier_id__in=tier_ids)
    picked = [a.pk for a in outreach.accounts.all()]
    if picked:
        accounts = accounts.filter(pk__in=picked)
    return AccountContact.objects.filter(incident_emails=True, account__in=accounts).select_related("account__tier")


@transaction.atomic
def outreach_send(*, outreach, actor):
    """Send: one delivery per recipient (created now, sent by Celery after commit), a timeline event.

    Needs the permission to publish external updates, and an approval first when the severity
    requires one for external updates. Sending again is a no-op."""
    outreach = _lock(outreach)
    if outreach.status == Outreach.Status.SENT:
        return outreach
    incident = outreach.incident
    if not actor.has_perm(PUBLISH_EXTERNAL_PERMISSION):
        raise OutreachError("Only the Communications group (or someone allowed to publish external updates) can send.")
    if incident.severity.update_approval_required and outreach.status != Outreach.Status.APPROVED:
        raise OutreachError(f"{incident.severity.label} outreach must be approved by another person: submit it for review.")
    if incident.is_restricted:
        raise OutreachError("A restricted incident is not told to customers.")
    contacts = list(outreach_recipients(outreach))
    if not contacts:
        raise OutreachError("Nobody would receive it: no opted-in contact at the affected accounts chosen.")
    OutreachDelivery.objects.bulk_create(
        [OutreachDelivery(outreach=outreach, account=c.account, contact=c, address=c.email.lower()) for c in contacts],
        ignore_conflicts=True,
    )
    now = timezone.now()
    outreach.status, outreach.sent_by, outreach.sent_at = Outreach.Status.SENT, actor, now
    outreach.save(update_fields=["status", "sent_by", "sent_at", "updated_at"])
    accounts = len({c.account_id for c in contacts})
    timeline_event_record(
        incident=incident,
        kind=TimelineEvent.Kind.UPDATE_PUBLISHED,
        actor=actor,
        occurred_at=now,
        body=f"Direct outreach sent to {len(contacts)} contact{'s' * (len(contacts) != 1)} at {accounts} "
        f"account{'s' * (accounts != 1)}: {outreach.subject}",
        data={"outreach_id": outreach.pk, "contacts": len(contacts), "accounts": accounts},
    )
    outreach_id = outreach.pk
    transaction.on_commit(lambda: outreach_deliveries_enqueue(outreach_id=outreach_id))
    return outreach


def outreach_deliveries_enqueue(*, outreach_id=None, delivery_ids=None):
    """Hand pending deliveries to the broker in chunks (broker down: the sweep retries)."""
    if delivery_ids is None:
        delivery_ids = list(
            OutreachDelivery.objects.filter(outreach_id=outreach_id, state=OutreachDelivery.State.PENDING)
            .order_by("id")
            .values_list("id", flat=True)
        )
    for start in range(0, len(delivery_ids), CHUNK):
        chunk = delivery_ids[start : start + CHUNK]
        if not task_enqueue("outreach_deliveries_send", chunk, what=f"{len(chunk)} outreach deliveries"):
            return


def outreach_deliveries_sweep(*, now=None):
    """Beat: pending deliveries older than a minute (broker down, lost) and ones claimed by a worker
    that died go to a worker again. Returns how many."""
    now = now or timezone.now()
    ids = list(
        OutreachDelivery.objects.filter(
            Q(state=OutreachDelivery.State.PENDING, created_at__lt=now - timedelta(seconds=60))
            | Q(state=OutreachDelivery.State.SENDING, claimed_at__lt=now - _claim_timeout())
        )
        .order_by("id")
        .values_list("id", flat=True)[:20000]
    )
    outreach_deliveries_enqueue(delivery_ids=ids)
    return len(ids)


# ---- sending ----


def outreach_unsubscribe_url(contact):
    token = signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object(contact.pk)
    return settings.SITE_URL + reverse("comms_subscriptions:outreach_unsubscribe", args=[token])


@transaction.atomic
def outreach_unsubscribe(*, token):
    """The contact's one-click opt-out: no more incident e-mail to this address. Repeating changes nothing."""
    try:
        pk = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except signing.BadSignature:
        raise OutreachError("This unsubscribe link is not valid.") from None
    contact = AccountContact.objects.select_for_update().filter(pk=pk).first()
    if contact is None:
        raise OutreachError("This unsubscribe link is not valid.")
    if contact.incident_emails:
        contact.incident_emails = False
        contact.save(update_fields=["incident_emails"])
    return contact


def outreach_render(outreach, account, now=None):
    """(subject, text, html) for one account: incident placeholders as for external updates, plus the
    account's name and the incident's services it uses."""
    values = rendering.placeholder_values(incident=outreach.incident, audience="external", now=now)
    incident_services = {s.pk for s in outreach.incident.services.all()}
    used = [s.name for s in account.services.all() if s.pk in incident_services]
    values |= {"account.name": account.name, "account.services": ", ".join(used) or values["services"]}
    subject = " ".join(rendering.placeholders_fill(outreach.subject, values).split())  # one line, always
    text = rendering.placeholders_fill(outreach.body, values)
    return subject, text, rendering.markdown_render(text)


def _email(delivery, rendered):
    subject, text, html = rendered
    url = outreach_unsubscribe_url(delivery.contact) if delivery.contact_id else None
    context = {"text": text, "html": html, "unsubscribe_url": url, "site_url": settings.SITE_URL}
    headers = {"Message-ID": f"<outreach-{delivery.pk}@{_message_domain()}>"}
    if url:
        headers |= {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    message = EmailMultiAlternatives(
        subject=subject, body=render_to_string("comms/email/outreach.txt", context), to=[delivery.address], headers=headers
    )
    message.attach_alternative(render_to_string("comms/email/outreach.html", context), "text/html")
    return message


def outreach_deliveries_send(*, delivery_ids):
    """Claim these deliveries (pending, or sending by a worker that died), send each over one SMTP
    connection, mark each sent at once. Returns [(delivery_id, attempts)] to retry later."""
    now = timezone.now()
    claimable = Q(state=OutreachDelivery.State.PENDING) | Q(
        state=OutreachDelivery.State.SENDING, claimed_at__lt=now - _claim_timeout()
    )
    ids = list(delivery_ids)
    if not OutreachDelivery.objects.filter(claimable, pk__in=ids).update(
        state=OutreachDelivery.State.SENDING, claimed_at=now, attempts=F("attempts") + 1
    ):
        return []
    rows = (
        OutreachDelivery.objects.filter(pk__in=ids, state=OutreachDelivery.State.SENDING, claimed_at=now)
        .select_related("outreach__incident__severity", "account", "contact")
        .order_by("id")
    )
    retries, rendered = [], {}
    connection = get_connection()
    try:
        for delivery in rows:
            ours = OutreachDelivery.objects.filter(pk=delivery.pk, state=OutreachDelivery.State.SENDING, claimed_at=now)
            key = (delivery.outreach_id, delivery.account_id)
            if key not in rendered:
                rendered[key] = outreach_render(delivery.outreach, delivery.account)
            try:
                connection.open()
                message = _email(delivery, rendered[key])
                message.connection = connection
                message.send()
            except (smtplib.SMTPRecipientsRefused, ValueError) as error:
                ours.update(state=OutreachDelivery.State.FAILED, last_error=f"address refused: {error}"[:2000])
                continue
            except (smtplib.SMTPException, OSError) as error:
                connection.close()
                if delivery.attempts >= MAX_ATTEMPTS:
                    ours.update(state=OutreachDelivery.State.FAILED, last_error=f"gave up: {error}"[:2000])
                else:
                    ours.update(state=OutreachDelivery.State.PENDING, claimed_at=None, last_error=str(error)[:2000])
                    retries.append((delivery.pk, delivery.attempts))
                log.warning("outreach delivery %s not sent: %s", delivery.pk, error)
                continue
            ours.update(state=OutreachDelivery.State.SENT, sent_at=timezone.now(), last_error="")
    finally:
        connection.close()
    return retries

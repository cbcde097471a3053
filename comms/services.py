"""Every write in comms goes through a function here (one per change); sections by area."""

import json
import logging
import smtplib
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.models import Incident, RoleAssignment, TimelineEvent
from incidents.services import timeline_event_record

from . import rendering
from .models import (
    ComponentStatus,
    Delivery,
    IncidentNudge,
    MaintenanceNotice,
    MaintenanceUpdate,
    OutreachContact,
    ScheduledMaintenance,
    Subscriber,
    Update,
    UpdateComponent,
)

# ---- Updates and templates ----


class UpdateError(Exception):
    """An update change the rules refuse; the message is for the person who asked (API: 400)."""


class UpdateStepError(UpdateError):
    """A workflow step that is not allowed in the update's current state (API: 409)."""


class UpdatePermissionError(UpdateError):
    """The person may not take this step (approve, publish externally) (API: 403)."""


APPROVE_PERMISSION = "comms.approve_update"
PUBLISH_EXTERNAL_PERMISSION = "comms.publish_external_update"

# Where a published update goes (the deliveries work turns these into one delivery per recipient).
CHANNEL_STATUS_PAGE = "status_page"
CHANNEL_EMAIL_SUBSCRIBERS = "email_subscribers"
CHANNEL_DIRECT_OUTREACH = "direct_outreach"
CHANNEL_STAKEHOLDERS = "stakeholders"

EDITABLE_UPDATE_FIELDS = ("title", "body", "public_status")


def _lock_update(update):
    return (
        Update.objects.select_for_update(of=("self",))
        .select_related("incident__severity", "author", "submitted_by")
        .get(pk=update.pk)
    )


def update_placeholders_check(**texts):
    """Raise UpdateError naming every placeholder not on the fixed list (field → text)."""
    for field, text in texts.items():
        unknown = rendering.unknown_placeholders(text)
        if unknown:
            error = UpdateError(rendering.unknown_placeholders_message(unknown))
            error.field = field
            raise error


def update_content_check(*, audience, public_status, body, components):
    if audience not in Update.Audience.values:
        raise UpdateError(f"Unknown audience {audience!r}: internal or external.")
    if audience == Update.Audience.EXTERNAL:
        if public_status not in Update.PublicStatus.values:
            raise UpdateError("An external update needs a public status: investigating, identified, monitoring, "
                              "resolved or postmortem.")
    elif public_status:
        raise UpdateError("Only external updates carry a public status.")
    if not (body or "").strip():
        raise UpdateError("An update needs a body.")
    if components:
        if audience != Update.Audience.EXTERNAL:
            raise UpdateError("Only external updates name status-page components.")
        seen = set()
        for service, status in components:
            if status not in ComponentStatus.values:
                raise UpdateError(f"Unknown component status {status!r}.")
            if not service.is_public:
                raise UpdateError(f"{service.name} is not on the public status page, so it is not a component.")
            if service.pk in seen:
                raise UpdateError(f"{service.name} is named twice.")
            seen.add(service.pk)


def _components_set(update, components):
    if components is None:
        return
    update.components.all().delete()
    UpdateComponent.objects.bulk_create(
        UpdateComponent(update=update, service=service, status=status) for service, status in components
    )


def update_preview(*, incident, audience, public_status="", title="", body="", now=None):
    """(title, body, html) as they would read if published now: placeholders filled, Markdown rendered."""
    update_placeholders_check(title=title, body=body)
    values = rendering.placeholder_values(
        incident=incident, audience=audience, public_status=public_status, now=now
    )
    filled_body = rendering.placeholders_fill(body, values)
    return rendering.placeholders_fill(title, values), filled_body, rendering.markdown_render(filled_body)


def _rerender(update):
    _title, _body, update.body_html = update_preview(
        incident=update.incident,
        audience=update.audience,
        public_status=update.public_status,
        title=update.title,
        body=update.body,
    )


@transaction.atomic
def update_draft_create(
    *, incident, actor, audience=None, title="", body="", public_status="", template=None, components=None
):
    """A new draft, written freely or started from a template (its title and body fill the empty ones).

    Placeholders stay in the draft (its preview shows them filled) and are filled for good when it is
    published. components: [(service, component status)], external updates only.
    """
    if template is not None:
        audience = audience or template.audience
        if template.audience != audience:
            raise UpdateError(f"The template {template.name!r} is for {template.get_audience_display().lower()} updates.")
        if template.severity_id is not None and template.severity_id != incident.severity_id:
            raise UpdateError(f"The template {template.name!r} is for {template.severity.label} incidents.")
        if audience == Update.Audience.EXTERNAL:
            public_status = public_status or template.public_status or Update.PublicStatus.INVESTIGATING
        title = title or template.title
        body = body or template.body
    if audience is None:
        raise UpdateError("Choose the audience (internal or external) or a template.")
    update_content_check(audience=audience, public_status=public_status, body=body, components=components)
    update = Update(
        incident=incident,
        audience=audience,
        public_status=public_status,
        title=title,
        body=body,
        template=template,
        author=actor,
    )
    _rerender(update)
    update.save()
    _components_set(update, components)
    return update


@transaction.atomic
def update_edit(*, update, actor, components=None, **fields):
    """Change a draft's title, body, public status or components. Only drafts can be edited."""
    unknown = set(fields) - set(EDITABLE_UPDATE_FIELDS)
    if unknown:
        raise UpdateError(f"These cannot be edited: {', '.join(sorted(unknown))}.")
    update = _lock_update(update)
    if update.status != Update.Status.DRAFT:
        raise UpdateStepError(
            f"Only drafts can be edited; this update is {update.get_status_display().lower()}."
            + (" Send it back to draft first." if update.status != Update.Status.PUBLISHED else " Correct it instead.")
        )
    changed = [name for name, value in fields.items() if getattr(update, name) != value]
    for name in changed:
        setattr(update, name, fields[name])
    current = [(c.service, c.status) for c in update.components.select_related("service")]
    update_content_check(
        audience=update.audience,
        public_status=update.public_status,
        body=update.body,
        components=components if components is not None else current,
    )
    _rerender(update)
    update.save()
    _components_set(update, components)
    return update


@transaction.atomic
def update_submit(*, update, actor):
    """Draft → in review. Submitting again is a no-op."""
    update = _lock_update(update)
    if update.status == Update.Status.IN_REVIEW:
        return update
    if update.status != Update.Status.DRAFT:
        raise UpdateStepError(f"Only a draft can be submitted for review; this update is {update.get_status_display().lower()}.")
    update.status = Update.Status.IN_REVIEW
    update.submitted_by, update.submitted_at = actor, timezone.now()
    update.save(update_fields=["status", "submitted_by", "submitted_at", "updated_at"])
    return update


@transaction.atomic
def update_return(*, update, actor):
    """In review or approved → back to draft for changes (the approval is dropped). A draft stays one."""
    update = _lock_update(update)
    if update.status == Update.Status.DRAFT:
        return update
    if update.status == Update.Status.PUBLISHED:
        raise UpdateStepError("A published update cannot go back to draft; correct it instead.")
    update.status = Update.Status.DRAFT
    update.submitted_by = update.submitted_at = update.approved_by = update.approved_at = None
    update.save(update_fields=["status", "submitted_by", "submitted_at", "approved_by", "approved_at", "updated_at"])
    return update


def approval_required(update):
    """External updates need a second person's approval when the incident's severity says so."""
    return update.audience == Update.Audience.EXTERNAL and update.incident.severity.update_approval_required


@transaction.atomic
def update_approve(*, update, actor):
    """In review → approved, by someone with the approve permission who neither wrote nor submitted it."""
    update = _lock_update(update)
    if update.status == Update.Status.APPROVED:
        return update
    if update.status == Update.Status.PUBLISHED:
        raise UpdateStepError("This update is already published.")
    if update.status == Update.Status.DRAFT:
        raise UpdateStepError("Submit this draft for review before approving it.")
    if not actor.has_perm(APPROVE_PERMISSION):
        raise UpdatePermissionError("Only the Communications group (or someone allowed to approve updates) can approve.")
    if actor.pk in (update.author_id, update.submitted_by_id):
        raise UpdateStepError("An update must be approved by someone other than the person who wrote or submitted it.")
    update.status = Update.Status.APPROVED
    update.approved_by, update.approved_at = actor, timezone.now()
    update.save(update_fields=["status", "approved_by", "approved_at", "updated_at"])
    return update


@transaction.atomic
def update_publish(*, update, actor):
    """Publish: placeholders filled for good, a timeline event on the incident, deliveries created.

    External updates need the publish permission, and an approval first when the severity requires
    one. Internal updates need neither. Publishing again is a no-op.
    """
    update = _lock_update(update)
    if update.status == Update.Status.PUBLISHED:
        return update
    if update.audience == Update.Audience.EXTERNAL and not actor.has_perm(PUBLISH_EXTERNAL_PERMISSION):
        raise UpdatePermissionError("Only the Communications group (or someone allowed to) can publish external updates.")
    if approval_required(update) and update.status != Update.Status.APPROVED:
        raise UpdateStepError(
            f"{update.incident.severity.label} external updates must be approved by another person before "
            "publishing: submit it for review."
        )
    now = timezone.now()
    update.title, update.body, update.body_html = update_preview(
        incident=update.incident,
        audience=update.audience,
        public_status=update.public_status,
        title=update.title,
        body=update.body,
        now=now,
    )
    update.status = Update.Status.PUBLISHED
    update.published_at, update.published_by = now, actor
    update.save()
    data = {"update_id": update.pk, "audience": update.audience, "public_status": update.public_status}
    if update.corrects_id is not None:
        data["corrects"] = update.corrects_id
    summary = update.title or update.body.strip().splitlines()[0][:200]
    label = "Correction" if update.corrects_id else f"{update.get_audience_display().split(' (')[0]} update"
    timeline_event_record(
        incident=update.incident,
        kind=TimelineEvent.Kind.UPDATE_PUBLISHED,
        actor=actor,
        occurred_at=now,
        body=f"{label} published: {summary}",
        data=data,
    )
    update_deliveries_create(update=update)
    return update


@transaction.atomic
def update_correct(*, update, actor, title=None, body=None):
    """A draft correction of a published update (the original stays published as it was).

    It starts as a copy of the original (text, public status, components) and goes through the same
    review and publishing. Asking again while a correction is unpublished returns that one.
    """
    original = _lock_update(update)
    if original.status != Update.Status.PUBLISHED:
        raise UpdateStepError("Only a published update can be corrected; edit the draft instead.")
    pending = original.corrections.exclude(status=Update.Status.PUBLISHED).order_by("id").first()
    if pending is not None:
        return pending
    correction = Update(
        incident=original.incident,
        audience=original.audience,
        public_status=original.public_status,
        title=original.title if title is None else title,
        body=original.body if body is None else body,
        template=original.template,
        corrects=original,
        author=actor,
    )
    update_content_check(audience=correction.audience, public_status=correction.public_status, body=correction.body,
                   components=None)
    _rerender(correction)
    correction.save()
    _components_set(correction, [(c.service, c.status) for c in original.components.select_related("service")])
    return correction


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
    """Who hears an internal update: the incident's current role holders, plus COMMS_STAKEHOLDER_EMAILS
    (executives, support leads) unless the incident is restricted. Sorted, without duplicates."""
    holders = RoleAssignment.objects.filter(
        incident_id=update.incident_id, relieved_at__isnull=True, user__is_active=True
    ).exclude(user__email="")
    emails = set(holders.values_list("user__email", flat=True))
    if not update.incident.is_restricted:
        emails.update(getattr(settings, "COMMS_STAKEHOLDER_EMAILS", ()))
    return sorted(e for e in emails if e)


def incident_next_update_due(incident):
    """When the incident's next update is due (a datetime), or None when it is not open.

    Counted from its latest published update (internal or external), or from its detection when none
    was published yet, plus its severity's update_interval_minutes. Overdue when in the past.
    """
    if incident.status not in incident.OPEN_STATUSES:
        return None
    last = (
        Update.objects.filter(incident_id=incident.pk, status=Update.Status.PUBLISHED)
        .order_by("-published_at")
        .values_list("published_at", flat=True)
        .first()
    )
    base = last or incident.detected_at
    return base + timedelta(minutes=incident.severity.update_interval_minutes)


# ---- Subscribers and deliveries ----


# Subscribers hear of published external updates; stakeholders (the incident's active role holders)
# of internal ones; direct-outreach contacts of external ones when the severity's policy says so.
# One Delivery row per (update, channel, address), created in the publishing transaction and sent by
# Celery after commit: a worker claims rows (pending -> sending), sends, marks each sent at once.
# (datetime.timedelta, settings, transaction, timezone, RoleAssignment and Update are imported above.)


delivery_log = logging.getLogger("comms.deliveries")

CONFIRM_SALT = "comms.subscriber.confirm"
UNSUBSCRIBE_SALT = "comms.subscriber.unsubscribe"


class SubscriberError(Exception):
    """A subscription change that is not allowed; the message is meant for the person who asked."""


class DeliveryRetry(Exception):
    """A temporary failure: the delivery is pending again and should be retried later."""


def _setting(name, default):
    return getattr(settings, name, default)


# -- subscribers --


def _normalise_email(email):
    return (email or "").strip().lower()


def _check_url(url):
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubscriberError("A webhook subscriber needs an http or https URL.")


def subscriber_confirm_url(subscriber):
    token = signing.dumps(
        {"s": subscriber.pk, "t": subscriber.confirmation_sent_at.isoformat()}, salt=CONFIRM_SALT, compress=True
    )
    return settings.SITE_URL + reverse("comms_subscriptions:confirm", args=[token])


def subscriber_unsubscribe_url(subscriber):
    """The signed one-click unsubscribe link (GET shows a button, POST unsubscribes; no login)."""
    token = signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object(subscriber.pk)  # the same link in every mail
    return settings.SITE_URL + reverse("comms_subscriptions:unsubscribe", args=[token])


def _confirmation_send(subscriber):
    context = {"subscriber": subscriber, "confirm_url": subscriber_confirm_url(subscriber), "site_url": settings.SITE_URL}
    message = EmailMultiAlternatives(
        subject=render_to_string("comms/email/confirm_subject.txt", context).strip(),
        body=render_to_string("comms/email/confirm.txt", context),
        to=[subscriber.email],
    )
    message.send()


@transaction.atomic
def subscriber_subscribe(*, email, services=(), min_severity=None):
    """The public form: a new or not yet confirmed address gets a confirmation link (double opt-in).

    An address that is already confirmed is left as it is and gets nothing (the form answers the same
    either way, so it tells nobody who is subscribed). Only the latest confirmation link works.
    """
    email = _normalise_email(email)
    if not email:
        raise SubscriberError("Enter an e-mail address.")
    subscriber = Subscriber.objects.select_for_update().filter(channel=Subscriber.Channel.EMAIL, email=email).first()
    if subscriber is not None and subscriber.is_active:
        return subscriber
    if subscriber is None:
        subscriber = Subscriber(channel=Subscriber.Channel.EMAIL, email=email, source=Subscriber.Source.PUBLIC)
    subscriber.min_severity = min_severity
    subscriber.confirmation_sent_at = timezone.now()
    subscriber.save()
    subscriber.services.set(services)
    transaction.on_commit(lambda: _confirmation_send(subscriber))
    return subscriber


@transaction.atomic
def subscriber_confirm(*, token):
    """Follows the link from the confirmation e-mail. Repeating it changes nothing."""
    try:
        data = signing.loads(token, salt=CONFIRM_SALT, max_age=_setting("COMMS_CONFIRM_MAX_AGE", 7 * 86400))
    except signing.SignatureExpired:
        raise SubscriberError("This confirmation link has expired: subscribe again for a new one.") from None
    except signing.BadSignature:
        raise SubscriberError("This confirmation link is not valid.") from None
    subscriber = Subscriber.objects.select_for_update().filter(pk=data.get("s")).first()
    if subscriber is None or subscriber.confirmation_sent_at is None:
        raise SubscriberError("This confirmation link is not valid.")
    if subscriber.confirmation_sent_at.isoformat() != data.get("t"):
        raise SubscriberError("A newer confirmation link was sent: use the latest one.")
    if subscriber.is_active:
        return subscriber
    subscriber.confirmed_at = timezone.now()
    subscriber.unsubscribed_at = None
    subscriber.save(update_fields=["confirmed_at", "unsubscribed_at"])
    return subscriber


def subscriber_from_unsubscribe_token(token):
    try:
        pk = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except signing.BadSignature:
        raise SubscriberError("This unsubscribe link is not valid.") from None
    subscriber = Subscriber.objects.filter(pk=pk).first()
    if subscriber is None:
        raise SubscriberError("This unsubscribe link is not valid.")
    return subscriber


@transaction.atomic
def subscriber_unsubscribe(*, subscriber=None, token=None):
    """One click (RFC 8058 POST) or the admin/API. Repeating it changes nothing."""
    if subscriber is None:
        subscriber = subscriber_from_unsubscribe_token(token)
    subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
    if subscriber.unsubscribed_at is None:
        subscriber.unsubscribed_at = timezone.now()
        subscriber.save(update_fields=["unsubscribed_at"])
    return subscriber


@transaction.atomic
def subscriber_create(
    *, channel, email="", url="", services=(), min_severity=None, source=Subscriber.Source.STAFF, confirmed=True
):
    """Staff and the API add subscribers directly: confirmed by whoever added them."""
    email = _normalise_email(email)
    if channel == Subscriber.Channel.EMAIL:
        if not email:
            raise SubscriberError("An e-mail subscriber needs an address.")
        url = ""
        if Subscriber.objects.filter(channel=channel, email=email).exists():
            raise SubscriberError("This address is already subscribed.")
    else:
        _check_url(url)
        email = ""
        if Subscriber.objects.filter(channel=channel, url=url).exists():
            raise SubscriberError("This URL is already subscribed.")
    subscriber = Subscriber.objects.create(
        channel=channel,
        email=email,
        url=url,
        min_severity=min_severity,
        source=source,
        confirmed_at=timezone.now() if confirmed else None,
    )
    subscriber.services.set(services)
    return subscriber


@transaction.atomic
def subscriber_update(*, subscriber, **fields):
    """Change channel, address, services, minimum severity; `active=True/False` (re)subscribes or unsubscribes."""
    subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
    services = fields.pop("services", None)
    active = fields.pop("active", None)
    if "email" in fields:
        fields["email"] = _normalise_email(fields["email"])
    for name, value in fields.items():
        setattr(subscriber, name, value)
    if subscriber.channel == Subscriber.Channel.EMAIL:
        subscriber.url = ""
        if not subscriber.email:
            raise SubscriberError("An e-mail subscriber needs an address.")
        clash = Subscriber.objects.filter(channel=subscriber.channel, email=subscriber.email)
    else:
        _check_url(subscriber.url)
        subscriber.email = ""
        clash = Subscriber.objects.filter(channel=subscriber.channel, url=subscriber.url)
    if clash.exclude(pk=subscriber.pk).exists():
        raise SubscriberError("Another subscriber already has this address.")
    if active is True and not subscriber.is_active:
        subscriber.confirmed_at = subscriber.confirmed_at or timezone.now()
        subscriber.unsubscribed_at = None
    elif active is False and subscriber.unsubscribed_at is None:
        subscriber.unsubscribed_at = timezone.now()
    subscriber.save()
    if services is not None:
        subscriber.services.set(services)
    return subscriber


@transaction.atomic
def subscriber_delete(*, subscriber):
    """Forget a subscriber (its past deliveries stay, without the link)."""
    Subscriber.objects.filter(pk=subscriber.pk).delete()


def _services_filter(queryset, *, services, owner):
    """Rows that chose no service (everything) or one of `services`: EXISTS subqueries on the M2M table."""
    through = queryset.model.services.through
    chose_any = through.objects.filter(**{f"{owner}_id": OuterRef("pk")})
    chose_these = chose_any.filter(service_id__in=[s.pk for s in services])
    return queryset.filter(~Exists(chose_any) | Exists(chose_these))


def subscriber_list_for(*, services, severity=None):
    """Confirmed, still subscribed subscribers (every channel) who hear of incidents on these services
    at this severity (None: any severity). The status page uses it for maintenance notices."""
    active = Subscriber.objects.filter(confirmed_at__isnull=False, unsubscribed_at__isnull=True)
    subscribers = _services_filter(active, services=services, owner="subscriber")
    if severity is not None:  # "Sev2 or worse" admits levels 1 and 2
        subscribers = subscribers.filter(Q(min_severity__isnull=True) | Q(min_severity__level__gte=severity.level))
    return subscribers


def outreach_contacts_for(*, services):
    return _services_filter(OutreachContact.objects.filter(is_active=True), services=services, owner="outreachcontact")


def update_deliveries_create(*, update):
    """Called by the publishing service inside its transaction: one delivery per recipient of a
    published update (a repeat creates nothing new), handed to Celery after commit.

    External updates go to e-mail subscribers (policy "email_subscribers"), webhook and Slack
    subscribers (whenever the update reaches the status page) and the direct-outreach contacts
    (policy "direct_outreach"); internal ones to the incident's active role holders. An external
    update on a restricted incident reaches no external audience. Returns the number of new rows.
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
    before = Delivery.objects.filter(update=update).count()
    Delivery.objects.bulk_create(rows.values(), batch_size=1000, ignore_conflicts=True)
    created = Delivery.objects.filter(update=update).count() - before
    update_id = update.pk
    transaction.on_commit(lambda: deliveries_enqueue_safely(update_id=update_id))
    return created


def _broker_call(description, call):
    """Hand work to the broker; if it is down, log it: the sweep re-enqueues what is still pending."""
    try:
        call()
        return True
    except Exception:  # noqa: BLE001 - any broker/connection error; the rows are safe in the database
        delivery_log.exception("could not enqueue %s; the delivery sweep will retry it", description)
        return False


def deliveries_enqueue_safely(*, update_id):
    from .tasks import update_deliveries_fan_out

    _broker_call(f"the fan-out of update {update_id}", lambda: update_deliveries_fan_out.delay(update_id))


def _chunks(ids, size):
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def deliveries_enqueue(*, delivery_ids):
    """Hand these deliveries to the broker in chunks and stamp them enqueued. Returns how many were."""
    from .tasks import deliveries_send

    done = 0
    for chunk in _chunks(list(delivery_ids), _setting("COMMS_DELIVERY_CHUNK_SIZE", 50)):
        if not _broker_call(f"{len(chunk)} deliveries", lambda c=chunk: deliveries_send.delay(c)):
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
    """Beat, every minute: re-enqueue deliveries the broker never got (down at publish time), lost
    ones (pending long after enqueueing) and ones claimed by a worker that died (sending too long)."""
    now = now or timezone.now()
    never = Q(state=Delivery.State.PENDING, enqueued_at__isnull=True) & Q(
        created_at__lt=now - timedelta(seconds=_setting("COMMS_DELIVERY_SWEEP_AFTER", 60))
    )
    lost = Q(
        state=Delivery.State.PENDING,
        enqueued_at__lt=now - timedelta(seconds=_setting("COMMS_DELIVERY_REQUEUE_AFTER", 3600)),
    )
    stale = Q(state=Delivery.State.SENDING, claimed_at__lt=now - _claim_timeout())
    ids = list(
        Delivery.objects.filter(never | lost | stale)
        .order_by("id")
        .values_list("id", flat=True)[: _setting("COMMS_DELIVERY_SWEEP_LIMIT", 20000)]
    )
    return deliveries_enqueue(delivery_ids=ids)


def _claim_timeout():
    return timedelta(seconds=_setting("COMMS_DELIVERY_CLAIM_TIMEOUT", 900))


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


def _update_context(update):
    incident = update.incident
    body_html = update.body_html
    if not body_html:
        from .rendering import markdown_render

        body_html = markdown_render(update.body)
    return {
        "update": update,
        "incident": incident,
        "headline": getattr(update, "title", "") or incident.title,
        "public_status": update.get_public_status_display() if update.public_status else "",
        "body_html": body_html,
        "status_page_url": settings.SITE_URL + "/status/",
        "site_url": settings.SITE_URL,
    }


def _email_for(delivery, context):
    update = delivery.update
    context = {**context, "delivery": delivery, "unsubscribe_url": None}
    headers = {"Message-ID": f"<delivery-{delivery.pk}.update-{update.pk}@{_message_domain()}>"}
    if delivery.subscriber_id is not None:
        url = subscriber_unsubscribe_url(delivery.subscriber)
        context["unsubscribe_url"] = url
        headers["List-Unsubscribe"] = f"<{url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    kind = "internal" if update.audience == Update.Audience.INTERNAL else "external"
    message = EmailMultiAlternatives(
        subject=render_to_string(f"comms/email/update_{kind}_subject.txt", context).strip(),
        body=render_to_string(f"comms/email/update_{kind}.txt", context),
        to=[delivery.address],
        headers=headers,
    )
    message.attach_alternative(render_to_string(f"comms/email/update_{kind}.html", context), "text/html")
    return message


def _webhook_payload(delivery, context):
    update, incident = delivery.update, delivery.update.incident
    if delivery.channel == Subscriber.Channel.SLACK:
        status = f" — {context['public_status']}" if context["public_status"] else ""
        return {"text": f"*{context['headline']}*{status}\n{update.body}\n<{context['status_page_url']}|Status page>"}
    return {
        "event": "update.published",
        "incident": {"reference": incident.reference, "title": context["headline"]},
        "update": {
            "id": update.pk,
            "status": update.public_status,
            "body": update.body,
            "body_html": context["body_html"],
            "published_at": update.published_at.isoformat() if update.published_at else None,
        },
        "status_page_url": context["status_page_url"],
    }


class _Permanent(Exception):
    pass


def _post_webhook(delivery, context):
    """POST to a subscriber's webhook with the outbound webhooks' guard: every address the host
    resolves to is checked, and the connection goes to a checked one (no DNS rebinding)."""
    from . import webhooks

    allow_private = _setting("COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE", False)
    try:
        destination = webhooks.destination_check(delivery.address, allow_private=allow_private)
    except webhooks.DestinationRefused as error:
        raise _Permanent(f"{error} (COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE)") from None
    except webhooks.WebhookError as error:
        raise DeliveryRetry(str(error)) from None
    body = json.dumps(_webhook_payload(delivery, context)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "incidents-subscriptions/1"}
    try:
        status, excerpt, _location = webhooks.destination_post(
            destination, body, headers, _setting("COMMS_WEBHOOK_TIMEOUT", 10)
        )
    except OSError as error:
        raise DeliveryRetry(f"{type(error).__name__}: {error}"[:500]) from None
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}: {excerpt[:200]}"
    if 400 <= status < 500 and status not in (408, 425, 429):
        raise _Permanent(detail)
    raise DeliveryRetry(detail)


def _send_one(delivery, context, connection):
    if delivery.channel == Subscriber.Channel.EMAIL:
        try:
            message = _email_for(delivery, context)
            connection.open()  # once per chunk: kept open (SMTP session, mail file) until a failure closes it
            message.connection = connection
            message.send()
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


def deliveries_send(*, delivery_ids):
    """Claim these deliveries, send each, mark each sent straight after its send.

    Claim: one conditional UPDATE (pending -> sending, or sending whose claim is older than the claim
    timeout: its worker died). A delivery already sent, failed, or claimed by a live worker is skipped,
    so a duplicate message does nothing. Returns [(delivery_id, attempts)] to retry later.
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
    connection = get_connection()
    try:
        for delivery in rows:
            ours = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING, claimed_at=now)
            context = contexts.get(delivery.update_id)
            if context is None:
                context = contexts[delivery.update_id] = _update_context(delivery.update)
            try:
                _send_one(delivery, context, connection)
            except _Permanent as error:
                ours.update(state=Delivery.State.FAILED, last_error=str(error)[:2000])
                continue
            except DeliveryRetry as error:
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
            ours.update(state=Delivery.State.SENT, sent_at=timezone.now(), last_error="")
    finally:
        connection.close()
    return retries


def delivery_retry_countdown(attempts):
    return min(30 * 2 ** max(attempts - 1, 0), 600)


# -- update cadence and acknowledgement escalation --


def _role_email(incident, role):
    assignment = (
        RoleAssignment.objects.filter(incident=incident, role=role, relieved_at__isnull=True)
        .select_related("user")
        .first()
    )
    return _normalise_email(assignment.user.email) if assignment and assignment.user.email else ""


def _nudge_recipients(incident, kind):
    Role = RoleAssignment.Role
    commander = _role_email(incident, Role.COMMANDER)
    contact = _normalise_email(incident.severity.escalation_contact)
    if kind == IncidentNudge.Kind.UPDATE_DUE:
        ordered = (_role_email(incident, Role.COMMUNICATIONS_LEAD), commander, contact)
    elif kind == IncidentNudge.Kind.UPDATE_OVERDUE:
        ordered = (commander, contact)
    else:  # acknowledgement escalation: the configured contact, its commander otherwise
        ordered = (contact, commander)
    return next(([e] for e in ordered if e), [])


def _nudges_create(candidates):
    """candidates: [(incident, kind, window)]; creates the rows not there yet (unique per window)."""
    rows = []
    for incident, kind, window in candidates:
        recipients = _nudge_recipients(incident, kind)
        if recipients:
            rows.append(IncidentNudge(incident=incident, kind=kind, window=window, recipients=recipients))
        else:
            delivery_log.warning("%s for incident %s: nobody to tell", kind, incident.pk)
    IncidentNudge.objects.bulk_create(rows, ignore_conflicts=True)


def update_cadence_sweep(*, now=None):
    """Beat: for each open incident whose update is due, nudge the communications lead once per due
    window; overdue by a whole interval, the commander too (once per window). Then send what is pending."""
    now = now or timezone.now()
    candidates = []
    for incident in Incident.objects.open().select_related("severity"):
        due = incident_next_update_due(incident)
        if due is None or now < due:
            continue
        candidates.append((incident, IncidentNudge.Kind.UPDATE_DUE, due))
        if now >= due + timedelta(minutes=incident.severity.update_interval_minutes):
            candidates.append((incident, IncidentNudge.Kind.UPDATE_OVERDUE, due))
    _nudges_create(candidates)
    return nudges_send_pending(kinds=[IncidentNudge.Kind.UPDATE_DUE, IncidentNudge.Kind.UPDATE_OVERDUE], now=now)


def ack_escalation_sweep(*, now=None):
    """Beat: an open incident not acknowledged within its severity's target: tell the escalation
    contact (its commander otherwise), once."""
    now = now or timezone.now()
    candidates = [
        (incident, IncidentNudge.Kind.ACK_ESCALATION, incident.detected_at)
        for incident in Incident.objects.open().filter(acknowledged_at__isnull=True).select_related("severity")
        if now >= incident.detected_at + timedelta(minutes=incident.severity.ack_target_minutes)
    ]
    _nudges_create(candidates)
    return nudges_send_pending(kinds=[IncidentNudge.Kind.ACK_ESCALATION], now=now)


def nudges_send_pending(*, kinds, now=None):
    sent = 0
    now = now or timezone.now()
    stale = now - _claim_timeout()
    pending = IncidentNudge.objects.filter(kind__in=kinds).filter(
        Q(state=IncidentNudge.State.PENDING) | Q(state=IncidentNudge.State.SENDING, claimed_at__lt=stale)
    )
    for nudge_id in pending.values_list("id", flat=True):
        sent += nudge_send(nudge_id=nudge_id)
    return sent


def nudge_send(*, nudge_id):
    """Claim the reminder, send it, mark it sent. A reminder already sent (or being sent) is skipped."""
    now = timezone.now()
    claimable = Q(state=IncidentNudge.State.PENDING) | Q(
        state=IncidentNudge.State.SENDING, claimed_at__lt=now - _claim_timeout()
    )
    if not IncidentNudge.objects.filter(claimable, pk=nudge_id).update(
        state=IncidentNudge.State.SENDING, claimed_at=now, attempts=F("attempts") + 1
    ):
        return 0
    nudge = IncidentNudge.objects.select_related("incident__severity").get(pk=nudge_id)
    ours = IncidentNudge.objects.filter(pk=nudge_id, state=IncidentNudge.State.SENDING, claimed_at=now)
    incident = nudge.incident
    context = {
        "nudge": nudge,
        "incident": incident,
        "admin_url": settings.SITE_URL + reverse("admin:incidents_incident_change", args=[incident.pk]),
        "interval": incident.severity.update_interval_minutes,
        "ack_target": incident.severity.ack_target_minutes,
    }
    try:
        EmailMultiAlternatives(
            subject=render_to_string("comms/email/nudge_subject.txt", context).strip(),
            body=render_to_string("comms/email/nudge.txt", context),
            to=nudge.recipients,
            headers={"Message-ID": f"<nudge-{nudge.pk}@{_message_domain()}>"},
        ).send()
    except (smtplib.SMTPException, OSError, ValueError) as error:
        state = IncidentNudge.State.FAILED if nudge.attempts >= 6 else IncidentNudge.State.PENDING
        ours.update(state=state, last_error=str(error)[:2000])
        return 0
    ours.update(state=IncidentNudge.State.SENT, sent_at=timezone.now(), last_error="")
    return 1


# ---- Outbound webhooks ----


# ---- Status page: scheduled maintenance ----

# A maintenance is scheduled, then moves scheduled -> in progress -> (verifying) -> completed, each
# step writing a public MaintenanceUpdate. Subscribers of its public services hear of it once,
# MAINTENANCE_NOTICE_HOURS before it starts (or when staff say "notify now"): one MaintenanceNotice row
# per maintenance, subscriber and kind, claimed (pending -> sending) by a worker before the e-mail goes.
# (timedelta, settings, transaction, timezone, logging helpers, EmailMultiAlternatives, get_connection,
# render_to_string, F, Q and Subscriber are imported above.)

maintenance_log = logging.getLogger("comms.maintenance")

MAINTENANCE_MESSAGES = {  # Statuspage's default texts, used when staff write none
    ScheduledMaintenance.Status.IN_PROGRESS: "Scheduled maintenance is currently in progress. "
    "We will provide updates as necessary.",
    ScheduledMaintenance.Status.VERIFYING: "Verification is currently underway for the maintenance items.",
    ScheduledMaintenance.Status.COMPLETED: "The scheduled maintenance has been completed.",
}
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
    from .rendering import markdown_render

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
    from .rendering import markdown_render

    unknown = set(fields) - set(MAINTENANCE_EDITABLE_FIELDS)
    if unknown:
        raise MaintenanceError(f"These cannot be edited: {', '.join(sorted(unknown))}.")
    locked = _lock_maintenance(maintenance)
    if locked.status == ScheduledMaintenance.Status.COMPLETED:
        raise MaintenanceError("A completed maintenance cannot be changed.")
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
    return locked


@transaction.atomic
def maintenance_transition(*, maintenance, to, actor=None, body="", at=None):
    """Move a maintenance on (scheduled -> in progress -> verifying -> completed) with a public update.

    Repeating the current status does nothing; a move the lifecycle forbids raises MaintenanceError.
    """
    from .rendering import markdown_render

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
    return locked


def maintenance_recipients(maintenance):
    """Confirmed e-mail subscribers who hear of incidents on the maintenance's public services."""
    services = [s for s in maintenance.services.all() if s.is_public]
    if not services:
        return Subscriber.objects.none()  # work on internal services only is nobody outside's business
    return subscriber_list_for(services=services, severity=None).filter(channel=Subscriber.Channel.EMAIL)


@transaction.atomic
def maintenance_notices_create(*, maintenance, kind=MaintenanceNotice.Kind.UPCOMING, now=None):
    """Tell the maintenance's subscribers of it: one notice per subscriber and kind, ever (a repeat
    creates nothing new), sent by Celery after commit. Returns how many notices are new."""
    now = now or timezone.now()
    locked = _lock_maintenance(maintenance)
    if locked.status == ScheduledMaintenance.Status.COMPLETED:
        raise MaintenanceError("This maintenance has completed; there is nothing to announce.")
    before = MaintenanceNotice.objects.filter(maintenance=locked, kind=kind).count()
    subscriber_ids = list(maintenance_recipients(locked).values_list("pk", flat=True))
    MaintenanceNotice.objects.bulk_create(
        [MaintenanceNotice(maintenance=locked, subscriber_id=pk, kind=kind) for pk in subscriber_ids],
        batch_size=1000,
        ignore_conflicts=True,
    )
    created = MaintenanceNotice.objects.filter(maintenance=locked, kind=kind).count() - before
    if locked.announced_at is None:
        locked.announced_at = now
        locked.save(update_fields=["announced_at", "updated_at"])
    maintenance_id = locked.pk
    transaction.on_commit(lambda: maintenance_notices_enqueue(maintenance_id=maintenance_id))
    return created


def maintenance_notices_enqueue(*, maintenance_id):
    from .tasks import maintenance_notices_send as task

    _broker_call(f"the notices of maintenance {maintenance_id}", lambda: task.delay(maintenance_id))


def _maintenance_email(notice, context, connection):
    subscriber = notice.subscriber
    unsubscribe_url = subscriber_unsubscribe_url(subscriber)
    context = {**context, "subscriber": subscriber, "unsubscribe_url": unsubscribe_url}
    message = EmailMultiAlternatives(
        subject=render_to_string("comms/status/email/maintenance_subject.txt", context).strip(),
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


def _maintenance_context(maintenance):
    from .status import public_ids

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
    claim_timeout = timedelta(seconds=_setting("COMMS_DELIVERY_CLAIM_TIMEOUT", 900))
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
            for notice in mine.select_related("subscriber").order_by("id"):
                ours = MaintenanceNotice.objects.filter(pk=notice.pk, status=MaintenanceNotice.Status.SENDING, claimed_at=now)
                if not notice.subscriber.is_active:  # unsubscribed since the notice was made
                    ours.update(status=MaintenanceNotice.Status.FAILED, error="unsubscribed")
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
    claim_timeout = timedelta(seconds=_setting("COMMS_DELIVERY_CLAIM_TIMEOUT", 900))
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

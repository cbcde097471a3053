"""Subscribers: the public double opt-in form, staff and API changes, and who hears of what."""

import logging
from datetime import timedelta
from smtplib import SMTPException
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.mailing import subject_line

from ..enqueue import task_enqueue
from ..models import OutreachContact, StakeholderList, Subscriber
from ._settings import setting as _setting

log = logging.getLogger("comms.subscriptions")

CONFIRM_SALT = "comms.subscriber.confirm"
UNSUBSCRIBE_SALT = "comms.subscriber.unsubscribe"


class SubscriberError(Exception):
    """A subscription change that is not allowed; the message is meant for the person who asked."""


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
        subject=subject_line(render_to_string("comms/email/confirm_subject.txt", context)),
        body=render_to_string("comms/email/confirm.txt", context),
        to=[subscriber.email],
    )
    message.send()


# A mail server that is down (refused, timed out, 4xx/5xx) must not lose the subscription: the row is
# committed first, and the confirmation is retried by a Celery task until mail works again.
MAIL_ERRORS = (OSError, SMTPException)


def _confirmation_send_or_retry(subscriber):
    try:
        _confirmation_send(subscriber)
    except MAIL_ERRORS:
        log.warning("could not send the confirmation to subscriber %s now; a task retries it", subscriber.pk)
        task_enqueue(
            "subscriber_confirmation_send",
            subscriber.pk,
            subscriber.confirmation_sent_at.isoformat(),
            countdown=60,
            what=f"the confirmation of subscriber {subscriber.pk}",
        )


def subscriber_confirmation_send(*, subscriber_id, sent_at):
    """Send (again) the confirmation whose link is dated `sent_at`, unless it is no longer wanted.

    Nothing is sent for a subscriber who has since confirmed, unsubscribed, been deleted or been sent a
    newer link. Mail errors propagate, so the task retries.
    """
    subscriber = Subscriber.objects.filter(pk=subscriber_id).first()
    if subscriber is None or subscriber.is_active or subscriber.unsubscribed_at is not None:
        return False
    if subscriber.confirmation_sent_at is None or subscriber.confirmation_sent_at.isoformat() != sent_at:
        return False
    _confirmation_send(subscriber)
    return True


def _confirm_resend_window():
    return timedelta(minutes=_setting("COMMS_CONFIRM_RESEND_MINUTES", 10))


@transaction.atomic
def subscriber_subscribe(*, email, services=(), min_severity=None):
    """The public form: a new or not yet confirmed address gets a confirmation link (double opt-in).

    An address that is already confirmed is left as it is and gets nothing (the form answers the same
    either way, so it tells nobody who is subscribed). Only the latest confirmation link works. An
    address is sent at most one confirmation per COMMS_CONFIRM_RESEND_MINUTES (the form cannot be used
    to flood someone's inbox); a request inside that window changes nothing.
    """
    email = _normalise_email(email)
    if not email:
        raise SubscriberError("Enter an e-mail address.")
    subscriber = Subscriber.objects.select_for_update().filter(channel=Subscriber.Channel.EMAIL, email=email).first()
    if subscriber is not None and subscriber.is_active:
        return subscriber
    now = timezone.now()
    if (
        subscriber is not None
        and subscriber.confirmation_sent_at is not None
        and now - subscriber.confirmation_sent_at < _confirm_resend_window()
    ):
        return subscriber
    if subscriber is None:
        subscriber = Subscriber(channel=Subscriber.Channel.EMAIL, email=email, source=Subscriber.Source.PUBLIC)
    subscriber.min_severity = min_severity
    subscriber.confirmation_sent_at = now
    subscriber.save()
    subscriber.services.set(services)
    transaction.on_commit(lambda: _confirmation_send_or_retry(subscriber))
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


def stakeholder_lists_for(*, services, severity):
    """Active stakeholder lists that hear of incidents on these services at this severity, with their people."""
    lists = _services_filter(StakeholderList.objects.filter(is_active=True), services=services, owner="stakeholderlist")
    return lists.filter(Q(min_severity__isnull=True) | Q(min_severity__level__gte=severity.level)).prefetch_related(
        "users"
    )


def outreach_contacts_for(*, services):
    return _services_filter(OutreachContact.objects.filter(is_active=True), services=services, owner="outreachcontact")



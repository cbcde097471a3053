"""Slack user ↔ Django user, by e-mail address.

Slack tells us a user's address (users.info, scope users:read.email) and finds a user by address
(users.lookupByEmail). Addresses are cached in SlackUser for SLACK_USER_CACHE_SECONDS; the Django user
is matched on every request (an administrator fixing an address takes effect at once). Exactly one
active account with that address (case-insensitive) must exist, or nothing is done.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from slack_sdk.errors import SlackApiError, SlackClientError

from .models import SlackUser


class SlackRefused(Exception):
    """Slack asked for something we will not do for this person; the message is shown to them (ephemeral)."""


def _fresh(row):
    return row is not None and row.fetched_at >= timezone.now() - timedelta(seconds=settings.SLACK_USER_CACHE_SECONDS)


def slack_user_get(slack_id, *, client):
    """The SlackUser for a Slack user id, from the cache or users.info. SlackRefused if Slack cannot say."""
    if not isinstance(slack_id, str) or not 0 < len(slack_id) <= 32:
        raise SlackRefused("Slack did not say who you are. Nothing was changed.")
    row = SlackUser.objects.filter(slack_id=slack_id).first()
    if _fresh(row):
        return row
    try:
        user = client.users_info(user=slack_id)["user"]
    except (SlackApiError, SlackClientError, OSError) as exc:
        if row is not None:
            return row  # Slack is slow or down: an older answer is better than none
        raise SlackRefused(
            f"Could not ask Slack who you are ({_reason(exc)}). Nothing was changed; try again."
        ) from None
    profile = user.get("profile") or {}
    row, _created = SlackUser.objects.update_or_create(
        slack_id=slack_id,
        defaults={
            "email": (profile.get("email") or "").strip(),
            "name": profile.get("real_name") or user.get("real_name") or user.get("name") or "",
            "fetched_at": timezone.now(),
        },
    )
    return row


def django_user_for(slack_id, *, client):
    """The active Django account with this Slack user's e-mail address, or SlackRefused saying why not."""
    slack_user = slack_user_get(slack_id, client=client)
    if not slack_user.email:
        raise SlackRefused(
            "Slack did not tell us your e-mail address, so we cannot match you to an account. Nothing was changed."
        )
    matches = list(get_user_model().objects.filter(email__iexact=slack_user.email, is_active=True)[:2])
    if len(matches) != 1:
        problem = "No active account" if not matches else "More than one account"
        raise SlackRefused(
            f"{problem} in the incident tool has your Slack e-mail address ({slack_user.email}). "
            "Ask an administrator to set it on your account. Nothing was changed."
        )
    return matches[0]


def slack_id_for(user, *, client):
    """The Slack user id of a Django user (users.lookupByEmail), or None when Slack has nobody with that address."""
    if not user.email:
        return None
    known = SlackUser.objects.filter(email__iexact=user.email).order_by("-fetched_at").first()
    if _fresh(known):
        return known.slack_id
    try:
        found = client.users_lookupByEmail(email=user.email)["user"]
    except SlackApiError as exc:
        if exc.response.get("error") == "users_not_found":
            return None
        raise
    profile = found.get("profile") or {}
    SlackUser.objects.update_or_create(
        slack_id=found["id"],
        defaults={
            "email": user.email,
            "name": profile.get("real_name") or found.get("name") or "",
            "fetched_at": timezone.now(),
        },
    )
    return found["id"]


def _reason(exc):
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.status_code}: {exc.response.get('error') or 'error'}"
    return type(exc).__name__

"""Notices: people told of something they must act on, once per incident, kind and window.

- review_requested: an update was submitted for review; the approvers (people with the approve
  permission, not its writer or submitter) get an e-mail pointing at their queue ("waiting for my review").
- resolution_drafted: the incident was resolved and its public "resolved" update drafted (resolution.py);
  the communications lead is told.

Each is an IncidentNudge row, sent after commit (task notices_send) and again by the cadence sweep
if that failed, so a broker or mail outage loses nothing and a duplicate sends nothing twice.
"""

import logging

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from ..enqueue import task_enqueue
from ..models import IncidentNudge
from .subscribers import _normalise_email

log = logging.getLogger("comms.notices")

NOTICE_KINDS = (IncidentNudge.Kind.REVIEW_REQUESTED, IncidentNudge.Kind.RESOLUTION_DRAFTED)


def notice_create(incident, kind, window, recipients):
    """One notice row (a repeat for the same window creates nothing), sent after commit."""
    recipients = sorted({_normalise_email(e) for e in recipients if e})
    if not recipients:
        log.warning("%s for incident %s: nobody to tell", kind, incident.pk)
        return
    IncidentNudge.objects.bulk_create(
        [IncidentNudge(incident=incident, kind=kind, window=window, recipients=recipients)], ignore_conflicts=True
    )
    transaction.on_commit(lambda: task_enqueue("notices_send", what=f"the {kind} notice of incident {incident.pk}"))


def approvers_of(update):
    """Active people allowed to approve updates, other than the ones who wrote or submitted it."""
    User = get_user_model()
    can = Q(is_superuser=True) | Q(
        user_permissions__codename="approve_update", user_permissions__content_type__app_label="comms"
    )
    can |= Q(groups__permissions__codename="approve_update", groups__permissions__content_type__app_label="comms")
    people = User.objects.filter(can, is_active=True).exclude(email="").exclude(
        pk__in=[pk for pk in (update.author_id, update.submitted_by_id) if pk]
    )
    return list(people.distinct().values_list("email", flat=True))


def update_review_requested(*, update):
    """Called by update_submit in its transaction: tell the approvers something waits for them."""
    notice_create(update.incident, IncidentNudge.Kind.REVIEW_REQUESTED, update.submitted_at, approvers_of(update))

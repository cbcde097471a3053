"""The admin home's "My overdue action items" box (registered with incidents.admin_home)."""

from django.urls import reverse
from django.utils import timezone

from incidents.admin_home import home_section_register
from incidents.models import visible_incident_rows

from .models import ActionItem

SHOWN = 10


def my_overdue_action_items(request):
    if not request.user.has_perm("postmortems.view_actionitem"):
        return None
    overdue = visible_incident_rows(
        ActionItem.objects.filter(
            owner=request.user, status__in=ActionItem.ACTIVE_STATUSES, due_date__lt=timezone.localdate()
        ),
        request.user,
    )
    items = list(overdue.select_related("incident").order_by("due_date", "id")[: SHOWN + 1])
    return {
        "title": "My overdue action items",
        "rows": [
            (
                item.title,
                reverse("admin:postmortems_actionitem_change", args=[item.pk]),
                f"{item.incident.reference} · due {item.due_date:%Y-%m-%d}",
            )
            for item in items[:SHOWN]
        ],
        "more_url": reverse("admin:postmortems_actionitem_changelist") + "?mine=open&due=overdue"
        if len(items) > SHOWN
        else None,
        "empty": "None: nothing of yours is overdue.",
    }


home_section_register(my_overdue_action_items)

"""The incident page's updates row (registered with incidents.admin.incident_panel_register), and when
each incident last had a published update, for the open-incidents list's "update overdue" flag."""

from django.db.models import OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html

from incidents.admin import incident_panel_register
from incidents.admin_lists import last_update_source_register

from .admin import next_update_text
from .models import Update


def incident_updates(request, incident):
    if not request.user.has_perm("comms.view_update"):
        return []
    published = Update.objects.filter(incident=incident, status=Update.Status.PUBLISHED).count()
    drafts = Update.objects.filter(incident=incident).exclude(status=Update.Status.PUBLISHED).count()
    listing = reverse("admin:comms_update_changelist") + f"?incident__id__exact={incident.pk}"
    summary = format_html('<a href="{}">{} published, {} not yet</a>', listing, published, drafts)
    if request.user.has_perm("comms.add_update"):
        add = reverse("admin:comms_update_add") + f"?incident={incident.pk}"
        summary = format_html('{} · <a href="{}">Draft an update</a>', summary, add)
    return [("Updates", format_html("{}<br>{}", summary, next_update_text(incident)))]


incident_panel_register(incident_updates)


def last_published_update():
    """Per incident row: when its latest update (internal or external) was published (None without one)."""
    published = Update.objects.filter(incident=OuterRef("pk"), status=Update.Status.PUBLISHED)
    return Subquery(published.order_by("-published_at").values("published_at")[:1])


last_update_source_register(last_published_update)

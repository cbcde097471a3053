"""The Atom feed of the status page: published external updates of public incidents, newest first.

Served (cached, with its headers) by views.feed."""

from django.conf import settings
from django.contrib.syndication.views import Feed
from django.urls import reverse
from django.utils.feedgenerator import Atom1Feed

from . import public_ids, selectors


class UpdatesFeed(Feed):
    feed_type = Atom1Feed
    description_template = None

    def title(self):
        return settings.STATUS_PAGE_NAME

    def subtitle(self):
        return f"Incident updates from {settings.STATUS_PAGE_NAME}"

    def link(self):
        return reverse("status:index")

    def feed_guid(self):
        return f"tag:{_tag_authority()}:status-page/{public_ids.page_id()}"

    def items(self):
        return selectors.public_updates_for_feed()

    def item_title(self, update):
        name = update.public_name
        label = selectors.STATUS_LABELS[update.public_status]
        if update.corrects_id:
            label = f"Correction ({label})"
        return f"{name}: {label}"

    def item_description(self, update):
        html = update.body_html
        if update.corrects_id:
            when = update.corrects.published_at.isoformat(timespec="minutes")
            html = f"<p><strong>Correction</strong> to the update of {when}.</p>{html}"
        return html

    def item_link(self, update):
        incident_id = public_ids.encode("incident", update.incident_id)
        update_id = public_ids.encode("update", update.pk)
        return reverse("status:incident", args=[incident_id]) + f"#update-{update_id}"

    def item_guid(self, update):
        return f"tag:{_tag_authority()}:status-page/update/{public_ids.encode('update', update.pk)}"

    item_guid_is_permalink = False

    def item_pubdate(self, update):
        return update.published_at

    def item_updateddate(self, update):
        return update.published_at


def _tag_authority():
    host = settings.SITE_URL.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return f"{host},2026"

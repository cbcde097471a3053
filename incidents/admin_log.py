"""The admin index's "Recent actions" box, without rows of incidents the reader may no longer see.

A log entry keeps the object's text as it was (``object_repr``: an incident's reference and title,
an action item's title…). Someone who edited an incident that was restricted later, or who was
taken off a restricted incident, must not read it there. Whether the entry is shown is decided when
the box is drawn, from the incident's visibility now. Installed as ``admin.site.get_log_entries``
from IncidentsConfig.ready().
"""

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, ForeignKey, Q
from django.db.models.functions import Cast
from django.utils.functional import SimpleLazyObject

from .models import Incident, visibility_condition


def _incident_path(model):
    """ "" for incidents (and their proxies), the field name for rows that belong to one, else None."""
    if issubclass(model, Incident):
        return ""
    for field in model._meta.get_fields():
        if isinstance(field, ForeignKey) and field.name == "incident" and issubclass(field.related_model, Incident):
            return "incident"
    return None


def log_entries_hidden_condition(user):
    """A condition on LogEntry matching entries about incidents (or their rows) the user may not see."""
    condition = visibility_condition(user)
    if condition is None:
        return None
    hidden = Q(pk__in=[])
    for model in apps.get_models(include_auto_created=False):
        path = _incident_path(model)
        if path is None:
            continue
        visible = visibility_condition(user, path)
        # Only restricted incidents can be hidden: the subquery stays as small as they are.
        restricted = Q(is_restricted=True) if path == "" else Q(**{f"{path}__is_restricted": True})
        ids = (
            model._default_manager.filter(restricted)
            .exclude(visible)
            .annotate(id_text=Cast("pk", CharField()))
            .values("id_text")
        )
        content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
        hidden |= Q(content_type=content_type, object_id__in=ids)
    return hidden


def get_log_entries(request):
    def entries():
        visible = LogEntry.objects.select_related("content_type", "user")
        hidden = log_entries_hidden_condition(request.user)
        return visible if hidden is None else visible.exclude(hidden)

    # Every admin page puts this in its context, only the home page reads it: building the condition
    # (a subquery per model) costs tens of milliseconds, so it is built when read.
    return SimpleLazyObject(entries)


def install():
    admin.site.get_log_entries = get_log_entries

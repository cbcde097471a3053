"""When the public status page changes: every save that can alter a public document calls
`refresh.status_page_changed()` (the cached documents are stale from the commit on, and those being
read are re-rendered then).

Model signals rather than calls in each service: the same rows are also written by the admin, the
API, data migrations and other apps' code (incidents knows nothing of comms), and one list here is
easier to keep complete than a call in every writer. Writes through a queryset `.update()` or
`bulk_create()` send no signal: code that changes public state that way calls status_page_changed().

What counts (see selectors.py for what the public sees): published external updates and their
component rows, scheduled maintenances and their updates and services, public services and their
groups, and the incidents that have a published external update (name, status, impact, restriction,
their services).
"""

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from comms.models import MaintenanceUpdate, ScheduledMaintenance, Update, UpdateComponent
from incidents.models import Incident, Service, ServiceGroup

from .refresh import status_page_changed

# Incident saves that change none of what the public sees of an incident.
PRIVATE_INCIDENT_FIELDS = frozenset({"acknowledged_at", "commander", "version", "updated_at", "last_activity_at"})


def _is_public_update(update):
    return update.audience == Update.Audience.EXTERNAL and update.status == Update.Status.PUBLISHED


def _has_public_update(incident_id):
    return Update.objects.filter(
        incident_id=incident_id, audience=Update.Audience.EXTERNAL, status=Update.Status.PUBLISHED
    ).exists()


@receiver([post_save, post_delete], sender=Update, dispatch_uid="status.update")
def _update_saved(instance, **kwargs):
    if _is_public_update(instance):
        status_page_changed()


@receiver([post_save, post_delete], sender=UpdateComponent, dispatch_uid="status.update_component")
def _update_component_saved(instance, **kwargs):
    published = Update.objects.filter(pk=instance.update_id, status=Update.Status.PUBLISHED).exists()
    if published:
        status_page_changed()


@receiver([post_save, post_delete], sender=ScheduledMaintenance, dispatch_uid="status.maintenance")
@receiver([post_save, post_delete], sender=MaintenanceUpdate, dispatch_uid="status.maintenance_update")
@receiver([post_save, post_delete], sender=Service, dispatch_uid="status.service")
@receiver([post_save, post_delete], sender=ServiceGroup, dispatch_uid="status.service_group")
def _component_or_maintenance_saved(**kwargs):
    status_page_changed()


@receiver(m2m_changed, sender=ScheduledMaintenance.services.through, dispatch_uid="status.maintenance_services")
def _maintenance_services_changed(action, **kwargs):
    if action in ("post_add", "post_remove", "post_clear"):
        status_page_changed()


@receiver(m2m_changed, sender=Incident.services.through, dispatch_uid="status.incident_services")
def _incident_services_changed(instance, action, reverse, pk_set, **kwargs):
    # An incident's public services can name it publicly (a neutral name when it has no public title).
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    incident_ids = [instance.pk] if not reverse else list(pk_set or ())
    if reverse and action == "post_clear":
        status_page_changed()  # a service cleared of all its incidents: rare, not worth a query
    elif any(_has_public_update(pk) for pk in incident_ids[:50]) or len(incident_ids) > 50:
        status_page_changed()


@receiver(post_save, sender=Incident, dispatch_uid="status.incident")
def _incident_saved(instance, created, update_fields=None, **kwargs):
    if created:
        return  # a new incident has no published update yet
    if update_fields is not None and PRIVATE_INCIDENT_FIELDS.issuperset(update_fields):
        return
    if _has_public_update(instance.pk):
        status_page_changed()

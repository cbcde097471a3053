"""Demo data for communications: `seed_demo` calls this once its incidents exist (registered in CommsConfig.ready).

The open incidents on public services get a reviewed, published external update (so the status page
shows them), two staff-added subscribers hear of them, and a maintenance window is scheduled.
"""

from datetime import timedelta

from incidents.models import Incident

from . import services as comms_services
from .models import ComponentStatus, ScheduledMaintenance, Subscriber

COMPONENT_STATUS = {1: ComponentStatus.MAJOR_OUTAGE, 2: ComponentStatus.PARTIAL_OUTAGE}
PUBLIC_STATUS = {"detected": "investigating", "triaging": "investigating", "responding": "identified", "mitigated": "monitoring"}


def demo_comms(*, people, services, now):
    """services: the demo services by slug."""
    if ScheduledMaintenance.objects.exists() or Subscriber.objects.exists():
        return  # seeded before
    author, approver = people["Communications"][:2]
    comms_services.subscriber_create(channel=Subscriber.Channel.EMAIL, email="status-watcher@example.com")
    comms_services.subscriber_create(
        channel=Subscriber.Channel.EMAIL, email="checkout-team@example.com", services=[services["checkout"]]
    )
    open_public = (
        Incident.objects.filter(status__in=Incident.OPEN_STATUSES, services__is_public=True, is_restricted=False)
        .select_related("severity")
        .distinct()
        .order_by("-detected_at")[:4]
    )
    for incident in open_public:
        affected = [s for s in incident.services.all() if s.is_public]
        component_status = COMPONENT_STATUS.get(incident.severity.level, ComponentStatus.DEGRADED_PERFORMANCE)
        update = comms_services.update_draft_create(
            incident=incident,
            actor=author,
            audience="external",
            public_status=PUBLIC_STATUS[incident.status],
            title=f"{affected[0].name}: {incident.title}",
            body=f"We are working on a problem with **{', '.join(s.name for s in affected)}**. "
            "Next update within the hour.",
            components=[(s, component_status) for s in affected],
        )
        comms_services.update_submit(update=update, actor=author)
        comms_services.update_approve(update=update, actor=approver)
        comms_services.update_publish(update=update, actor=author)
    starts = (now + timedelta(days=3)).replace(hour=2, minute=0)
    comms_services.maintenance_schedule(
        name="Notification provider upgrade",
        body="Order e-mails and push notifications may be **delayed by up to 15 minutes** during the window.",
        services=[services["notifications"]],
        scheduled_for=starts,
        scheduled_until=starts + timedelta(hours=2),
        actor=author,
    )

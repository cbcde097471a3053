"""Celery tasks: thin, take ids, call a service, safe to run twice. Sections by area.

Tasks import services; services never import tasks (they enqueue by name through
comms.services.enqueue), so there is no import circle.
"""

from celery import shared_task

from comms import services, webhooks
from comms.outreach import services as outreach_services

# ---- Subscribers, deliveries, cadence nudges and acknowledgement escalation ----


@shared_task(name="comms.tasks.update_deliveries_fan_out")
def update_deliveries_fan_out(update_id):
    """Enqueued after a publish commits: hands the update's deliveries to the broker in chunks."""
    return services.update_deliveries_fan_out(update_id=update_id)


@shared_task(name="comms.tasks.deliveries_send")
def deliveries_send(delivery_ids):
    """Claims and sends a chunk of deliveries; a sent (or claimed) one is skipped, so a redelivered
    message does nothing twice. Temporary failures come back one by one with backoff."""
    retries = services.deliveries_send(delivery_ids=delivery_ids)
    for delivery_id, attempts in retries:
        services.task_enqueue(
            "deliveries_send",
            [delivery_id],
            countdown=services.delivery_retry_countdown(attempts),
            what=f"the retry of delivery {delivery_id}",
        )
    return len(delivery_ids) - len(retries)


@shared_task(
    name="comms.tasks.subscriber_confirmation_send",
    autoretry_for=services.subscribers.MAIL_ERRORS,
    retry_backoff=60,
    retry_backoff_max=1800,  # below the broker's visibility timeout
    max_retries=48,  # about a day of retries at the longest interval
)
def subscriber_confirmation_send(subscriber_id, sent_at):
    """The mail server was down when someone subscribed: retried until the confirmation goes out."""
    return services.subscriber_confirmation_send(subscriber_id=subscriber_id, sent_at=sent_at)


@shared_task(name="comms.tasks.deliveries_sweep")
def deliveries_sweep():
    """Beat, every minute: re-enqueue deliveries the broker never got, lost, or left claimed by a dead worker."""
    return services.deliveries_sweep()


@shared_task(name="comms.tasks.update_cadence_sweep")
def update_cadence_sweep():
    """Beat, every minute: nudge communications leads (and commanders when overdue), once per due window."""
    return services.update_cadence_sweep()


@shared_task(name="comms.tasks.notices_send")
def notices_send():
    """Enqueued after a notice commits (review requested, resolution drafted): sends the pending ones."""
    return services.nudges_send_pending(kinds=services.NOTICE_KINDS)


@shared_task(name="comms.tasks.ack_escalation_sweep")
def ack_escalation_sweep():
    """Beat, every minute: tell the escalation contact (or commander) of incidents not acknowledged in time, once."""
    return services.ack_escalation_sweep()


# ---- Outbound webhooks ----


@shared_task(name="comms.tasks.webhook_delivery_send")
def webhook_delivery_send(delivery_id):
    """Claims the delivery (pending → sending) or does nothing; retries are scheduled by the service."""
    delivery = webhooks.webhook_delivery_send(delivery_id=delivery_id)
    return None if delivery is None else delivery.state


@shared_task(name="comms.tasks.webhook_deliveries_sweep")
def webhook_deliveries_sweep():
    """Beat, every minute: enqueue due deliveries (backoff over, broker was down) and free stuck ones."""
    return len(webhooks.webhook_deliveries_sweep())


# ---- Status page: scheduled maintenance ----


@shared_task(name="comms.tasks.maintenance_sweep")
def maintenance_sweep():
    """Beat, every five minutes: automatic start/completion, notices before a window, unsent notices."""
    result = services.maintenance_sweep()
    return {key: len(value) for key, value in result.items()}


@shared_task(name="comms.tasks.maintenance_notices_send")
def maintenance_notices_send(maintenance_id):
    """Sends the maintenance's pending notices; each is claimed first, so a duplicate does nothing."""
    return services.maintenance_notices_send(maintenance_id=maintenance_id)


# ---- Direct outreach to the contacts of affected accounts ----


@shared_task(name="comms.tasks.outreach_deliveries_send")
def outreach_deliveries_send(delivery_ids):
    """Claims and sends a chunk of outreach e-mails; a sent (or claimed) one is skipped. Temporary
    failures come back one by one with backoff."""
    for delivery_id, attempts in outreach_services.outreach_deliveries_send(delivery_ids=delivery_ids):
        services.task_enqueue(
            "outreach_deliveries_send",
            [delivery_id],
            countdown=services.delivery_retry_countdown(attempts),
            what=f"the retry of outreach delivery {delivery_id}",
        )


@shared_task(name="comms.tasks.outreach_deliveries_sweep")
def outreach_deliveries_sweep():
    """Beat, every minute: outreach deliveries the broker never got, or a dead worker left claimed."""
    return outreach_services.outreach_deliveries_sweep()

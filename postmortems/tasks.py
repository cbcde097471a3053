"""Celery tasks: thin, take ids, call a service, safe to run twice."""

import smtplib

from celery import shared_task

from . import services


@shared_task
def action_item_reminders_sweep():
    """The periodic sweep (hourly in the beat schedule): plan today's reminders, send each on its own.

    Running it twice, or on two workers at once, sends nothing twice: the rows are unique per item,
    day and kind, and each send task claims its row before sending.
    """
    reminder_ids = services.action_item_reminders_plan()
    for reminder_id in reminder_ids:
        action_item_reminder_send.delay(reminder_id)
    return len(reminder_ids)


@shared_task(autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=True, max_retries=6)
def action_item_reminder_send(reminder_id):
    """Send one reminder if nobody else has (a duplicate message does nothing)."""
    return services.action_item_reminder_send(reminder_id=reminder_id)

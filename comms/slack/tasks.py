"""Celery tasks of the Slack app: thin, take ids, safe to run twice. Named comms.tasks.slack_* so that
comms.enqueue.task_enqueue finds them by name."""

from celery import shared_task


@shared_task(name="comms.tasks.slack_call_run")
def slack_call_run(call_id):
    """Claims the call (pending → sending) or does nothing; retries are scheduled by the outbox."""
    from .outbox import slack_call_run as run

    call = run(call_id=call_id)
    return None if call is None else call.state


@shared_task(name="comms.tasks.slack_event_process")
def slack_event_process(event_id):
    """A recorded Slack event becomes a note (or is refused, with an ephemeral message)."""
    from .inbound import slack_event_process as process

    return process(event_pk=event_id)


@shared_task(name="comms.tasks.slack_sweep")
def slack_sweep():
    """Beat, every minute: due calls (after backoff, or never enqueued), calls a dead worker held, pending events."""
    from .outbox import slack_sweep as sweep

    return sweep()

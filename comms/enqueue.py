"""The one place comms hands work to Celery.

Tasks are looked up by name in the app's registry, so services and webhooks never import comms.tasks
(which imports them): tasks call services, services enqueue through here.
"""

import logging

from celery import current_app

log = logging.getLogger("comms.deliveries")


def task_enqueue(name, *args, countdown=None, what=""):
    """Send comms.tasks.<name>(*args). If the broker is down, log it and return False: the rows are
    safe in the database and the sweeps hand them to a worker again."""
    task = current_app.tasks[f"comms.tasks.{name}"]
    try:
        task.apply_async(args, countdown=countdown, retry=False)  # fail fast: the sweeps retry
        return True
    except Exception:  # noqa: BLE001 - any broker/connection error
        log.exception("could not enqueue %s; the sweep will retry it", what or name)
        return False

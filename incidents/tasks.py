"""Celery tasks of the incidents app: thin, they call a service."""

from celery import shared_task

from . import ingestion


@shared_task
def alert_payloads_prune():
    """Delete stored alert posts older than INGEST_PAYLOAD_RETENTION_DAYS (hourly, from the beat schedule)."""
    return ingestion.payloads_prune()

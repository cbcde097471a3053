"""Celery tasks: thin, take ids, call a service, safe to run twice. Sections by area."""

# ---- Subscribers, deliveries, cadence nudges and acknowledgement escalation ----


# ---- Outbound webhooks ----


# ---- Status page: scheduled maintenance ----

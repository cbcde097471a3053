"""Celery tasks: thin, take ids, call a service, safe to run twice."""

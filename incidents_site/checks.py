"""Deployment checks of our own (`manage.py check --deploy`), registered from IncidentsConfig.ready()."""

from django.conf import settings
from django.core.checks import Tags, Warning, register

# Caches whose contents live in one process: counters kept there are per process.
PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@register(Tags.caches, Tags.security, deploy=True)
def shared_cache_check(app_configs=None, **kwargs):
    """With DEBUG off (production), the throttles' counters must live in a cache every process shares."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if settings.DEBUG or backend not in PER_PROCESS_CACHES:
        return []
    return [
        Warning(
            "The default cache is local to each process, so the API throttle, the ingestion and subscription "
            "rate limits and the status page's shared documents are counted or kept per process: with several "
            "web processes a client gets that many times the limit.",
            hint="Set CACHE_URL to a shared cache, e.g. CACHE_URL=redis://redis.internal:6379/1.",
            id="incidents_site.W001",
        )
    ]

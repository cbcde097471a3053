"""Counting hits per client in the shared cache: the public endpoints' abuse limits.

Fixed windows of `period` seconds, one counter per scope, client and window. The counters live in
Django's cache: with several web processes it must be a shared one (CACHE_URL=redis://…; the
deployment check incidents.W001 says so), or each process counts on its own.
"""

import time

from django.core.cache import cache


def rate_limit_hit(*, scope, client, limit, period):
    """Count one hit of `client` in `scope`; True once it has gone over `limit` in this window."""
    window = int(time.time() // period)
    key = f"ratelimit:{scope}:{client}:{window}"
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=period + 1)
        count = 1
    return count > limit


def retry_after(period):
    """Seconds until the current window of `period` seconds ends (for a Retry-After header)."""
    return max(1, int(period - time.time() % period))

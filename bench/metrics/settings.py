"""Settings for the metrics benchmark: the product's settings, plus the bare raw-SQL endpoints."""

from incidents_site.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.metrics.urls"

"""Settings for the ingestion benchmark: the product's settings, plus a bare insert endpoint."""

from incidents_site.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.ingest.urls"

"""Settings for benchmark runs: the product's settings, plus a bare baseline endpoint in the URLs."""

from incidents_site.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.baseline_urls"

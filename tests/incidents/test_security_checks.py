"""Issue 11: `check --deploy` warns when throttling counters would live in a per-process cache."""

from django.core.checks import run_checks

from incidents_site.checks import shared_cache_check

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/1"}}


def _ids(messages):
    return [message.id for message in messages]


def test_deploy_check_warns_about_a_per_process_cache_in_production(settings):
    settings.DEBUG, settings.CACHES = False, LOCMEM
    assert _ids(shared_cache_check()) == ["incidents_site.W001"]
    assert "incidents_site.W001" in _ids(run_checks(include_deployment_checks=True))  # registered
    assert "incidents_site.W001" not in _ids(run_checks(include_deployment_checks=False))  # deploy only


def test_no_warning_with_a_shared_cache_or_in_development(settings):
    settings.DEBUG, settings.CACHES = False, REDIS
    assert shared_cache_check() == []
    settings.DEBUG, settings.CACHES = True, LOCMEM
    assert shared_cache_check() == []

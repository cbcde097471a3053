"""Settings come from the environment; production mode refuses unsafe values."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "a-long-random-production-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "DJANGO_ALLOWED_HOSTS": "incidents.example.com",
    "CACHE_URL": "redis://redis.internal:6379/1",  # a shared cache: check --deploy warns without one (issue 11)
}


def manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = manage("check", DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert "refusing to start with the published development key" in result.stderr


def test_check_deploy_is_clean_with_the_documented_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_database_and_broker_come_from_the_environment():
    code = "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL)"
    result = manage(
        "shell",
        "-c",
        code,
        DATABASE_URL="postgres://someone@db.internal:5432/incidents",
        CELERY_BROKER_URL="redis://cache:6379/1",
    )
    assert result.returncode == 0, result.stderr
    assert "django.db.backends.postgresql redis://cache:6379/1" in result.stdout

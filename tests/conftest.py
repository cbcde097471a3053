import os

import pytest
from django.db import connection

from tests.incidents.factories import SeverityFactory, UserFactory

# Playwright's sync API runs an event loop in the test thread; Django's ORM calls in the same
# tests are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(config, items):
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://… (CI does)")
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql")):
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip_pg)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Tests make many users; a production-strength hash would dominate the suite's time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def empty_cache():
    """The cache outlives a test's database: the status page's documents (and throttle counters) must not."""
    from django.core.cache import cache

    from incidents import reference

    cache.clear()
    reference.forget_all()  # the per-process copies of severities and services, likewise


@pytest.fixture
def is_postgres():
    return connection.vendor == "postgresql"


@pytest.fixture
def sev1(db):
    return SeverityFactory(level=1)


@pytest.fixture
def sev2(db):
    return SeverityFactory(level=2)


@pytest.fixture
def sev3(db):
    return SeverityFactory(level=3)


@pytest.fixture
def responder(db):
    return UserFactory(username="rita", groups=["Responders"])


@pytest.fixture
def viewer(db):
    return UserFactory(username="victor", groups=["Viewers"])


@pytest.fixture
def api_client_for(db):
    """api_client_for(user) -> an APIClient authenticated with a new API key of that person (tests/api.py)."""
    from tests.api import api_client_for

    return api_client_for

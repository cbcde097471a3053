"""Issue 11: admin login is throttled per username and per address (django-axes), with a clear page.

Before, 30 wrong passwords in 6 seconds were followed by a successful login.
"""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse

from tests.incidents.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pass-for-tests-1"  # UserFactory's


def _login(username, password, address="198.51.100.10"):
    client = Client(REMOTE_ADDR=address)
    return client.post(reverse("admin:login"), {"username": username, "password": password, "next": "/admin/"})


def test_thirty_wrong_passwords_then_the_right_one_is_refused(settings):
    UserFactory(username="alice", is_staff=True)
    answers = [_login("alice", f"guess-{n}").status_code for n in range(30)]
    limit = settings.AXES_FAILURE_LIMIT
    assert answers[: limit - 1] == [200] * (limit - 1)  # the login form again, "Please enter the correct…"
    assert set(answers[limit:]) == {429}

    locked = _login("alice", PASSWORD)
    assert locked.status_code == 429  # the right password no longer gets in
    page = locked.content.decode()
    assert "Too many failed logins" in page and "alice" in page and "Try again in" in page


def test_the_lock_is_per_username_from_any_address():
    UserFactory(username="alice", is_staff=True)
    for n in range(5):
        _login("alice", "wrong", address=f"198.51.100.{n + 20}")
    assert _login("alice", PASSWORD, address="198.51.100.99").status_code == 429
    # Someone else logs in as usual from a fresh address.
    UserFactory(username="bob", is_staff=True)
    assert _login("bob", PASSWORD, address="198.51.100.98").status_code == 302


def test_the_lock_is_per_address_for_any_username():
    UserFactory(username="carol", is_staff=True)
    for n in range(5):
        _login(f"spray-{n}", "wrong", address="198.51.100.50")
    assert _login("carol", PASSWORD, address="198.51.100.50").status_code == 429
    assert _login("carol", PASSWORD, address="198.51.100.51").status_code == 302


def test_after_the_cool_off_the_right_password_works_and_resets_the_count(settings):
    UserFactory(username="dave", is_staff=True)
    for _ in range(5):
        _login("dave", "wrong")
    assert _login("dave", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert _login("dave", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username="dave").exists()  # reset on success

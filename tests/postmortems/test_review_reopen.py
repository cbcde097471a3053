"""A review cannot be reopened once its incident is closed (issue 12): it is the record closing relied on."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from incidents import services as incident_services
from incidents.api.keys import api_key_create
from incidents.models import Incident
from postmortems import services as review_services
from postmortems.models import Review
from postmortems.services import ReviewConflict
from tests.incidents.factories import SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db
S = Incident.Status


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def author(db):
    return UserFactory(username="alice", groups=["Responders"])


@pytest.fixture
def published(author):
    reviewer = UserFactory(username="bob", groups=["Responders"])
    incident = declare("Checkout 502s", severity=SeverityFactory(level=1), detected_at=timezone.now() - timedelta(hours=2))
    incident = drive(incident, S.RESOLVED, actor=author)
    review = review_services.review_create(incident=incident, actor=author, reviewers=[reviewer])
    review_services.review_submit(review=review, actor=author)
    review_services.review_approve(review=review, actor=reviewer)
    return review_services.review_publish(review=review, actor=author)


def test_a_review_of_a_closed_incident_cannot_be_reopened(published, author):
    incident_services.incident_transition(incident=published.incident, to=S.CLOSED, actor=author)
    with pytest.raises(ReviewConflict, match="is closed"):
        review_services.review_reopen(review=published, actor=author, reason="One more thing")
    review = Review.objects.get(pk=published.pk)
    assert review.status == Review.Status.PUBLISHED and review.published_at is not None


def test_before_closing_it_still_can(published, author):
    review = review_services.review_reopen(review=published, actor=author, reason="Vendor report arrived")
    assert review.status == Review.Status.DRAFT


def test_the_api_answers_409_and_the_admin_offers_no_reopen_button(published, author, client):
    incident_services.incident_transition(incident=published.incident, to=S.CLOSED, actor=author)
    _key, raw = api_key_create(name="key", user=author)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = api.post(f"/api/v1/postmortems/{published.pk}/reopen/", {"reason": "x"}, format="json")
    assert response.status_code == 409, response.content
    assert "is closed" in response.json()["error"]["message"]

    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    page = client.get(f"/admin/postmortems/review/{published.pk}/change/")
    assert page.status_code == 200
    assert b"/reopen/" not in page.content
    assert Review.objects.get(pk=published.pk).status == Review.Status.PUBLISHED

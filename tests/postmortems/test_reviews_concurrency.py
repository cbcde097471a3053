"""Reviews under concurrency (PostgreSQL): one review per incident, and no close slipping past a reopen."""

import threading

import pytest
from django.db import connection

from incidents import services as incident_services
from incidents.models import Incident, TimelineEvent
from postmortems import services as review_services
from postmortems.models import Review
from tests.incidents.factories import SeverityFactory, UserFactory, declare, drive

THREADS = 8


def run_at_once(count, work):
    barrier = threading.Barrier(count)
    results, errors = [], []

    def one(i):
        try:
            barrier.wait(timeout=10)
            results.append(work(i))
        except Exception as exc:  # reported by the caller's assertions
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_starts_make_one_review():
    author = UserFactory(username="rita")
    incident = drive(declare("Checkout 502s", severity=SeverityFactory(level=1)), Incident.Status.RESOLVED)

    results, errors = run_at_once(THREADS, lambda i: review_services.review_create(incident=incident, actor=author).pk)

    assert errors == []
    assert len(set(results)) == 1 and Review.objects.filter(incident=incident).count() == 1
    created = TimelineEvent.objects.filter(incident=incident, kind="review", data__action="created")
    assert created.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_close_and_reopen_of_the_review_at_once_never_leave_a_closed_incident_with_a_draft():
    author, reviewer = UserFactory(username="rita"), UserFactory(username="rob")
    incident = drive(declare("Checkout 502s", severity=SeverityFactory(level=1)), Incident.Status.RESOLVED)
    review = review_services.review_create(incident=incident, actor=author, reviewers=[reviewer])
    review_services.review_submit(review=review, actor=author)
    review_services.review_approve(review=review, actor=reviewer)
    review_services.review_publish(review=review, actor=author)

    def work(i):
        if i % 2:
            return review_services.review_reopen(review=review, actor=author).status
        return incident_services.incident_transition(incident=incident, to="closed", actor=author).status

    _results, errors = run_at_once(2, work)
    incident.refresh_from_db()
    review.refresh_from_db()
    # Either the close went first (the reopen is then refused: a closed incident's review is its final
    # record) or the reopen did (the close is refused: the review is a draft again).
    if incident.status == Incident.Status.CLOSED:
        assert [type(e) for e in errors] == [review_services.ReviewConflict]
        assert review.status == Review.Status.PUBLISHED
        assert not TimelineEvent.objects.filter(incident=incident, kind="review", data__action="reopened").exists()
    else:
        assert [type(e) for e in errors] == [review_services.ReviewRequired]
        assert review.status == Review.Status.DRAFT

"""Similar past incidents and the knowledge base search (issue 12): title, summary, notes and published
reviews, ranked, over the whole history; PostgreSQL full-text search on indexes, a simple fallback on SQLite."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from incidents import services as incident_services
from incidents.models import Incident
from postmortems import selectors
from postmortems import services as review_services
from postmortems.models import Review
from tests.incidents.factories import ServiceFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db
S = Incident.Status


@pytest.fixture
def author(db):
    return UserFactory(username="alice", groups=["Responders"])


@pytest.fixture
def reviewer(db):
    return UserFactory(username="bob", groups=["Responders"])


def publish(incident, author, reviewer, **sections):
    review = review_services.review_create(incident=incident, actor=author, reviewers=[reviewer])
    review_services.review_update(review=review, actor=author, **sections)
    review_services.review_submit(review=review, actor=author)
    review_services.review_approve(review=review, actor=reviewer)
    return review_services.review_publish(review=review, actor=author, acknowledge_named_people=True)


def test_similar_incidents_look_through_the_whole_history(author):
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    long_ago = declare(
        "Pgbouncer pool exhausted", services=[checkout], detected_at=timezone.now() - timedelta(days=700)
    )
    # 120 newer incidents on the same service: before, only the 100 newest candidates were scored.
    for n in range(120):
        declare(f"Checkout blip {n}", services=[checkout], detected_at=timezone.now() - timedelta(days=300 - n))
    now = declare("Pgbouncer pool exhausted again", services=[checkout])
    found = selectors.similar_incidents(now, author)
    assert found[0].incident == long_ago
    assert found[0].reasons == ["same service: Checkout", "similar title: exhausted, pgbouncer, pool"]


def test_similar_incidents_found_by_their_notes_and_published_review(author, reviewer):
    past = timezone.now() - timedelta(days=40)
    by_note = declare("Payments slow", detected_at=past)
    incident_services.timeline_note_add(incident=by_note, actor=author, body="Kafka consumer lag on payments-eu")
    by_review = drive(declare("Orders delayed", detected_at=past), S.RESOLVED)
    publish(by_review, author, reviewer, root_cause="A Kafka rebalance storm after the broker upgrade.")
    draft_only = drive(declare("Emails late", detected_at=past), S.RESOLVED)
    review = review_services.review_create(incident=draft_only, actor=author)
    review_services.review_update(review=review, actor=author, root_cause="Kafka again")  # a draft: not yet knowledge
    now = declare("Kafka lag")
    found = {f.incident: f.reasons for f in selectors.similar_incidents(now, author)}
    assert found == {
        by_note: ["similar words in its summary, notes or review"],
        by_review: ["similar words in its summary, notes or review"],
    }


def test_knowledge_base_search_is_ranked_and_covers_notes(author, reviewer):
    past = timezone.now() - timedelta(days=400)
    in_title = drive(declare("Certificate expired on the edge", detected_at=past), S.RESOLVED)
    in_notes = drive(declare("Mobile logins failing", detected_at=past), S.RESOLVED)
    unrelated = drive(declare("Search slow", detected_at=past), S.RESOLVED)
    reviews = [publish(i, author, reviewer, summary="Written up.") for i in (in_title, in_notes, unrelated)]
    # Written after the review was (so not in its prefilled timeline section): only the notes have it.
    incident_services.timeline_note_add(incident=in_notes, actor=author, body="The certificate expired at 02:00.")
    found = list(selectors.review_search(Review.objects.all(), "certificate expired"))
    assert found == [reviews[0], reviews[1]]  # the title outranks a note, whichever review is newer
    assert list(selectors.review_search(Review.objects.all(), "certificate unrelatedword")) == []


@pytest.mark.postgres
def test_postgres_search_stems_words(author):
    past = timezone.now() - timedelta(days=3)
    timeouts = declare("Gateway timeouts on login", detected_at=past)
    assert [i for i, _rank in selectors.incident_text_matches("timeout gateway")] == [timeouts.pk]


@pytest.mark.postgres
def test_postgres_search_uses_the_indexes(author):
    declare("Anything")
    plans = []
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for published_only in (True, False):  # published reviews may go through their status index instead
            sql = (
                "WITH query AS (SELECT to_tsquery('english', %s) AS q) SELECT * FROM ("
                + selectors.search_sql.matches_sql(published_only=published_only, with_review=False)
                + ") m"
            )
            cursor.execute("EXPLAIN " + sql, ["'pool'"])
            plans += [row[0] for row in cursor.fetchall()]
    plan = "\n".join(plans)
    for index in ("incident_search_idx", "timeline_note_search_idx", "review_search_idx", "factor_search_idx"):
        assert index in plan, plan

"""Post-incident reviews through their services: prefill, workflow, close guard, blameless check, selectors."""

from datetime import timedelta

import pytest
from django.utils import timezone

from incidents import ingestion
from incidents import services as incident_services
from incidents.models import Alert, AlertGroup, Incident, TimelineEvent
from postmortems import selectors
from postmortems import services as review_services
from postmortems.models import ContributingFactor, Review, ReviewTemplate
from postmortems.services import PeopleNamed, ReviewConflict, ReviewError, ReviewRequired
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db
S = Incident.Status


@pytest.fixture
def people(db):
    return {
        "author": UserFactory(username="alice.nguyen", first_name="Alice", last_name="Nguyen", groups=["Responders"]),
        "reviewer": UserFactory(username="bob.okafor", first_name="Bob", last_name="Okafor", groups=["Responders"]),
        "second": UserFactory(username="carmen.diaz", first_name="Carmen", last_name="Diaz", groups=["Responders"]),
    }


@pytest.fixture
def resolved_sev1(people):
    """A SEV1 on checkout: impact 10 min before detection, acknowledged +5, mitigated +15, resolved +20."""
    t0 = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    checkout = ServiceFactory(slug="checkout", name="Checkout API")
    incident = declare(
        "Checkout returns 502s",
        severity=SeverityFactory(level=1),
        services=[checkout],
        summary="Card payments fail for about 40% of customers in Europe.",
        started_at=t0 - timedelta(minutes=10),
        detected_at=t0,
    )
    incident_services.role_assign(
        incident=incident, role="commander", user=people["author"], actor=people["author"], at=t0 + timedelta(minutes=5)
    )  # a person's first step acknowledges the incident (issue 12): at +5
    incident_services.timeline_note_add(
        incident=incident, actor=people["author"], body="Rolled back the 14:02 deploy.", occurred_at=t0 + timedelta(minutes=6)
    )
    return drive(incident, S.RESOLVED, actor=people["author"], at=t0)


def in_review(incident, people):
    review = review_services.review_create(incident=incident, actor=people["author"], reviewers=[people["reviewer"]])
    return review_services.review_submit(review=review, actor=people["author"])


def published(incident, people):
    review = in_review(incident, people)
    review_services.review_approve(review=review, actor=people["reviewer"])
    return review_services.review_publish(review=review, actor=people["author"])


def review_events(incident):
    return list(TimelineEvent.objects.filter(incident=incident, kind=TimelineEvent.Kind.REVIEW).order_by("id"))


# ---- creation and prefill -----------------------------------------------------------------------


def test_migration_seeds_a_default_template_with_every_section():
    template = ReviewTemplate.objects.get(is_default=True)
    assert template.root_cause and template.contributing_factors and template.lessons_learned
    assert all(getattr(template, name) for name in review_services.REVIEW_SECTION_NAMES)


def test_review_is_prefilled_from_the_incident_and_the_template(resolved_sev1, people):
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    template = ReviewTemplate.objects.get(is_default=True)

    assert review.status == Review.Status.DRAFT and review.template == template and review.author == people["author"]
    # Impact known so far, and the template's guidance after it.
    assert review.summary.startswith("Card payments fail for about 40%")
    assert "Checkout API" in review.customer_impact and "40% of customers" in review.customer_impact
    assert review.customer_impact.endswith(template.customer_impact)
    # The timeline as text: each step, the notes, no names (blameless).
    assert "Status triaging → responding" in review.timeline
    assert "Note: Rolled back the 14:02 deploy." in review.timeline
    assert "Incident commander assigned" in review.timeline
    assert "alice" not in review.timeline.lower()
    # Facts: severity, services, durations, roles and holders.
    assert "Severity: SEV1 Critical" in review.facts and "Services: Checkout API" in review.facts
    assert "Time to detect (impact start → detection): 10 min" in review.facts
    assert "Time to acknowledge (detection → acknowledgement): 5 min" in review.facts
    assert "Time to mitigate (detection → mitigation): 15 min" in review.facts
    assert "Time to resolve (detection → resolution): 20 min" in review.facts
    assert "Duration of impact: 25 min" in review.facts
    assert "- Incident commander: alice.nguyen" in review.facts
    # Sections the incident knows nothing about start from the template.
    assert review.root_cause == template.root_cause
    event = review_events(resolved_sev1)[-1]
    assert event.data == {"action": "created", "review_id": review.pk, "template": template.name, "required": True}


def test_starting_a_review_twice_returns_the_same_review(resolved_sev1, people):
    first = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    again = review_services.review_create(incident=resolved_sev1, actor=people["second"])
    assert first.pk == again.pk and Review.objects.count() == 1
    assert len(review_events(resolved_sev1)) == 1


def test_a_dismissed_incident_has_nothing_to_review(people):
    incident = drive(declare("False alarm"), S.DISMISSED)
    with pytest.raises(ReviewError, match="was dismissed"):
        review_services.review_create(incident=incident, actor=people["author"])


def test_the_timeline_text_leaves_out_restricted_incidents(people):
    secret = declare("Payroll exposure", restricted=True)
    dup = declare("Payroll alert again")
    dup = incident_services.incident_transition(incident=dup, to=S.DISMISSED, actor=None, duplicate_of=secret)
    dup = incident_services.incident_transition(incident=dup, to=S.TRIAGING, actor=None)
    review = review_services.review_create(incident=dup, actor=people["author"])
    assert secret.reference not in review.timeline and "Payroll exposure" not in review.timeline


# ---- the workflow -------------------------------------------------------------------------------


def test_submit_needs_a_reviewer(resolved_sev1, people):
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    with pytest.raises(ReviewConflict, match="at least one reviewer"):
        review_services.review_submit(review=review, actor=people["author"])
    assert Review.objects.get(pk=review.pk).status == Review.Status.DRAFT


def test_the_author_cannot_review_or_approve_their_own_review(resolved_sev1, people):
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    with pytest.raises(ReviewError, match="cannot also be its reviewer"):
        review_services.review_reviewer_add(review=review, user=people["author"], actor=people["author"])


def test_only_named_reviewers_approve_and_only_once_submitted(resolved_sev1, people):
    review = review_services.review_create(
        incident=resolved_sev1, actor=people["author"], reviewers=[people["reviewer"]]
    )
    with pytest.raises(ReviewConflict, match="only a review submitted for approval"):
        review_services.review_approve(review=review, actor=people["reviewer"])
    review_services.review_submit(review=review, actor=people["author"])
    with pytest.raises(ReviewError, match="Only the named reviewers"):
        review_services.review_approve(review=review, actor=people["second"])
    review_services.review_approve(review=review, actor=people["reviewer"])
    review_services.review_approve(review=review, actor=people["reviewer"])  # no-op
    assert [e.data["action"] for e in review_events(resolved_sev1)] == ["created", "submitted", "approved"]


def test_publishing_needs_every_named_reviewer(resolved_sev1, people):
    review = review_services.review_create(
        incident=resolved_sev1, actor=people["author"], reviewers=[people["reviewer"], people["second"]]
    )
    with pytest.raises(ReviewConflict, match="Submit the review"):
        review_services.review_publish(review=review, actor=people["author"])
    review_services.review_submit(review=review, actor=people["author"])
    review_services.review_approve(review=review, actor=people["reviewer"])
    with pytest.raises(ReviewConflict, match="waiting for approval from carmen.diaz"):
        review_services.review_publish(review=review, actor=people["author"])
    review_services.review_approve(review=review, actor=people["second"])
    review = review_services.review_publish(review=review, actor=people["author"])
    assert review.status == Review.Status.PUBLISHED and review.published_by == people["author"]
    assert review.published_at is not None
    review_services.review_publish(review=review, actor=people["author"])  # no-op


def test_publishing_is_recorded_on_the_incident_timeline(resolved_sev1, people):
    review = published(resolved_sev1, people)
    event = review_events(resolved_sev1)[-1]
    assert event.actor == people["author"] and event.body == "Post-incident review published"
    assert event.data["action"] == "published" and event.data["review_id"] == review.pk
    assert event.data["approved_by"] == ["bob.okafor"]


def test_editing_in_review_withdraws_approvals_and_a_published_review_is_read_only(resolved_sev1, people):
    review = review_services.review_create(
        incident=resolved_sev1, actor=people["author"], reviewers=[people["reviewer"], people["second"]]
    )
    review_services.review_submit(review=review, actor=people["author"])
    review_services.review_approve(review=review, actor=people["reviewer"])
    review_services.review_update(review=review, actor=people["author"], root_cause=review.root_cause)  # unchanged
    assert review.reviewers.filter(approved_at__isnull=False).count() == 1
    review_services.review_update(review=review, actor=people["author"], root_cause="The pool was too small.")
    assert review.reviewers.filter(approved_at__isnull=False).count() == 0
    assert review_events(resolved_sev1)[-1].data["action"] == "approvals_withdrawn"

    for reviewer in ("reviewer", "second"):
        review_services.review_approve(review=review, actor=people[reviewer])
    review_services.review_publish(review=review, actor=people["author"])
    with pytest.raises(ReviewConflict, match="reopen it"):
        review_services.review_update(review=review, actor=people["author"], root_cause="Changed afterwards.")
    with pytest.raises(ReviewConflict, match="reopen it"):
        review_services.review_factor_add(review=review, actor=people["author"], category="process", description="x")
    assert Review.objects.get(pk=review.pk).root_cause == "The pool was too small."


def test_reopening_goes_back_to_draft_and_withdraws_approvals(resolved_sev1, people):
    review = published(resolved_sev1, people)
    review = review_services.review_reopen(review=review, actor=people["author"], reason="New facts from the vendor")
    assert review.status == Review.Status.DRAFT and review.published_at is None
    assert not review.reviewers.filter(approved_at__isnull=False).exists()
    event = review_events(resolved_sev1)[-1]
    assert event.data["action"] == "reopened" and event.data["previous"] == "published"
    assert event.body == "New facts from the vendor"


def test_contributing_factors_are_records_with_a_category(resolved_sev1, people):
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    factor = review_services.review_factor_add(
        review=review, actor=people["author"], category="capacity", description="The pool had 10 connections."
    )
    review_services.review_factor_add(
        review=review, actor=people["author"], category="monitoring_gap", description="No alert on pool saturation."
    )
    review_services.review_factor_update(factor=factor, actor=people["author"], category="configuration")
    assert list(review.factors.values_list("category", flat=True)) == ["configuration", "monitoring_gap"]
    with pytest.raises(ReviewError, match="needs a description"):
        review_services.review_factor_add(review=review, actor=people["author"], category="other", description="  ")
    review_services.review_factors_set(
        review=review, actor=people["author"], factors=[{"category": "dependency", "description": "Vendor outage"}]
    )
    assert list(ContributingFactor.objects.filter(review=review).values_list("category", "description")) == [
        ("dependency", "Vendor outage")
    ]


# ---- the close guard ----------------------------------------------------------------------------


def test_a_required_review_must_be_published_before_closing(resolved_sev1, people):
    with pytest.raises(ReviewRequired) as refused:
        incident_services.incident_transition(incident=resolved_sev1, to=S.CLOSED, actor=people["author"])
    assert str(refused.value) == (
        f"{resolved_sev1.reference} needs a published post-incident review before it can be closed "
        "(SEV1 requires one; no review has been started)."
    )
    review = in_review(resolved_sev1, people)
    with pytest.raises(ReviewRequired, match="its review is waiting for approval"):
        incident_services.incident_transition(incident=resolved_sev1, to=S.CLOSED, actor=people["author"])
    assert Incident.objects.get(pk=resolved_sev1.pk).status == S.RESOLVED

    review_services.review_approve(review=review, actor=people["reviewer"])
    review_services.review_publish(review=review, actor=people["author"])
    incident = incident_services.incident_transition(incident=resolved_sev1, to=S.CLOSED, actor=people["author"])
    assert incident.status == S.CLOSED


def test_an_optional_review_does_not_hold_up_closing(people):
    incident = drive(declare("Search slow", severity=SeverityFactory(level=3)), S.RESOLVED)
    review_services.review_create(incident=incident, actor=people["author"])  # a draft, not required
    assert incident_services.incident_transition(incident=incident, to=S.CLOSED, actor=None).status == S.CLOSED


def test_the_guard_leaves_other_moves_alone(resolved_sev1, people):
    incident = incident_services.incident_transition(incident=resolved_sev1, to=S.POSTMORTEM, actor=people["author"])
    assert incident.status == S.POSTMORTEM


# ---- blameless check ----------------------------------------------------------------------------


def names_in(review):
    return sorted((m["section"], m["text"]) for m in review_services.review_people_named(review))


def test_blameless_check_finds_usernames_and_first_last_and_full_names(resolved_sev1, people):
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    review = review_services.review_update(
        review=review,
        actor=people["author"],
        root_cause="Alice Nguyen pushed the config. Later NGUYEN rolled it back; carmen.diaz noticed.",
        what_went_badly="bob forgot the runbook.",
    )
    review_services.review_factor_add(
        review=review, actor=people["author"], category="process", description="Okafor skipped the checklist."
    )
    assert names_in(review) == [
        ("factors", "Okafor"),
        ("root_cause", "Alice Nguyen"),
        ("root_cause", "NGUYEN"),
        ("root_cause", "carmen.diaz"),
        ("what_went_badly", "bob"),
    ]
    match = next(m for m in review_services.review_people_named(review) if m["text"] == "Alice Nguyen")
    assert match["users"] == ["alice.nguyen"] and match["section_label"] == "Root cause analysis"


def test_blameless_check_ignores_ordinary_words_parts_of_words_and_short_names(resolved_sev1, people):
    UserFactory(username="admin", first_name="Will", last_name="Mark")
    UserFactory(username="ed", first_name="Al", last_name="Grant")
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    review = review_services.review_update(
        review=review,
        actor=people["author"],
        summary="We will mark the alert as noisy. The admin page was slow; a grant of access was missing.",
        root_cause="Malice was ruled out. The Alicetown region and bobcat host were fine. Carmencita too.",
        what_went_well="The edge cache held. Al dente. The deploy pipeline rolled back by itself.",
    )
    assert names_in(review) == []


def test_publishing_a_review_that_names_people_needs_confirmation(resolved_sev1, people):
    review = in_review(resolved_sev1, people)
    review_services.review_update(review=review, actor=people["author"], root_cause="Carmen restarted the wrong node.")
    review_services.review_approve(review=review, actor=people["reviewer"])
    with pytest.raises(PeopleNamed, match=r"names people \(Carmen\)") as refused:
        review_services.review_publish(review=review, actor=people["author"])
    assert refused.value.matches[0]["users"] == ["carmen.diaz"]
    assert Review.objects.get(pk=review.pk).status == Review.Status.IN_REVIEW

    review = review_services.review_publish(review=review, actor=people["author"], acknowledge_named_people=True)
    assert review.status == Review.Status.PUBLISHED
    assert review_events(resolved_sev1)[-1].data["people_named_acknowledged"] == ["Carmen"]


# ---- knowledge base -----------------------------------------------------------------------------


def test_search_looks_through_every_section_and_factor(resolved_sev1, people):
    review = review_services.review_create(incident=resolved_sev1, actor=people["author"])
    review_services.review_update(review=review, actor=people["author"], lessons_learned="Pin the TLS library.")
    review_services.review_factor_add(
        review=review, actor=people["author"], category="dependency", description="Upstream certificate rotation"
    )
    other = review_services.review_create(incident=drive(declare("Search slow"), S.RESOLVED), actor=people["author"])
    reviews = Review.objects.all()
    assert list(selectors.review_search(reviews, "tls library")) == [review]
    assert list(selectors.review_search(reviews, "certificate rotation")) == [review]
    assert list(selectors.review_search(reviews, "Checkout 502s")) == [review]
    assert list(selectors.review_search(reviews, resolved_sev1.reference)) == [review]
    assert list(selectors.review_search(reviews, "tls search")) == []
    assert set(selectors.review_search(reviews, "")) == {review, other}


def test_reviews_of_restricted_incidents_follow_the_incident(people):
    secret = drive(declare("Payroll exposure", restricted=True), S.RESOLVED)
    review = review_services.review_create(incident=secret, actor=people["author"])
    outsider = UserFactory(username="otto", groups=["Responders"])
    assert list(selectors.review_list(outsider)) == []
    incident_services.incident_member_add(incident=secret, user=outsider, actor=people["author"])
    assert list(selectors.review_list(outsider)) == [review]


def test_similar_past_incidents_by_service_alert_group_and_title(people):
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    search = ServiceFactory(slug="search", name="Search")
    past = timezone.now() - timedelta(days=30)
    same_service = declare("Card payments declined", services=[checkout], detected_at=past)
    same_words = declare("Gateway timeouts on login", services=[search], detected_at=past)
    declare("Search index stale", services=[search], detected_at=past)  # shares nothing: not listed
    hidden = declare("Checkout gateway timeouts (secret)", services=[checkout], detected_at=past, restricted=True)
    now = declare("Checkout gateway timeouts", services=[checkout])
    outsider = UserFactory(username="otto")

    found = selectors.similar_incidents(now, outsider)
    assert [(f.incident, f.score, f.reasons) for f in found] == [
        (same_words, 4, ["similar title: gateway, timeouts"]),
        (same_service, 2, ["same service: Checkout"]),
    ]
    # Those who may see the restricted one get it too, most alike first.
    superuser = UserFactory(username="sue", is_superuser=True)
    assert selectors.similar_incidents(now, superuser)[0].incident == hidden


def test_recurrence_links_show_only_visible_incidents(people):
    first = declare("Queue backlog")
    secret = declare("Queue backlog (restricted)", recurrence_of=first, restricted=True)
    later = declare("Queue backlog again", recurrence_of=first)
    outsider = UserFactory(username="otto")
    earlier, recurrences = selectors.recurrence_links(first, outsider)
    assert earlier is None and recurrences == [later]
    assert selectors.recurrence_links(later, outsider) == (first, [])
    assert secret in selectors.recurrence_links(first, UserFactory(username="sue", is_superuser=True))[1]


def test_similar_past_incidents_include_those_of_the_same_alert_group(people):
    integration, _key = ingestion.integration_create(kind="alertmanager", name="Alertmanager test")
    group = AlertGroup.objects.create(integration=integration, key_hash="k" * 64, group_key='{}:{alertname="DiskFull"}')
    past = timezone.now() - timedelta(days=10)
    before = declare("Volume nearly full", detected_at=past)
    now = declare("Disk pressure on db-2")
    for incident, starts in ((before, past), (now, timezone.now())):
        Alert.objects.create(group=group, incident=incident, fingerprint="f1", starts_at=starts, severity_level=3)

    found = selectors.similar_incidents(now, people["author"])
    assert [(f.incident, f.reasons) for f in found] == [(before, ["same alert group"])]

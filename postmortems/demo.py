"""Demo data for post-incident reviews: `seed_demo` publishes one for every incident it closes that needs one
(registered with incidents.demo in PostmortemsConfig.ready)."""

from datetime import timedelta

from . import services

ROOT_CAUSE = (
    "A change to a shared component reached production without a check that exercises the failing path. "
    "The service's health checks stayed green while the error rate climbed, so the impact was first seen "
    "in the error-rate alert rather than at deploy time."
)
WENT_WELL = "The alert fired within minutes; the rollback procedure worked as documented."
WENT_BADLY = "The dashboards did not show which dependency was failing; finding it took most of the response."
LESSONS = "Deploy checks should cover the paths customers use most; dashboards should show dependencies."


def demo_review_publish(*, incident, author, responders, at):
    """Start, write, approve and publish the review of `incident`, dated `at` (before it is closed).

    Only for incidents whose severity requires a review: the others close without one."""
    if not incident.severity.review_required:
        return None
    reviewer = next(u for u in sorted(responders, key=lambda u: u.username) if u.pk != author.pk)
    review = services.review_create(incident=incident, actor=author, reviewers=[reviewer], at=at)
    services.review_update(
        review=review,
        actor=author,
        root_cause=ROOT_CAUSE,
        what_went_well=WENT_WELL,
        what_went_badly=WENT_BADLY,
        lessons_learned=LESSONS,
    )
    services.review_factor_add(
        review=review, actor=author, category="code_change", description="The change was not covered by a deploy check."
    )
    services.review_factor_add(
        review=review, actor=author, category="monitoring_gap", description="No dashboard showed the failing dependency."
    )
    services.review_submit(review=review, actor=author, at=at)
    services.review_approve(review=review, actor=reviewer, at=at)
    # The prefilled timeline quotes the responders' notes; the demo publishes them as they are.
    return services.review_publish(review=review, actor=author, acknowledge_named_people=True, at=at)


def demo_action_items(*, people, now, **_context):
    """Two action items from each of the five latest published reviews: some done, some overdue."""
    from .models import ActionItem, Review

    if ActionItem.objects.exists():
        return  # seeded before
    owners = people["Responders"]
    today = now.date()
    reviews = Review.objects.filter(status=Review.Status.PUBLISHED).select_related("incident", "author")
    for n, review in enumerate(reviews.order_by("-published_at")[:5]):
        author = review.author
        alert = services.action_item_create(
            incident=review.incident,
            review=review,
            actor=author,
            title="Alert on the error rate of the failing path",
            owner=owners[n % len(owners)],
            due_date=today + timedelta(days=7 - 4 * n),  # the older the review, the more overdue
            priority="high",
            kind="detect",
        )
        check = services.action_item_create(
            incident=review.incident,
            review=review,
            actor=author,
            title="Add a deploy check that exercises the failing path",
            owner=owners[(n + 1) % len(owners)],
            due_date=today + timedelta(days=14 - 3 * n),
            priority="medium",
            kind="prevent",
        )
        if n >= 3:
            services.action_item_status_set(item=alert, status="done", actor=alert.owner)
        if n == 4:
            services.action_item_status_set(
                item=check, status="wont_do", actor=author, reason="Covered by the new canary stage instead."
            )

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from incidents import services as incident_services
from incidents.models import Service, Severity

SEVERITY_NAMES = {1: "Critical", 2: "High", 3: "Medium", 4: "Low"}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-for-tests-1")
    is_staff = True

    @factory.post_generation
    def groups(self, create, names, **kwargs):
        for name in names or ():
            self.groups.add(Group.objects.get(name=name))


class SeverityFactory(factory.django.DjangoModelFactory):
    """Severities are seeded by a migration; the factory finds them (or recreates them after a flush)."""

    class Meta:
        model = Severity
        django_get_or_create = ("level",)

    level = 3
    name = factory.LazyAttribute(lambda s: SEVERITY_NAMES.get(s.level, f"Level {s.level}"))
    label = factory.LazyAttribute(lambda s: f"SEV{s.level}")
    definition = "Seeded for tests."
    expected_response = "Seeded for tests."
    ack_target_minutes = 15
    update_interval_minutes = 60
    review_required = factory.LazyAttribute(lambda s: s.level <= 2)


class ServiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Service
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Service {n}")
    slug = factory.Sequence(lambda n: f"service-{n}")
    owning_team = "Platform"


def declare(title="Checkout errors", severity=None, actor=None, services=(), **kwargs):
    """Declare an incident the way users do: through the service."""
    return incident_services.incident_declare(
        title=title, severity=severity or SeverityFactory(level=3), actor=actor, services=services, **kwargs
    )


# The way an incident normally travels to each status, used to set up a starting status through the
# services (every step is an allowed transition).
_FORWARD = ("triaging", "responding", "mitigated", "resolved", "postmortem", "closed")
PATH_TO = {
    "detected": (),
    **{status: _FORWARD[: i + 1] for i, status in enumerate(_FORWARD)},
    "dismissed": ("triaging", "dismissed"),
}


def drive(incident, status, actor=None, at=None, step=None):
    """Move an incident to `status` through incident_transition, one step of PATH_TO at a time.

    With `at`, the steps are dated at + step, at + 2*step, … (step defaults to five minutes).
    """
    step = step or timedelta(minutes=5)
    for to in PATH_TO[status]:
        if at is not None:
            at = at + step
        if to == "closed" and incident.severity.review_required:
            review_publish(incident, at=at)  # the product refuses to close it otherwise
        incident = incident_services.incident_transition(incident=incident, to=to, actor=actor, at=at)
    return incident


def review_publish(incident, at=None):
    """Publish a short review of `incident` the way people do: written, approved by another, published."""
    from postmortems import services as review_services

    author, reviewer = UserFactory(username="review-author"), UserFactory(username="review-reviewer")
    review = review_services.review_create(incident=incident, actor=author, reviewers=[reviewer], at=at)
    review_services.review_update(review=review, actor=author, root_cause="A change without a check.")
    review_services.review_submit(review=review, actor=author, at=at)
    review_services.review_approve(review=review, actor=reviewer, at=at)
    return review_services.review_publish(review=review, actor=author, acknowledge_named_people=True, at=at)

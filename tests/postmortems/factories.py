"""Factories for the postmortems app (reviews first; action items appended below)."""

import factory

from postmortems.models import Review
from tests.incidents.factories import SeverityFactory, declare


class ReviewFactory(factory.django.DjangoModelFactory):
    """A bare draft review of a fresh incident (use postmortems.services.review_create for a prefilled one)."""

    class Meta:
        model = Review

    incident = factory.LazyFunction(lambda: declare(title="Checkout errors", severity=SeverityFactory(level=2)))
    status = Review.Status.DRAFT


# ---- Action items ----


def action_item(incident=None, title="Add an alert on checkout 5xx", actor=None, **kwargs):
    """An action item made the way users make one: through the service (a timeline row included)."""
    from postmortems import services as postmortem_services

    incident = incident or declare(title="Checkout errors", severity=SeverityFactory(level=2))
    return postmortem_services.action_item_create(incident=incident, title=title, actor=actor, **kwargs)


class ActionItemFactory(factory.django.DjangoModelFactory):
    """A bare open action item (no timeline row); use action_item() to go through the service."""

    class Meta:
        model = "postmortems.ActionItem"

    incident = factory.LazyFunction(lambda: declare(title="Checkout errors", severity=SeverityFactory(level=2)))
    title = factory.Sequence(lambda n: f"Action item {n}")
    priority = "medium"
    kind = "prevent"
    status = "open"

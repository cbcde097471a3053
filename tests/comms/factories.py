"""Factories for the comms app. Each area appends its own below its header; never rewrite the others'."""

import factory

from comms.models import Update, UpdateTemplate
from tests.incidents.factories import declare

# ---- Updates and templates ----


class UpdateTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UpdateTemplate

    name = factory.Sequence(lambda n: f"Template {n}")
    audience = Update.Audience.EXTERNAL
    public_status = Update.PublicStatus.INVESTIGATING
    title = "Investigating: {{ incident.title }}"
    body = "We are investigating problems with {{ services }}. Next update by {{ next_update_at }}."


class UpdateFactory(factory.django.DjangoModelFactory):
    """A draft saved directly (use the services to move it through the workflow)."""

    class Meta:
        model = Update

    incident = factory.LazyFunction(lambda: declare("Checkout errors"))
    audience = Update.Audience.EXTERNAL
    public_status = factory.LazyAttribute(
        lambda u: Update.PublicStatus.INVESTIGATING if u.audience == Update.Audience.EXTERNAL else ""
    )
    title = "Checkout errors"
    body = "We are investigating **errors** at checkout."
    body_html = "<p>We are investigating <strong>errors</strong> at checkout.</p>"


# ---- Outbound webhooks ----


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    """Saved directly, past the URL check (tests use the services to exercise it)."""

    class Meta:
        model = "comms.WebhookEndpoint"

    url = factory.Sequence(lambda n: f"https://hooks{n}.example.com/incidents")
    description = "Test receiver"
    events = factory.LazyFunction(
        lambda: ["incident.created", "incident.updated", "incident.status_changed", "update.published", "review.published"]
    )


# ---- Subscribers and deliveries ----


def _now():
    from django.utils import timezone

    return timezone.now()


class SubscriberFactory(factory.django.DjangoModelFactory):
    """A confirmed e-mail subscriber to every service (use the services for the public opt-in flow)."""

    class Meta:
        model = "comms.Subscriber"
        skip_postgeneration_save = True

    channel = "email"
    email = factory.Sequence(lambda n: f"subscriber{n}@example.com")
    url = ""
    source = "staff"
    confirmed_at = factory.LazyFunction(_now)

    @factory.post_generation
    def services(self, create, services, **kwargs):
        if services:
            self.services.set(services)


class OutreachContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "comms.OutreachContact"
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"ops{n}@customer.example")

    @factory.post_generation
    def services(self, create, services, **kwargs):
        if services:
            self.services.set(services)


# ---- Status page: scheduled maintenance ----


def published_update(
    incident,
    *,
    public_status="investigating",
    body="We are looking into it.",
    title="",
    components=(),
    published_at=None,
    audience="external",
    status="published",
    corrects=None,
):
    """An update saved straight into a state (published by default), with its component rows.

    The public documents only read these rows; tests of the workflow itself use the services.
    components: [(service, component status)].
    """
    from django.utils import timezone

    from comms.models import UpdateComponent
    from comms.rendering import markdown_render

    if audience == "internal":
        public_status = ""
    update = Update.objects.create(
        incident=incident,
        audience=audience,
        public_status=public_status,
        status=status,
        title=title,
        body=body,
        body_html=markdown_render(body),
        corrects=corrects,
        published_at=(published_at or timezone.now()) if status == "published" else None,
    )
    UpdateComponent.objects.bulk_create(
        UpdateComponent(update=update, service=service, status=state) for service, state in components
    )
    return update


def maintenance_scheduled(*, services, name="Database upgrade", body="We upgrade the **database**.", starts_in=None,
                          lasts=None, **kwargs):
    """A maintenance scheduled through the service (starts in two days and lasts two hours by default)."""
    from datetime import timedelta

    from django.utils import timezone

    from comms.services import maintenance_schedule

    start = timezone.now() + (starts_in if starts_in is not None else timedelta(days=2))
    return maintenance_schedule(
        name=name,
        body=body,
        services=services,
        scheduled_for=start,
        scheduled_until=start + (lasts if lasts is not None else timedelta(hours=2)),
        **kwargs,
    )


# ---- Public identity ----


def named(incident, public_title):
    """Give the incident a public title straight in the table (tests of the service use the service)."""
    from incidents.models import Incident

    Incident.objects.filter(pk=incident.pk).update(public_title=public_title)
    incident.public_title = public_title
    return incident

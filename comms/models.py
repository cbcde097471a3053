from django.db import models

from incidents.models import Incident

# ---- Updates and templates ----


class Update(models.Model):
    """What staff tell stakeholders (internal) or customers (external) about an incident."""

    class Audience(models.TextChoices):
        INTERNAL = "internal", "Internal (stakeholders, executives)"
        EXTERNAL = "external", "External (customers)"

    class PublicStatus(models.TextChoices):  # Statuspage's vocabulary
        INVESTIGATING = "investigating", "Investigating"
        IDENTIFIED = "identified", "Identified"
        MONITORING = "monitoring", "Monitoring"
        RESOLVED = "resolved", "Resolved"
        POSTMORTEM = "postmortem", "Postmortem"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved", "Approved"
        PUBLISHED = "published", "Published"

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="updates")
    audience = models.CharField(max_length=10, choices=Audience.choices)
    public_status = models.CharField(max_length=20, choices=PublicStatus.choices, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    body = models.TextField(help_text="Markdown.")
    body_html = models.TextField(blank=True, editable=False, help_text="The body rendered and sanitised.")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.get_audience_display()} update on {self.incident.reference}"




# ---- Subscribers and deliveries ----


class Subscriber(models.Model):
    """Someone who hears of published external updates: by e-mail, webhook or Slack-compatible webhook."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"
        SLACK = "slack", "Slack-compatible incoming webhook"

    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.EMAIL)
    email = models.EmailField(blank=True)
    url = models.URLField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.email or self.url


# ---- Outbound webhooks for integrators ----


# ---- Status page: scheduled maintenance ----

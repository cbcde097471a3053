from django.conf import settings
from django.db import models
from django.utils import timezone

from incidents.models import Incident

# ---- Updates and templates ----


class ComponentStatus(models.TextChoices):
    """Statuspage's component statuses, exactly (the status page and its JSON reuse these)."""

    OPERATIONAL = "operational", "Operational"
    DEGRADED_PERFORMANCE = "degraded_performance", "Degraded performance"
    PARTIAL_OUTAGE = "partial_outage", "Partial outage"
    MAJOR_OUTAGE = "major_outage", "Major outage"
    UNDER_MAINTENANCE = "under_maintenance", "Under maintenance"


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
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField(help_text="Markdown.")
    body_html = models.TextField(blank=True, editable=False, help_text="The body rendered and sanitised.")
    template = models.ForeignKey(
        "UpdateTemplate", null=True, blank=True, on_delete=models.SET_NULL, related_name="updates"
    )
    corrects = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
        help_text="The published update this one corrects (the original stays as it was).",
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("approve_update", "Can approve updates written by someone else"),
            ("publish_external_update", "Can publish external updates"),
        ]
        indexes = [
            models.Index(fields=["incident", "status", "-published_at"], name="update_incident_published_idx"),
            models.Index(fields=["-created_at", "-id"], name="update_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="published") | models.Q(published_at__isnull=False),
                name="update_published_stamped",
                violation_error_message="A published update needs its publication time.",
            ),
            models.CheckConstraint(
                condition=models.Q(audience="internal") | ~models.Q(public_status=""),
                name="update_external_has_public_status",
                violation_error_message="An external update needs a public status.",
            ),
        ]

    def __str__(self):
        return f"{self.get_audience_display()} update on {self.incident.reference}"

    @property
    def is_external(self):
        return self.audience == self.Audience.EXTERNAL

    @property
    def is_correction(self):
        return self.corrects_id is not None


class UpdateTemplate(models.Model):
    """A starting text for an update, per audience, public status and severity (empty = any).

    Title and body may use placeholders from a fixed list (comms.rendering.PLACEHOLDERS), filled by
    plain substitution when an update is drafted from it; nothing a person wrote is ever evaluated.
    """

    name = models.CharField(max_length=100, unique=True)
    audience = models.CharField(max_length=10, choices=Update.Audience.choices)
    public_status = models.CharField(
        max_length=20,
        blank=True,
        choices=Update.PublicStatus.choices,
        help_text="External updates: the public status this text suits (empty: any).",
    )
    severity = models.ForeignKey(
        "incidents.Severity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="update_templates",
        help_text="Empty: any severity.",
    )
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField(help_text="Markdown, with placeholders such as {{ incident.title }}.")
    is_active = models.BooleanField(default=True, help_text="Offered when drafting.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["audience", "public_status", "name"]

    def __str__(self):
        return self.name


class UpdateComponent(models.Model):
    """A status-page component (a public service) named by an external update, with its status then."""

    update = models.ForeignKey(Update, on_delete=models.CASCADE, related_name="components")
    service = models.ForeignKey("incidents.Service", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=30, choices=ComponentStatus.choices)

    class Meta:
        ordering = ["service__name", "id"]
        constraints = [models.UniqueConstraint(fields=["update", "service"], name="update_component_once")]

    def __str__(self):
        return f"{self.service}: {self.get_status_display()}"


# ---- Subscribers and deliveries ----


class Subscriber(models.Model):
    """Someone who hears of published external updates: by e-mail, webhook or Slack-compatible webhook.

    Hears of incidents on the chosen services (none chosen: every service) at or above the minimum
    severity (none: every severity). Only confirmed, not unsubscribed subscribers get anything.
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"
        SLACK = "slack", "Slack-compatible incoming webhook"

    class Source(models.TextChoices):
        PUBLIC = "public", "Public subscription form"
        STAFF = "staff", "Added by staff"
        API = "api", "Added through the API"

    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.EMAIL)
    email = models.EmailField(blank=True)
    url = models.URLField(blank=True, max_length=500)
    services = models.ManyToManyField(
        "incidents.Service", blank=True, related_name="subscribers", help_text="None chosen: every service."
    )
    min_severity = models.ForeignKey(
        "incidents.Severity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Hear of incidents this severe or worse (Sev2: Sev1 and Sev2). Empty: every severity.",
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.STAFF)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmation_sent_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Only the latest confirmation link works."
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at", "-id"], name="subscriber_created_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["email"],
                condition=models.Q(channel="email"),
                name="subscriber_email_once",
                violation_error_message="This address is already subscribed.",
            ),
            models.UniqueConstraint(
                fields=["channel", "url"],
                condition=~models.Q(channel="email"),
                name="subscriber_url_once",
                violation_error_message="This URL is already subscribed.",
            ),
            models.CheckConstraint(
                condition=(models.Q(channel="email") & ~models.Q(email=""))
                | (~models.Q(channel="email") & ~models.Q(url="")),
                name="subscriber_has_address",
                violation_error_message="An e-mail subscriber needs an address; a webhook one a URL.",
            ),
        ]

    def __str__(self):
        return self.email or self.url

    @property
    def address(self):
        return self.email if self.channel == self.Channel.EMAIL else self.url

    @property
    def is_active(self):
        return self.confirmed_at is not None and self.unsubscribed_at is None


class StakeholderList(models.Model):
    """People and addresses who receive internal updates (executives, support leads, account managers)
    on incidents of the chosen services (none: every service) at or above the minimum severity."""

    name = models.CharField(max_length=100, unique=True)
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="stakeholder_lists")
    emails = models.TextField(blank=True, help_text="Other addresses, one per line (or comma-separated).")
    services = models.ManyToManyField(
        "incidents.Service", blank=True, related_name="stakeholder_lists", help_text="None chosen: every service."
    )
    min_severity = models.ForeignKey(
        "incidents.Severity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Hear of incidents this severe or worse (Sev2: Sev1 and Sev2). Empty: every severity.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def email_list(self):
        return [e.strip() for e in self.emails.replace(",", "\n").splitlines() if e.strip()]


class OutreachContact(models.Model):
    """A customer told directly about incidents on its services, when the severity's policy says so (Sev1)."""

    name = models.CharField(max_length=200, help_text="Customer or account name.")
    email = models.EmailField()
    services = models.ManyToManyField(
        "incidents.Service", blank=True, related_name="outreach_contacts", help_text="None chosen: every service."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "email"]
        constraints = [models.UniqueConstraint(fields=["name", "email"], name="outreach_contact_once")]

    def __str__(self):
        return f"{self.name} <{self.email}>"


class Delivery(models.Model):
    """One published update to one recipient: claimed by a worker before sending, never sent twice."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    class Audience(models.TextChoices):
        SUBSCRIBER = "subscriber", "Subscriber"
        OUTREACH = "outreach", "Direct outreach"
        STAKEHOLDER = "stakeholder", "Stakeholder (role holder)"

    update = models.ForeignKey(Update, on_delete=models.CASCADE, related_name="deliveries")
    audience = models.CharField(max_length=12, choices=Audience.choices)
    channel = models.CharField(max_length=10, choices=Subscriber.Channel.choices)
    # The recipient: the address (lower-cased e-mail or URL) is the unique key, so one person who is
    # both a subscriber and an outreach contact still gets one message.
    address = models.CharField(max_length=500)
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    outreach_contact = models.ForeignKey(
        OutreachContact, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="Handed to the broker (empty: not yet).")
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["update", "channel", "address"], name="delivery_once_per_recipient"),
            models.CheckConstraint(
                condition=~models.Q(state="sent") | models.Q(sent_at__isnull=False),
                name="delivery_sent_stamped",
            ),
        ]
        indexes = [
            models.Index(fields=["update", "state"], name="delivery_update_state_idx"),
            models.Index(fields=["state", "created_at"], name="delivery_state_created_idx"),
            models.Index(fields=["claimed_at"], name="delivery_claimed_idx"),  # the sweep: is any worker busy?
        ]

    def __str__(self):
        return f"{self.address} ({self.get_state_display()})"


class IncidentNudge(models.Model):
    """A reminder sent about an incident, once per key: an update due (per due window), an update
    overdue by a whole interval (per due window), an acknowledgement not made in time (once)."""

    class Kind(models.TextChoices):
        UPDATE_DUE = "update_due", "Update due (communications lead)"
        UPDATE_OVERDUE = "update_overdue", "Update overdue by an interval (commander)"
        ACK_ESCALATION = "ack_escalation", "Not acknowledged in time"
        REVIEW_REQUESTED = "review_requested", "Update waiting for review (approvers)"
        RESOLUTION_DRAFTED = "resolution_drafted", "Resolved internally: resolving update drafted (communications lead)"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="nudges")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    window = models.DateTimeField(help_text="The due time this reminder is for (acknowledgement: the detection time).")
    recipients = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "kind", "window"], name="nudge_once_per_window"),
            models.UniqueConstraint(
                fields=["incident"], condition=models.Q(kind="ack_escalation"), name="nudge_ack_escalation_once"
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} for incident {self.incident_id}"


# ---- Outbound webhooks for integrators ----


def webhook_secret_generate():
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    import base64
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookEndpoint(models.Model):
    """An integrator's URL that receives signed events (Standard Webhooks) about incidents."""

    class Event(models.TextChoices):
        INCIDENT_CREATED = "incident.created", "Incident created"
        INCIDENT_UPDATED = "incident.updated", "Incident updated (notes, roles, severity, details…)"
        INCIDENT_STATUS_CHANGED = "incident.status_changed", "Incident status changed"
        UPDATE_PUBLISHED = "update.published", "Update published"
        REVIEW_PUBLISHED = "review.published", "Post-incident review published"

    url = models.URLField("URL", max_length=500, help_text="Receives a POST per event: http or https.")
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, help_text="The event types this endpoint receives.")
    secret = models.CharField(
        max_length=100,
        default=webhook_secret_generate,
        help_text="Signing secret (Standard Webhooks): the receiver verifies webhook-signature with it.",
    )
    is_active = models.BooleanField("active", default=True)
    allow_private_destination = models.BooleanField(
        default=False,
        help_text="Allow loopback, link-local and private addresses (internal receivers). Administrators only.",
    )
    include_restricted = models.BooleanField(
        "include restricted incidents",
        default=False,
        help_text="Also send events about restricted incidents. Only people who see all restricted incidents may set it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url", "id"]
        permissions = [
            ("allow_private_webhook_destination", "Can allow webhooks to loopback, link-local and private addresses")
        ]

    def __str__(self):
        return self.url


class WebhookDelivery(models.Model):
    """One event for one endpoint: the exact body sent, each attempt's outcome, and when to try again."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    event_id = models.CharField(max_length=100, help_text="The webhook-id header: the same on every retry.")
    event_type = models.CharField(max_length=50)
    body = models.TextField(help_text="The exact JSON body sent (signed as is).")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The start of the last response's body.")
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due_idx"),
            models.Index(fields=["-created_at", "-id"], name="webhook_delivery_created_idx"),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once_per_endpoint")
        ]

    def __str__(self):
        return f"{self.event_type} {self.event_id} to {self.endpoint_id}"


# ---- Status page: scheduled maintenance ----


class ScheduledMaintenance(models.Model):
    """A planned window of work on some services, shown on the public status page and in its JSON.

    Written for the public: its name, body and updates appear on the status page as they are.
    Statuses are Statuspage's maintenance statuses.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        IN_PROGRESS = "in_progress", "In progress"
        VERIFYING = "verifying", "Verifying"
        COMPLETED = "completed", "Completed"

    class Impact(models.TextChoices):  # Statuspage's incident impacts; maintenances normally say "maintenance"
        MAINTENANCE = "maintenance", "Maintenance"
        NONE = "none", "None"
        MINOR = "minor", "Minor"
        MAJOR = "major", "Major"
        CRITICAL = "critical", "Critical"

    S = Status
    TRANSITIONS = {
        S.SCHEDULED: {S.IN_PROGRESS, S.COMPLETED},
        S.IN_PROGRESS: {S.VERIFYING, S.COMPLETED},
        S.VERIFYING: {S.IN_PROGRESS, S.COMPLETED},
        S.COMPLETED: set(),
    }
    del S

    name = models.CharField(max_length=200, help_text="Public title, e.g. “Database upgrade”.")
    body = models.TextField(help_text="Markdown, shown publicly: what happens and what customers will notice.")
    body_html = models.TextField(blank=True, editable=False)
    services = models.ManyToManyField(
        "incidents.Service",
        related_name="maintenances",
        help_text="Public services among these are shown as under maintenance while it is in progress.",
    )
    scheduled_for = models.DateTimeField(help_text="Start of the window.")
    scheduled_until = models.DateTimeField(help_text="End of the window.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SCHEDULED, editable=False)
    impact = models.CharField(max_length=20, choices=Impact.choices, default=Impact.MAINTENANCE)
    auto_transition = models.BooleanField(
        default=True,
        help_text="Start it at the beginning of the window and complete it at the end automatically.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    announced_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When subscribers were told of it beforehand."
    )

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        indexes = [models.Index(fields=["status", "scheduled_for"], name="maintenance_status_for_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scheduled_until__gt=models.F("scheduled_for")),
                name="maintenance_window_ends_after_start",
                violation_error_message="The window must end after it starts.",
            )
        ]

    def __str__(self):
        return self.name

    @property
    def is_open(self):
        return self.status != self.Status.COMPLETED


class MaintenanceUpdate(models.Model):
    """One public message on a maintenance: written when it is scheduled and at each status change."""

    maintenance = models.ForeignKey(ScheduledMaintenance, on_delete=models.CASCADE, related_name="updates")
    status = models.CharField(max_length=20, choices=ScheduledMaintenance.Status.choices)
    body = models.TextField(blank=True)
    body_html = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_status_display()}: {self.maintenance}"


class MaintenanceNotice(models.Model):
    """One message telling one subscriber (e-mail, webhook or Slack) of a maintenance: unique per
    maintenance, subscriber, kind and window (a rescheduled window is announced again)."""

    class Kind(models.TextChoices):
        UPCOMING = "upcoming", "Upcoming maintenance"
        RESCHEDULED = "rescheduled", "Maintenance rescheduled"
        STARTED = "started", "Maintenance started"
        COMPLETED = "completed", "Maintenance completed"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    maintenance = models.ForeignKey(ScheduledMaintenance, on_delete=models.CASCADE, related_name="notices")
    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="maintenance_notices")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.UPCOMING)
    window_start = models.DateTimeField(null=True, blank=True, help_text="The start of the window it announced.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker took it for sending.")
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["maintenance", "subscriber", "kind", "window_start"],
                name="maintenance_notice_once_per_window",
            )
        ]
        indexes = [models.Index(fields=["maintenance", "status"], name="maintenance_notice_status_idx")]

    def __str__(self):
        return f"{self.get_kind_display()} to {self.subscriber}"


# Models that live with their feature, imported here so Django finds them: direct outreach to the
# contacts of affected accounts (comms/outreach), the Slack app (comms/slack) and the status page's
# public state version (comms/status).
from .outreach.models import Outreach, OutreachDelivery  # noqa: E402, F401
from .slack.models import SlackCall, SlackChannel, SlackEvent, SlackNote, SlackUser  # noqa: E402, F401
from .status.models import StatusPageVersion  # noqa: E402, F401

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class ServiceGroup(models.Model):
    """A heading that services are grouped under (and status-page components, later)."""

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self):
        return self.name


class Service(models.Model):
    """Something that can break: a product, an API, a piece of infrastructure."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    owning_team = models.CharField(max_length=100, blank=True)
    contact = models.CharField(max_length=200, blank=True, help_text="E-mail, chat channel or pager of the owning team.")
    is_public = models.BooleanField(default=False, help_text="Shown as a component on the public status page.")
    group = models.ForeignKey(ServiceGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="services")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Severity(models.Model):
    """Severity levels are data: administrators edit names, targets and policy per level."""

    level = models.PositiveSmallIntegerField(unique=True, help_text="1 is the most severe.")
    name = models.CharField(max_length=50)
    label = models.CharField(max_length=10, unique=True, help_text="Short label, e.g. SEV1.")
    definition = models.TextField()
    expected_response = models.TextField()
    ack_target_minutes = models.PositiveIntegerField(help_text="Acknowledge within this many minutes.")
    update_interval_minutes = models.PositiveIntegerField(help_text="Stakeholders hear an update this often.")
    review_required = models.BooleanField(help_text="A post-incident review is required.")
    colour = models.CharField(max_length=7, default="#6c757d", help_text="Hex colour used in lists.")

    class Meta:
        ordering = ["level"]
        verbose_name_plural = "severities"

    def __str__(self):
        return f"{self.label} {self.name}"


class ReferenceCounter(models.Model):
    """Hands out gapless incident numbers: the row is locked and bumped in the declaring transaction."""

    name = models.CharField(max_length=50, primary_key=True)
    last_value = models.PositiveIntegerField()


# Status groups, at module level so the constraints in Incident.Meta can name them.
OPEN_STATUSES = ("detected", "triaging", "responding", "mitigated")
MITIGATED_OR_LATER = ("mitigated", "resolved", "postmortem", "closed")
RESOLVED_OR_LATER = ("resolved", "postmortem", "closed")
ENDED = ("closed", "dismissed")


class IncidentQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=Incident.OPEN_STATUSES)


class Incident(models.Model):
    class Status(models.TextChoices):
        DETECTED = "detected", "Detected"
        TRIAGING = "triaging", "Triaging"
        RESPONDING = "responding", "Responding"
        MITIGATED = "mitigated", "Mitigated"
        RESOLVED = "resolved", "Resolved"
        POSTMORTEM = "postmortem", "Post-mortem"
        CLOSED = "closed", "Closed"
        DISMISSED = "dismissed", "Dismissed"

    S = Status
    # Allowed moves. Skipping forward is allowed; going back is a reopen (or undoing a dismissal).
    TRANSITIONS = {
        S.DETECTED: {S.TRIAGING, S.RESPONDING, S.MITIGATED, S.RESOLVED, S.DISMISSED},
        S.TRIAGING: {S.RESPONDING, S.MITIGATED, S.RESOLVED, S.DISMISSED},
        S.RESPONDING: {S.MITIGATED, S.RESOLVED},
        S.MITIGATED: {S.RESPONDING, S.RESOLVED},
        S.RESOLVED: {S.POSTMORTEM, S.CLOSED, S.RESPONDING},
        S.POSTMORTEM: {S.CLOSED, S.RESPONDING},
        S.CLOSED: set(),
        S.DISMISSED: {S.TRIAGING},
    }
    del S
    OPEN_STATUSES = OPEN_STATUSES
    MITIGATED_OR_LATER_STATUSES = MITIGATED_OR_LATER
    RESOLVED_OR_LATER_STATUSES = RESOLVED_OR_LATER

    number = models.PositiveIntegerField(unique=True, editable=False)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    severity = models.ForeignKey(Severity, on_delete=models.PROTECT, related_name="incidents")
    services = models.ManyToManyField(Service, blank=True, related_name="incidents")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DETECTED, editable=False)

    started_at = models.DateTimeField(null=True, blank=True, help_text="When impact began, if known; may precede detection.")
    detected_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True, editable=False)
    mitigated_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    recurrence_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="recurrences",
        help_text="An earlier incident that this one repeats.",
    )
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="duplicates", editable=False,
    )
    # Kept in step with the active commander role by the role service, so lists can show and filter it.
    commander = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="commanded_incidents", editable=False,
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_activity_at = models.DateTimeField(default=timezone.now, editable=False, help_text="Time of the latest timeline event.")
    # Bumped by every change; an edit based on an older version is refused instead of overwriting.
    version = models.PositiveIntegerField(default=1, editable=False)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-detected_at", "-id"]
        indexes = [
            models.Index(fields=["-detected_at", "-id"], name="incident_detected_idx"),
            models.Index(fields=["status", "-detected_at"], name="incident_status_detected_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(started_at__isnull=True) | Q(started_at__lte=F("detected_at")),
                name="incident_started_before_detected",
                violation_error_message="Impact cannot start after the incident was detected.",
            ),
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True) | Q(acknowledged_at__gte=F("detected_at")),
                name="incident_acknowledged_after_detected",
                violation_error_message="An incident cannot be acknowledged before it was detected.",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=MITIGATED_OR_LATER)
                | (Q(mitigated_at__isnull=False) & Q(mitigated_at__gte=F("detected_at"))),
                name="incident_mitigated_stamped",
                violation_error_message="A mitigated incident needs a mitigation time after detection.",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=RESOLVED_OR_LATER)
                | (Q(resolved_at__isnull=False) & Q(resolved_at__gte=F("mitigated_at"))),
                name="incident_resolved_stamped",
                violation_error_message="A resolved incident needs a resolution time after mitigation.",
            ),
            models.CheckConstraint(
                condition=(Q(status__in=ENDED) & Q(closed_at__isnull=False) & Q(closed_at__gte=F("detected_at")))
                | (~Q(status__in=ENDED) & Q(closed_at__isnull=True)),
                name="incident_closed_stamped",
                violation_error_message="Closed and dismissed incidents, and only they, have a closing time.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=MITIGATED_OR_LATER) | Q(mitigated_at__isnull=True),
                name="incident_open_not_mitigated",
                violation_error_message="An incident that is still open cannot carry a mitigation time.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=RESOLVED_OR_LATER) | Q(resolved_at__isnull=True),
                name="incident_unresolved_not_resolved",
                violation_error_message="An incident that is not resolved cannot carry a resolution time.",
            ),
            models.CheckConstraint(
                condition=Q(duplicate_of__isnull=True) | Q(status="dismissed"),
                name="incident_duplicate_is_dismissed",
                violation_error_message="Only a dismissed incident can be a duplicate of another.",
            ),
        ]

    def __str__(self):
        return f"{self.reference} {self.title}"

    @property
    def reference(self):
        return f"INC-{self.number}"

    @property
    def is_open(self):
        return self.status in self.OPEN_STATUSES

    def allowed_transitions(self):
        return sorted(self.TRANSITIONS[self.status], key=list(self.Status).index)


class OpenIncident(Incident):
    """The 3 a.m. view: only open incidents, worst severity first, then oldest."""

    class Meta:
        proxy = True
        verbose_name = "open incident"


class RoleAssignment(models.Model):
    class Role(models.TextChoices):
        COMMANDER = "commander", "Incident commander"
        TECHNICAL_LEAD = "technical_lead", "Technical lead"
        COMMUNICATIONS_LEAD = "communications_lead", "Communications lead"
        SCRIBE = "scribe", "Scribe"
        EXPERT = "expert", "Subject-matter expert"

    SINGLE_HOLDER_ROLES = (Role.COMMANDER, Role.TECHNICAL_LEAD, Role.COMMUNICATIONS_LEAD, Role.SCRIBE)

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="role_assignments")
    role = models.CharField(max_length=30, choices=Role.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="incident_roles")
    assigned_at = models.DateTimeField(default=timezone.now)
    relieved_at = models.DateTimeField(null=True, blank=True)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["assigned_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "role"],
                condition=Q(relieved_at__isnull=True) & ~Q(role="expert"),
                name="role_one_active_holder",
                violation_error_message="This role already has an active holder.",
            ),
            models.UniqueConstraint(
                fields=["incident", "role", "user"],
                condition=Q(relieved_at__isnull=True),
                name="role_user_active_once",
                violation_error_message="This person already holds this role.",
            ),
            models.CheckConstraint(
                condition=Q(relieved_at__isnull=True) | Q(relieved_at__gte=F("assigned_at")),
                name="role_relieved_after_assigned",
            ),
        ]

    def __str__(self):
        return f"{self.get_role_display()}: {self.user}"

    @property
    def is_active(self):
        return self.relieved_at is None


class TimelineEvent(models.Model):
    """Append-only history of an incident. System events are written only by the services."""

    class Kind(models.TextChoices):
        DECLARED = "declared", "Declared"
        STATUS_CHANGED = "status_changed", "Status changed"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        SEVERITY_CHANGED = "severity_changed", "Severity changed"
        ROLE_ASSIGNED = "role_assigned", "Role assigned"
        ROLE_RELIEVED = "role_relieved", "Role relieved"
        FIELDS_CHANGED = "fields_changed", "Details changed"
        NOTE = "note", "Note"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    occurred_at = models.DateTimeField(default=timezone.now, help_text="When it happened; notes may be dated in the past.")
    recorded_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Empty for events recorded by the system.",
    )
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="Before and after values of the change.")

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["incident", "occurred_at"], name="timeline_incident_time_idx")]

    def __str__(self):
        return f"{self.get_kind_display()} at {self.occurred_at:%Y-%m-%d %H:%M}"

    @property
    def is_system(self):
        return self.kind != self.Kind.NOTE

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("Timeline events are append-only.")
        super().save(*args, **kwargs)

import re

from django.conf import settings
from django.db import models
from django.db.models import Expression, F, Q
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
    contact = models.CharField(
        max_length=200, blank=True, help_text="E-mail, chat channel or pager of the owning team."
    )
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
    # Communications policy: the status page always shows a published external update; these say
    # who else hears of it, and whether a second person must approve it first.
    update_approval_required = models.BooleanField(
        default=False, help_text="External updates need another person's approval before publishing."
    )
    notify_email_subscribers = models.BooleanField(
        default=True, help_text="Published external updates are e-mailed to subscribers."
    )
    notify_direct_outreach = models.BooleanField(
        default=False, help_text="Published external updates also go to the affected customers' direct-outreach list."
    )
    escalation_contact = models.EmailField(
        blank=True, help_text="Told when an incident is not acknowledged in time (its commander otherwise)."
    )
    colour = models.CharField(max_length=7, default="#6c757d", help_text="Hex colour used in lists.")
    outreach_tiers = models.ManyToManyField(
        "AccountTier",
        blank=True,
        related_name="+",
        help_text="Direct outreach is suggested for incidents of this severity, to accounts in these tiers "
        "(none chosen: not suggested).",
    )
    # Slack policy (comms/slack): which incidents get a channel of their own, and which are announced.
    slack_channel = models.BooleanField(
        "open a Slack channel",
        default=True,
        help_text="Incidents of this severity get a Slack channel of their own (when Slack is connected).",
    )
    slack_announce = models.BooleanField(
        "announce in Slack",
        default=False,
        help_text="Declarations, status and severity changes, handovers and published internal updates are "
        "posted to the announcement channel (SLACK_ANNOUNCE_CHANNEL). Restricted incidents never are.",
    )

    class Meta:
        ordering = ["level"]
        verbose_name_plural = "severities"

    def __str__(self):
        return f"{self.label} {self.name}"


class ReferenceCounter(models.Model):
    """Hands out gapless incident numbers: the row is locked and bumped in the declaring transaction."""

    name = models.CharField(max_length=50, primary_key=True)
    last_value = models.PositiveIntegerField()

    def __str__(self):
        return f"{self.name}: {self.last_value}"


# Status groups, at module level so the constraints in Incident.Meta can name them.
OPEN_STATUSES = ("detected", "triaging", "responding", "mitigated")
MITIGATED_OR_LATER = ("mitigated", "resolved", "postmortem", "closed")
RESOLVED_OR_LATER = ("resolved", "postmortem", "closed")
ENDED = ("closed", "dismissed")


VIEW_ALL_RESTRICTED = "incidents.view_restricted_incident"


class IncidentQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=Incident.OPEN_STATUSES)

    def visible_to(self, user):
        """The one visibility rule: every surface that lists or fetches incidents goes through it.

        A restricted incident is visible to its role holders (past and present), its explicit
        members, and holders of the global permission. EXISTS subqueries, not a join and DISTINCT,
        so a page of 50 still walks the (status, date) indexes.
        """
        condition = visibility_condition(user)
        return self if condition is None else self.filter(condition)


def sees_all_incidents(user):
    return user.is_active and (user.is_superuser or user.has_perm(VIEW_ALL_RESTRICTED))


def visibility_condition(user, path=""):
    """The rule as a condition on the incident at `path` ("" for the row itself, "recurrence_of", …).

    None when the user sees every incident. Evaluated per row with the row's own columns, so it costs
    nothing extra for unrestricted incidents (98% of them) and never reads the whole table.
    """
    if sees_all_incidents(user):
        return None
    prefix = f"{path}__" if path else ""
    public = Q(**{f"{prefix}is_restricted": False})
    if not user.is_authenticated or not user.is_active:
        return public
    return public | HeldRoleOrMember(F(path or "pk"), user.pk)


class HeldRoleOrMember(Expression):
    """True when the user holds or held a role on the incident, or is one of its explicit members.

    The same SQL as ``Exists(RoleAssignment.objects.filter(incident=OuterRef(...), user=user)) |
    Exists(IncidentMember…)``, written once as text: building and compiling those two subqueries took
    about 1 ms of Python on every list request of a user without the global permission, more than
    PostgreSQL spends on the page. The subqueries' tables carry aliases of their own, so the incident's
    column always names the outer row, even when the outer query reads one of these tables. On PostgreSQL
    each subquery ends in OFFSET 0 (see as_postgresql): the same rows, another plan.
    """

    conditional = True
    output_field = models.BooleanField()

    def __init__(self, incident_pk, user_id):
        super().__init__()
        self.incident_pk = incident_pk
        self.user_id = user_id

    def get_source_expressions(self):
        return [self.incident_pk]

    def set_source_expressions(self, exprs):
        (self.incident_pk,) = exprs

    def as_sql(self, compiler, connection, fence=""):
        pk_sql, pk_params = compiler.compile(self.incident_pk)
        quote = connection.ops.quote_name
        exists = []
        for model, alias in ((RoleAssignment, "visible_role"), (IncidentMember, "visible_member")):
            row, incident, user = (
                quote(alias),
                quote(model._meta.get_field("incident").column),
                quote(model._meta.get_field("user").column),
            )
            exists.append(
                f"EXISTS(SELECT 1 FROM {quote(model._meta.db_table)} {row} "
                f"WHERE {row}.{incident} = {pk_sql} AND {row}.{user} = %s{fence})"
            )
        return f"({exists[0]} OR {exists[1]})", (*pk_params, self.user_id, *pk_params, self.user_id)

    def as_postgresql(self, compiler, connection):
        # OFFSET 0 keeps each EXISTS a probe of the (user, incident) index for the restricted rows met: without it
        # PostgreSQL planned a hash of all the person's role assignments on every page, sized for a walk of the
        # whole table; for a responder with 4,000 of them the page query took 1.8 ms instead of 0.8 ms.
        return self.as_sql(compiler, connection, fence=" OFFSET 0")


def visible_incident_rows(queryset, user, field="incident"):
    """Rows that belong to an incident (alerts, payloads, …): those without one, or whose incident the user may see."""
    condition = visibility_condition(user, field)
    if condition is None:
        return queryset
    return queryset.filter(Q(**{f"{field}__isnull": True}) | condition)


def links_hidden_from(user, incidents):
    """Pks of the incidents these ones link to (recurrence of, duplicate of) that the user may not see.

    Uses the linked rows already fetched with select_related: no query unless a link is restricted.
    """
    linked = {
        link.pk: link
        for incident in incidents
        for link in (incident.recurrence_of, incident.duplicate_of)
        if link is not None and link.is_restricted
    }
    if not linked or sees_all_incidents(user):
        return set()
    return set(linked) - set(Incident.objects.visible_to(user).filter(pk__in=linked).values_list("pk", flat=True))


def references_hidden_from(user, events):
    """References (INC-1042) in these timeline events' data that name incidents the user may not see.

    A link to another incident (recurrence, duplicate) is recorded by reference; one query for a page
    of events finds the ones to leave out for this user.
    """
    numbers = set()

    def collect(value):
        if isinstance(value, str):
            match = re.fullmatch(r"INC-([0-9]{1,9})", value)  # free text (a title) can look like one too
            if match:
                numbers.add(int(match[1]))
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    for event in events:
        collect(event.data)
    if not numbers:
        return set()
    if sees_all_incidents(user):
        return set()
    seen = set(Incident.objects.visible_to(user).filter(number__in=numbers).values_list("number", flat=True))
    return {f"INC-{number}" for number in numbers - seen}


def references_redacted(value, hidden):
    """`value` (timeline data) with the hidden references replaced by None."""
    if not hidden:
        return value
    if isinstance(value, str):
        return None if value in hidden else value
    if isinstance(value, dict):
        return {key: references_redacted(item, hidden) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [references_redacted(item, hidden) for item in value]
    return value


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
    # What the public is told (status page, feeds, subscriber e-mails and webhooks), set by
    # communications (comms): the title and reference above stay internal.
    public_title = models.CharField(
        max_length=200,
        blank=True,
        editable=False,
        help_text="The title the public sees. Empty: a neutral one from the public services it affects.",
    )
    public_impact = models.TextField(
        blank=True, editable=False, help_text="What customers notice, in their words (shown publicly)."
    )
    severity = models.ForeignKey(Severity, on_delete=models.PROTECT, related_name="incidents")
    services = models.ManyToManyField(Service, blank=True, related_name="incidents")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DETECTED, editable=False)

    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When impact began, if known; may precede detection."
    )
    detected_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True, editable=False)
    mitigated_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    is_restricted = models.BooleanField(
        "restricted",
        default=False,
        help_text="Visible only to its role holders, its members and people allowed to see all restricted incidents.",
    )
    recurrence_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="recurrences",
        help_text="An earlier incident that this one repeats.",
    )
    duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="duplicates",
        editable=False,
    )
    # Kept in step with the active commander role by the role service, so lists can show and filter it.
    commander = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="commanded_incidents",
        editable=False,
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_activity_at = models.DateTimeField(
        default=timezone.now, editable=False, help_text="Time of the latest timeline event."
    )
    # Bumped by every change; an edit based on an older version is refused instead of overwriting.
    version = models.PositiveIntegerField(default=1, editable=False)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-detected_at", "-id"]
        permissions = [("view_restricted_incident", "Can view all restricted incidents")]
        indexes = [
            models.Index(fields=["-detected_at", "-id"], name="incident_detected_idx"),
            models.Index(fields=["status", "-detected_at"], name="incident_status_detected_idx"),
            # The API and the admin sort by these; without an index every page sorts the whole table.
            models.Index(fields=["-last_activity_at", "-id"], name="incident_activity_idx"),
            models.Index(fields=["-updated_at", "-id"], name="incident_updated_idx"),
            # The open-incidents list (worst severity, then oldest) reads its page's ids from this alone.
            models.Index(
                fields=["severity", "detected_at", "id"],
                name="incident_open_idx",
                condition=Q(status__in=OPEN_STATUSES),
            ),
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

    def participants(self):
        """Everyone who may see it while restricted: role holders (past and present) and members."""
        from django.contrib.auth import get_user_model

        return (
            get_user_model()
            .objects.filter(Q(incident_roles__incident=self) | Q(incident_memberships__incident=self))
            .distinct()
        )

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
        # The visibility rule asks "does this user hold a role on this incident?" for every row.
        indexes = [models.Index(fields=["user", "incident"], name="role_user_incident_idx")]
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


class IncidentMember(models.Model):
    """Someone added explicitly to a restricted incident (role holders see it anyway)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="incident_memberships")
    added_at = models.DateTimeField(default=timezone.now)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["added_at", "id"]
        indexes = [models.Index(fields=["user", "incident"], name="member_user_incident_idx")]
        constraints = [models.UniqueConstraint(fields=["incident", "user"], name="incident_member_once")]

    def __str__(self):
        return f"{self.user} on {self.incident_id}"


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
        RESTRICTION_CHANGED = "restriction_changed", "Restriction changed"
        MEMBER_ADDED = "member_added", "Member added"
        MEMBER_REMOVED = "member_removed", "Member removed"
        ALERT = "alert", "Alert"  # written by alert ingestion: alerts firing, resolving, acknowledged
        # Written by the other apps through timeline_event_record.
        REVIEW = "review", "Post-incident review"
        ACTION_ITEM = "action_item", "Action item"
        UPDATE_PUBLISHED = "update_published", "Update published"
        CUSTOMER_REPORT = "customer_report", "Customer report"
        MERGED = "merged", "Duplicate merged"  # incident_merge, on the duplicate's and the original's timelines

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    occurred_at = models.DateTimeField(
        default=timezone.now, help_text="When it happened; notes may be dated in the past."
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty for events recorded by the system.",
    )
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="Before and after values of the change.")

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["incident", "occurred_at"], name="timeline_incident_time_idx")]

    def __str__(self):
        return f"{self.get_kind_display()} at {self.occurred_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("Timeline events are append-only.")
        super().save(*args, **kwargs)

    @property
    def is_system(self):
        return self.kind != self.Kind.NOTE


class ApiKey(models.Model):
    """A machine's credential. It acts as its user: that user's Django permissions apply.

    The key is shown once when it is created; only a lookup prefix and a SHA-256 of the secret are kept.
    """

    name = models.CharField(max_length=100, help_text="What uses this key, e.g. “Alertmanager prod”.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_secret = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self):
        return self.revoked_at is None


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key on an API POST: the first response, replayed to retries for 24 hours.

    Unique per scope (an API key, or a user for browser sessions), so two clients never share keys; the
    unique constraint makes two concurrent requests with one key run the operation once.
    """

    scope = models.CharField(max_length=40, help_text="key-<API key id> or user-<user id>.")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the method, path and JSON body.")
    created_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField()
    headers = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_key_once")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self):
        return f"{self.scope}: {self.key[:40]}"


# ---- Alert ingestion (issue 3) ----------------------------------------------------------------


class Integration(models.Model):
    """A monitoring tool allowed to post alerts, with the key it authenticates with.

    The key is shown once when it is created; only a lookup prefix and a SHA-256 of the key are kept.
    """

    class Kind(models.TextChoices):
        ALERTMANAGER = "alertmanager", "Prometheus Alertmanager"
        GRAFANA = "grafana", "Grafana alerting"
        PAGERDUTY = "pagerduty", "PagerDuty Events API v2"

    class OpenMode(models.TextChoices):
        TRIAGE = "triage", "Wait for triage (incident stays Detected until a responder takes it)"
        RESPOND = "respond", "Open directly (incident moves straight to Responding)"

    class ResolveTo(models.TextChoices):
        MITIGATED = "mitigated", "Mitigated (a person confirms the resolution)"
        RESOLVED = "resolved", "Resolved"

    KEY_PREFIX_LENGTH = 8

    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=100, unique=True, help_text="What sends here, e.g. “Alertmanager prod”.")
    key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    services = models.ManyToManyField(
        Service, blank=True, related_name="integrations", help_text="Services every incident from here affects."
    )
    severity_overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='Sender severity value → level, on top of the defaults, e.g. {"disaster": 1, "notice": 4}.',
    )
    open_mode = models.CharField(max_length=10, choices=OpenMode.choices, default=OpenMode.TRIAGE)
    resolve_to = models.CharField(
        max_length=10,
        choices=ResolveTo.choices,
        default=ResolveTo.RESOLVED,
        help_text="Where the incident goes when every alert of its group has resolved.",
    )
    signing_secret = models.CharField(
        max_length=200,
        blank=True,
        help_text="Grafana only: the HMAC secret of the contact point; posts must then carry a valid "
        "X-Grafana-Alerting-Signature.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class AlertPayload(models.Model):
    """Every body posted to an ingestion endpoint, exactly as received: for audit and replay.

    A log, written on every post: its links carry no database constraint, so that recording a post
    never waits for a lock a person or another post holds on the incident or the group (deleting
    through Django still empties the links).
    """

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed (server error; the sender retries)"

    integration = models.ForeignKey(
        Integration,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="payloads",
        db_constraint=False,
        help_text="Empty when the credential did not match any integration.",
    )
    kind = models.CharField(max_length=20, choices=Integration.Kind.choices)
    received_at = models.DateTimeField(default=timezone.now)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    headers = models.JSONField(default=dict, blank=True, help_text="The headers worth keeping (never credentials).")
    body = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    group = models.ForeignKey(
        "AlertGroup", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["-received_at", "-id"], name="alertpayload_received_idx"),
            models.Index(fields=["integration", "-received_at"], name="alertpayload_integration_idx"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} post #{self.pk}"


class AlertGroup(models.Model):
    """The sender's group (Alertmanager/Grafana groupKey, PagerDuty dedup_key), scoped by integration.

    Its row is locked while a post for the group is applied, so concurrent posts queue instead of
    opening an incident each. `incident` is the group's latest incident, open or not.
    """

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="groups")
    key_hash = models.CharField(max_length=64, editable=False, help_text="SHA-256 of the group key.")
    group_key = models.TextField()
    labels = models.JSONField(default=dict, blank=True)
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="alert_groups"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["integration", "key_hash"], name="alertgroup_unique_key"),
        ]

    def __str__(self):
        return self.group_key[:80]


class Alert(models.Model):
    """One firing episode of one alert: (group, fingerprint, starts_at). A re-fire is a new row."""

    class Status(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    group = models.ForeignKey(AlertGroup, on_delete=models.CASCADE, related_name="alerts")
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    fingerprint = models.CharField(max_length=255)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.FIRING)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True, help_text="Acknowledged by the sender.")
    severity_level = models.PositiveSmallIntegerField(help_text="The level the sender's severity maps to.")
    summary = models.CharField(max_length=1024, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    annotations = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Links and values the sender added.")
    last_payload = models.ForeignKey(AlertPayload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "fingerprint", "starts_at"], name="alert_unique_episode"),
        ]
        indexes = [
            models.Index(fields=["group", "status"], name="alert_group_status_idx"),
            models.Index(fields=["incident", "status"], name="alert_incident_status_idx"),
        ]

    def __str__(self):
        return self.summary or self.labels.get("alertname") or self.fingerprint


# ---- Customer reports (issue 6) ---------------------------------------------------------------


class CustomerReport(models.Model):
    """What a customer told support or a feedback tool, linked to an incident (or not yet: unlinked)."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        CHAT = "chat", "Chat"
        PHONE = "phone", "Phone"
        SOCIAL = "social", "Social media"
        SUPPORT_TICKET = "support_ticket", "Support ticket"
        OTHER = "other", "Other"

    class Sentiment(models.TextChoices):
        NEGATIVE = "negative", "Negative"
        NEUTRAL = "neutral", "Neutral"
        POSITIVE = "positive", "Positive"

    incident = models.ForeignKey(
        Incident,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="customer_reports",
        help_text="Empty until someone attaches the report to an incident.",
    )
    customer_id = models.CharField(
        "customer or account id", max_length=200, help_text="The customer's or account's id in your systems."
    )
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.OTHER)
    text = models.TextField(blank=True, help_text="What the customer said.")
    sentiment = models.CharField(max_length=10, choices=Sentiment.choices, blank=True, help_text="Empty if unknown.")
    revenue_at_risk = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="Optional: revenue this customer puts at risk."
    )
    currency = models.CharField(max_length=3, default="USD", help_text="ISO 4217 code of the revenue figure.")
    received_at = models.DateTimeField(default=timezone.now, help_text="When the customer reported it.")
    source_reference = models.CharField(
        max_length=200,
        blank=True,
        help_text="The sending tool's id for the report (ticket number); sending it again changes nothing.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The person, or the API key's user, who entered it.",
    )
    attached_at = models.DateTimeField(null=True, blank=True, editable=False)
    account = models.ForeignKey(
        "Account",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="customer_reports",
        help_text="The customer account, when the customer id is one of your accounts' external ids.",
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["incident", "received_at"], name="customerreport_incident_idx"),
            models.Index(fields=["-received_at", "-id"], name="customerreport_received_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "source_reference"],
                condition=~Q(source_reference=""),
                name="customerreport_unique_source_reference",
            ),
            models.CheckConstraint(
                condition=Q(revenue_at_risk__isnull=True) | Q(revenue_at_risk__gte=0),
                name="customerreport_revenue_not_negative",
                violation_error_message="Revenue at risk cannot be negative.",
            ),
        ]

    def __str__(self):
        return f"{self.customer_id} via {self.get_channel_display()} at {self.received_at:%Y-%m-%d %H:%M}"


# ---- Customer accounts: who uses which service, and what they are worth ----


class AccountTier(models.Model):
    """A customer tier (enterprise, business, self-serve…): data, not code; rank 1 matters most."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    rank = models.PositiveSmallIntegerField(default=100, help_text="Ordering in reports: 1 first.")

    class Meta:
        ordering = ["rank", "name"]

    def __str__(self):
        return self.name


class Account(models.Model):
    """A customer account, kept in sync from the CRM (CSV import or PUT /api/v1/accounts/{external_id}/)."""

    external_id = models.CharField(
        max_length=200, unique=True, help_text="The account's id in your CRM; imports and the API match on it."
    )
    name = models.CharField(max_length=200)
    tier = models.ForeignKey(AccountTier, on_delete=models.PROTECT, related_name="accounts")
    annual_contract_value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="USD", help_text="ISO 4217 code of the contract value.")
    services = models.ManyToManyField(Service, blank=True, related_name="accounts", help_text="The services it uses.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "external_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(annual_contract_value__gte=0),
                name="account_contract_value_not_negative",
                violation_error_message="The annual contract value cannot be negative.",
            ),
        ]

    def __str__(self):
        return self.name


class AccountContact(models.Model):
    """A person at a customer account; only those opted in to incident e-mail are written to."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField()
    role = models.CharField(max_length=100, blank=True, help_text="E.g. technical contact, account owner.")
    incident_emails = models.BooleanField("incident e-mails", default=False, help_text="Opted in to incident e-mail.")

    class Meta:
        ordering = ["account", "email"]
        constraints = [models.UniqueConstraint(fields=["account", "email"], name="accountcontact_once_per_account")]

    def __str__(self):
        return f"{self.name} <{self.email}>" if self.name else self.email


# The daily metric roll-ups (issue 14) live in their own module; imported here so that Django sees them.
from .rollup_models import MetricsRollup, MetricsRollupDay, MetricsRollupState  # noqa: E402, F401

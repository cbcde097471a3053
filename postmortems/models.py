from django.conf import settings
from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from incidents.models import Incident

# ---- Post-incident reviews (templates, sections, contributing factors, reviewers) ----

# The sections of a review, in the order they are written and shown: (field name, heading).
REVIEW_SECTIONS = (
    ("summary", "Summary"),
    ("customer_impact", "Customer impact"),
    ("timeline", "Timeline"),
    ("root_cause", "Root cause analysis"),
    ("contributing_factors", "Contributing factors"),
    ("what_went_well", "What went well"),
    ("what_went_badly", "What went badly"),
    ("lessons_learned", "Lessons learned"),
)
REVIEW_SECTION_FIELDS = tuple(name for name, _label in REVIEW_SECTIONS)


class ReviewTemplate(models.Model):
    """The starting text of each section (guidance for the author); administrators edit it in the admin."""

    name = models.CharField(max_length=100, unique=True)
    is_default = models.BooleanField(default=False, help_text="Used when a review is started without choosing one.")
    summary = models.TextField(blank=True)
    customer_impact = models.TextField(blank=True)
    timeline = models.TextField(blank=True)
    root_cause = models.TextField("root cause analysis", blank=True)
    contributing_factors = models.TextField(blank=True)
    what_went_well = models.TextField(blank=True)
    what_went_badly = models.TextField(blank=True)
    lessons_learned = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        verbose_name = "review template"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="reviewtemplate_one_default",
                violation_error_message="Only one template can be the default: untick the current default first.",
            )
        ]

    def __str__(self):
        return self.name


class Review(models.Model):
    """The blameless post-incident review of one incident."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        PUBLISHED = "published", "Published"

    # Goes with its incident, like its timeline (incidents are never deleted in the product; tests re-seed).
    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="review")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    template = models.ForeignKey(
        ReviewTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="authored_reviews",
        help_text="Who started the review. Authors cannot approve their own review.",
    )
    # What the incident record said when the review was started (severity, services, key times and
    # durations, roles and holders): written by the system, read-only, refreshable.
    facts = models.TextField(blank=True)
    summary = models.TextField(blank=True)
    customer_impact = models.TextField(blank=True)
    timeline = models.TextField(blank=True)
    root_cause = models.TextField("root cause analysis", blank=True)
    contributing_factors = models.TextField(
        blank=True, help_text="The narrative; each factor is also recorded below with its category."
    )
    what_went_well = models.TextField(blank=True)
    what_went_badly = models.TextField(blank=True)
    lessons_learned = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "post-incident review"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "-published_at"], name="review_status_published_idx")]

    def __str__(self):
        return f"Review of {self.incident.reference}"

    def sections(self):
        """[(field, heading, text)] in reading order."""
        return [(name, label, getattr(self, name)) for name, label in REVIEW_SECTIONS]


class ContributingFactor(models.Model):
    """One systemic cause of an incident (several per review), categorised so that patterns show."""

    class Category(models.TextChoices):
        CODE_CHANGE = "code_change", "Code change"
        CONFIGURATION = "configuration", "Configuration"
        CAPACITY = "capacity", "Capacity"
        DEPENDENCY = "dependency", "Dependency"
        PROCESS = "process", "Process"
        MONITORING_GAP = "monitoring_gap", "Monitoring gap"
        OTHER = "other", "Other"

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="factors")
    category = models.CharField(max_length=20, choices=Category.choices)
    description = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["category"], name="factor_category_idx")]

    def __str__(self):
        return f"{self.get_category_display()}: {self.description[:60]}"


class ReviewReviewer(models.Model):
    """A person named to review; publishing needs every named reviewer's approval."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="reviewers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_assignments")
    added_at = models.DateTimeField(default=timezone.now)
    approved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["added_at", "id"]
        verbose_name = "reviewer"
        constraints = [models.UniqueConstraint(fields=["review", "user"], name="review_reviewer_once")]

    def __str__(self):
        return str(self.user)

    @property
    def approved(self):
        return self.approved_at is not None


# ---- Action items and their reminders ----


class ActionItem(models.Model):
    """Something to do so that an incident does not happen again (or hurts less): tracked to completion."""

    class Priority(models.TextChoices):
        HIGH = "high", "High"
        MEDIUM = "medium", "Medium"
        LOW = "low", "Low"

    class Kind(models.TextChoices):
        PREVENT = "prevent", "Prevent"
        MITIGATE = "mitigate", "Mitigate"
        DETECT = "detect", "Detect"
        PROCESS = "process", "Process"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        IN_PROGRESS = "in_progress", "In progress"
        DONE = "done", "Done"
        WONT_DO = "wont_do", "Won't do"

    # Still to do (reminded, counted as overdue) and finished (completion time stamped).
    ACTIVE_STATUSES = (Status.OPEN, Status.IN_PROGRESS)
    FINISHED_STATUSES = (Status.DONE, Status.WONT_DO)

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="action_items")
    review = models.ForeignKey(
        Review, null=True, blank=True, on_delete=models.SET_NULL, related_name="action_items"
    )
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="action_items"
    )
    due_date = models.DateField(null=True, blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.MEDIUM)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PREVENT)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    wont_do_reason = models.TextField("reason for won't do", blank=True)
    tracker_url = models.URLField(
        "tracker URL",
        max_length=500,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Optional link to the ticket in an external tracker (http or https).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When it was marked done or won't do."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The reminder sweep and the overdue filter: active items by due date.
            models.Index(fields=["status", "due_date"], name="actionitem_status_due_idx"),
            models.Index(fields=["owner", "status"], name="actionitem_owner_status_idx"),
            models.Index(fields=["-created_at", "-id"], name="actionitem_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="wont_do") | ~Q(wont_do_reason=""),
                name="actionitem_wont_do_has_reason",
                violation_error_message="Say why this action item won't be done.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=("done", "wont_do"), completed_at__isnull=False)
                | Q(status__in=("open", "in_progress"), completed_at__isnull=True),
                name="actionitem_completed_stamped",
                violation_error_message="Finished action items have a completion time; others have none.",
            ),
        ]

    def __str__(self):
        return self.title

    @property
    def is_active(self):
        return self.status in self.ACTIVE_STATUSES

    def is_overdue(self, today=None):
        today = today or timezone.localdate()
        return self.is_active and self.due_date is not None and self.due_date < today


class ActionItemReminder(models.Model):
    """One reminder e-mail: at most one per item, day and kind (the unique key is the claim).

    The sweep inserts the row (a duplicate insert does nothing), a send task moves it pending → sending
    with a conditional update, sends, and marks it sent. A claim left in "sending" (a worker died) is
    retried by the next sweep of the same day once it is older than ACTION_ITEM_REMINDER_RETRY_MINUTES.
    """

    class Kind(models.TextChoices):
        DUE_SOON = "due_soon", "Due soon (to the owner)"
        OVERDUE = "overdue", "Overdue (to the owner)"
        ESCALATION = "escalation", "Escalation (to the incident commander)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"

    item = models.ForeignKey(ActionItem, on_delete=models.CASCADE, related_name="reminders")
    date = models.DateField(help_text="The day this reminder is for.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    recipient = models.CharField(max_length=254, blank=True, help_text="The address it was sent to.")
    skipped_reason = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-date", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["item", "date", "kind"], name="actionitemreminder_once_a_day"),
        ]
        indexes = [models.Index(fields=["date", "status"], name="actionitemreminder_date_idx")]

    def __str__(self):
        return f"{self.get_kind_display()} on {self.date}"

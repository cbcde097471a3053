"""What the Slack app keeps: channels per incident, people, events received, calls to make."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from incidents.models import Incident, TimelineEvent


class SlackChannel(models.Model):
    """The Slack channel of an incident: created once, its header message updated in place."""

    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="slack_channel")
    channel_id = models.CharField(max_length=32, blank=True, help_text="Empty until Slack created it.")
    name = models.CharField(max_length=80)
    is_private = models.BooleanField(default=False)
    header_ts = models.CharField(
        max_length=32, blank=True, help_text="Timestamp of the pinned header message (its id in Slack)."
    )
    invited = models.JSONField(default=list, blank=True, help_text="Slack user ids invited so far.")
    topic = models.CharField(
        max_length=250, blank=True, help_text="The topic last set (set again only when it changes)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "Slack channel"
        constraints = [
            models.UniqueConstraint(fields=["channel_id"], condition=~Q(channel_id=""), name="slackchannel_unique_id")
        ]

    def __str__(self):
        return f"#{self.name}"


class SlackUser(models.Model):
    """A Slack user's e-mail, as Slack last told us (users.info / users.lookupByEmail)."""

    slack_id = models.CharField(max_length=32, unique=True)
    email = models.EmailField(blank=True, db_index=True)
    name = models.CharField(max_length=200, blank=True)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "Slack user"

    def __str__(self):
        return f"{self.name or self.slack_id} <{self.email or '?'}>"


class SlackEvent(models.Model):
    """An event or submission received from Slack, kept once per Slack id: retries change nothing."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        IGNORED = "ignored", "Ignored"
        REFUSED = "refused", "Refused (no account or permission)"
        FAILED = "failed", "Failed"

    event_id = models.CharField(max_length=100, unique=True, help_text="Slack's event_id (or the modal's view id).")
    kind = models.CharField(max_length=50)
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    result = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Slack event"
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["state", "received_at"], name="slackevent_state_idx")]

    def __str__(self):
        return f"{self.kind} {self.event_id}"


class SlackNote(models.Model):
    """A Slack message that became a timeline note: one note per message, however often it is pinned."""

    channel_id = models.CharField(max_length=32)
    message_ts = models.CharField(max_length=32)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="+")
    timeline_event = models.ForeignKey(TimelineEvent, on_delete=models.CASCADE, related_name="+")
    author_slack_id = models.CharField(max_length=32, blank=True)
    captured_by_slack_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "Slack note"
        constraints = [models.UniqueConstraint(fields=["channel_id", "message_ts"], name="slacknote_one_per_message")]

    def __str__(self):
        return f"{self.channel_id}/{self.message_ts}"


class SlackCall(models.Model):
    """Work for the Slack Web API, done by Celery: a row first, so Slack being down loses nothing."""

    class Kind(models.TextChoices):
        CHANNEL_OPEN = "channel_open", "Open the incident's channel"
        CHANNEL_SYNC = "channel_sync", "Update the channel (header, topic, invitations)"
        ANNOUNCE = "announce", "Announce"
        EPHEMERAL = "ephemeral", "Tell one person"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting"
        SENDING = "sending", "Sending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(
        max_length=100, null=True, blank=True, unique=True, help_text="Makes a repeated request create nothing."
    )
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Slack call"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="slackcall_due_idx")]
        constraints = [
            # One waiting channel update per incident: it reads the incident's latest state when it runs.
            models.UniqueConstraint(
                fields=["incident"],
                condition=Q(kind="channel_sync", state="pending"),
                name="slackcall_one_pending_sync",
            )
        ]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}"

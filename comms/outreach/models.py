from django.conf import settings
from django.db import models

from incidents.models import Account, AccountContact, AccountTier, Incident


class Outreach(models.Model):
    """A message to the opted-in contacts of the accounts an incident affects (narrowed by tier or by
    a hand-picked list), with the account's name and affected services filled in for each."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved", "Approved"
        SENT = "sent", "Sent"

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="outreaches")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    subject = models.CharField(max_length=200)
    body = models.TextField(
        help_text="Markdown. Placeholders: {{ account.name }}, {{ account.services }} (the affected services it "
        "uses), and the update placeholders such as {{ next_update_at }}."
    )
    tiers = models.ManyToManyField(
        AccountTier, blank=True, related_name="+", help_text="Only accounts in these tiers (none chosen: every tier)."
    )
    accounts = models.ManyToManyField(
        Account, blank=True, related_name="+", help_text="Only these accounts (none chosen: every affected account)."
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    sent_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "direct outreach"
        verbose_name_plural = "direct outreach"

    def __str__(self):
        return f"{self.incident.reference}: {self.subject}"


class OutreachDelivery(models.Model):
    """One outreach message to one contact: claimed by a worker before sending, never sent twice."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    outreach = models.ForeignKey(Outreach, on_delete=models.CASCADE, related_name="deliveries")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="outreach_deliveries")
    contact = models.ForeignKey(
        AccountContact, null=True, blank=True, on_delete=models.SET_NULL, related_name="outreach_deliveries"
    )
    address = models.EmailField(help_text="Kept as sent, even if the contact changes later.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "outreach deliveries"
        constraints = [
            models.UniqueConstraint(fields=["outreach", "address"], name="outreach_delivery_once_per_address"),
            models.CheckConstraint(
                condition=~models.Q(state="sent") | models.Q(sent_at__isnull=False), name="outreach_delivery_sent_stamped"
            ),
        ]
        indexes = [models.Index(fields=["state", "created_at"], name="outreach_delivery_state_idx")]

    def __str__(self):
        return f"{self.address} ({self.get_state_display()})"

from django.conf import settings
from django.db import models

from incidents.models import Incident

# ---- Post-incident reviews (templates, sections, contributing factors, reviewers) ----


class Review(models.Model):
    """The blameless post-incident review of one incident."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        PUBLISHED = "published", "Published"

    incident = models.OneToOneField(Incident, on_delete=models.PROTECT, related_name="review")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "post-incident review"

    def __str__(self):
        return f"Review of {self.incident.reference}"


# ---- Action items and their reminders ----

# Outbound webhooks for integrators (issue 5, "webhooks").
#
# Endpoints carry a signing secret and may be pointed at internal systems, so managing them is for
# administrators: no group is given any webhook permission here. Superusers manage them; give the
# model permissions (and "Can allow webhooks to loopback, link-local and private addresses") to
# named people under Users if others should.
#
# Beat: a sweep re-enqueues deliveries that are due (broker down at emission, retries whose
# message was lost) and frees rows left "sending" by a worker that died.
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import comms.models

EVENTS_HELP = "The event types this endpoint receives."
STATES = [("pending", "Pending"), ("sending", "Sending"), ("delivered", "Delivered"), ("failed", "Failed")]
SWEEP_NAME = "comms: outbound webhooks, re-enqueue due deliveries"
SWEEP_TASK = "comms.tasks.webhook_deliveries_sweep"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every, _created = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SWEEP_NAME,
        defaults={
            "task": SWEEP_TASK,
            "interval": every,
            "description": "Sends webhook deliveries that are due: retries after backoff, and deliveries "
            "whose first message never reached the broker.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": django.utils.timezone.now()})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("comms", "0002_subscribers"),
        ("incidents", "0010_dashboard"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name="WebhookEndpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "url",
                    models.URLField(
                        help_text="Receives a POST per event: http or https.", max_length=500, verbose_name="URL"
                    ),
                ),
                ("description", models.CharField(blank=True, max_length=200)),
                ("events", models.JSONField(default=list, help_text=EVENTS_HELP)),
                (
                    "secret",
                    models.CharField(
                        default=comms.models.webhook_secret_generate,
                        help_text="Signing secret (Standard Webhooks): the receiver verifies webhook-signature with it.",
                        max_length=100,
                    ),
                ),
                ("is_active", models.BooleanField(default=True, verbose_name="active")),
                (
                    "allow_private_destination",
                    models.BooleanField(
                        default=False,
                        help_text="Allow loopback, link-local and private addresses (internal receivers). Administrators only.",
                    ),
                ),
                (
                    "include_restricted",
                    models.BooleanField(
                        default=False,
                        help_text="Also send events about restricted incidents. Only people who see all restricted incidents may set it.",
                        verbose_name="include restricted incidents",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["url", "id"],
                "permissions": [
                    (
                        "allow_private_webhook_destination",
                        "Can allow webhooks to loopback, link-local and private addresses",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="WebhookDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="comms.webhookendpoint",
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhook_deliveries",
                        to="incidents.incident",
                    ),
                ),
                (
                    "event_id",
                    models.CharField(help_text="The webhook-id header: the same on every retry.", max_length=100),
                ),
                ("event_type", models.CharField(max_length=50)),
                ("body", models.TextField(help_text="The exact JSON body sent (signed as is).")),
                ("state", models.CharField(choices=STATES, default="pending", max_length=10)),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("response_status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("response_body", models.TextField(blank=True, help_text="The start of the last response's body.")),
                ("error", models.TextField(blank=True)),
                ("next_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "verbose_name_plural": "webhook deliveries",
                "indexes": [
                    models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due_idx"),
                    models.Index(fields=["-created_at", "-id"], name="webhook_delivery_created_idx"),
                    models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("endpoint", "event_id"), name="webhook_delivery_once_per_endpoint")
                ],
            },
        ),
        migrations.RunPython(schedule, unschedule),
    ]

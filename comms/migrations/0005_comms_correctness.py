"""Issue 12: internal stakeholder lists, review and resolution notices, and an index for the delivery sweep."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The seeded templates said "{{ services }} are" whatever the number of services.
SEEDED_WORDING = [
    ("{{ services }} are recovering", "{{ services_are }} recovering"),
    ("{{ services }} are working normally again", "{{ services_are }} working normally again"),
]


def reword_seeded_templates(apps, schema_editor, backwards=False):
    UpdateTemplate = apps.get_model("comms", "UpdateTemplate")
    for old, new in SEEDED_WORDING:
        if backwards:
            old, new = new, old
        for template in UpdateTemplate.objects.filter(body__contains=old):
            template.body = template.body.replace(old, new)
            template.save(update_fields=["body"])


def reword_back(apps, schema_editor):
    reword_seeded_templates(apps, schema_editor, backwards=True)


def notices_window(apps, schema_editor):
    """Notices sent so far announced the window as it was scheduled."""
    MaintenanceNotice = apps.get_model("comms", "MaintenanceNotice")
    for notice in MaintenanceNotice.objects.filter(window_start__isnull=True).select_related("maintenance"):
        notice.window_start = notice.maintenance.scheduled_for
        notice.save(update_fields=["window_start"])


class Migration(migrations.Migration):
    dependencies = [
        ("comms", "0004_status_page"),
        ("incidents", "0008_comms_policy_and_event_kinds"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="StakeholderList",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                (
                    "emails",
                    models.TextField(blank=True, help_text="Other addresses, one per line (or comma-separated)."),
                ),
                ("is_active", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "min_severity",
                    models.ForeignKey(
                        blank=True,
                        help_text="Hear of incidents this severe or worse (Sev2: Sev1 and Sev2). Empty: every severity.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="incidents.severity",
                    ),
                ),
                (
                    "services",
                    models.ManyToManyField(
                        blank=True,
                        help_text="None chosen: every service.",
                        related_name="stakeholder_lists",
                        to="incidents.service",
                    ),
                ),
                (
                    "users",
                    models.ManyToManyField(blank=True, related_name="stakeholder_lists", to=settings.AUTH_USER_MODEL),
                ),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.AlterField(
            model_name="incidentnudge",
            name="kind",
            field=models.CharField(
                choices=[
                    ("update_due", "Update due (communications lead)"),
                    ("update_overdue", "Update overdue by an interval (commander)"),
                    ("ack_escalation", "Not acknowledged in time"),
                    ("review_requested", "Update waiting for review (approvers)"),
                    ("resolution_drafted", "Resolved internally: resolving update drafted (communications lead)"),
                ],
                max_length=20,
            ),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(fields=["claimed_at"], name="delivery_claimed_idx"),
        ),
        migrations.RunPython(reword_seeded_templates, reword_back),
        # Maintenance notices: rescheduled, started and completed too; unique per window; attempts.
        migrations.RemoveConstraint(model_name="maintenancenotice", name="maintenance_notice_once_per_subscriber"),
        migrations.AddField(
            model_name="maintenancenotice", name="attempts", field=models.PositiveSmallIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="maintenancenotice",
            name="window_start",
            field=models.DateTimeField(blank=True, help_text="The start of the window it announced.", null=True),
        ),
        migrations.RunPython(notices_window, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="maintenancenotice",
            name="kind",
            field=models.CharField(
                choices=[
                    ("upcoming", "Upcoming maintenance"),
                    ("rescheduled", "Maintenance rescheduled"),
                    ("started", "Maintenance started"),
                    ("completed", "Maintenance completed"),
                ],
                default="upcoming",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="maintenancenotice",
            constraint=models.UniqueConstraint(
                fields=("maintenance", "subscriber", "kind", "window_start"), name="maintenance_notice_once_per_window"
            ),
        ),
    ]

# Direct outreach to the contacts of affected accounts (issue 16): the message, one delivery per
# contact, permissions for the groups, and the beat sweep that hands unsent deliveries to a worker.
import django.db.models.deletion
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

GROUP_PERMISSIONS = {
    "Communications": ["view_outreach", "add_outreach", "change_outreach", "view_outreachdelivery"],
    "Responders": ["view_outreach", "view_outreachdelivery"],
    "Viewers": ["view_outreach"],
}
PERIODIC_TASKS = [("comms: re-enqueue stuck outreach deliveries", "comms.tasks.outreach_deliveries_sweep", 60)]


def grant(apps, schema_editor):
    app_config = apps.get_app_config("comms")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUP_PERMISSIONS.items():
        group = Group.objects.filter(name=name).first()
        if group is not None:
            group.permissions.add(*Permission.objects.filter(content_type__app_label="comms", codename__in=codenames))


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds in PERIODIC_TASKS:
        every, _created = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": every})


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _task, _seconds in PERIODIC_TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("comms", "0007_status_perf"),
        ("incidents", "0018_outreach_policy"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Outreach",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[("draft", "Draft"), ("in_review", "In review"), ("approved", "Approved"), ("sent", "Sent")],
                        default="draft",
                        max_length=10,
                    ),
                ),
                ("subject", models.CharField(max_length=200)),
                (
                    "body",
                    models.TextField(
                        help_text="Markdown. Placeholders: {{ account.name }}, {{ account.services }} (the affected services it "
                        "uses), and the update placeholders such as {{ next_update_at }}."
                    ),
                ),
                ("submitted_at", models.DateTimeField(blank=True, null=True)),
                ("approved_at", models.DateTimeField(blank=True, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "accounts",
                    models.ManyToManyField(
                        blank=True,
                        help_text="Only these accounts (none chosen: every affected account).",
                        related_name="+",
                        to="incidents.account",
                    ),
                ),
                (
                    "approved_by",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "author",
                    models.ForeignKey(
                        null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="outreaches", to="incidents.incident"
                    ),
                ),
                (
                    "sent_by",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "submitted_by",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "tiers",
                    models.ManyToManyField(
                        blank=True,
                        help_text="Only accounts in these tiers (none chosen: every tier).",
                        related_name="+",
                        to="incidents.accounttier",
                    ),
                ),
            ],
            options={
                "verbose_name": "direct outreach",
                "verbose_name_plural": "direct outreach",
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="OutreachDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("address", models.EmailField(help_text="Kept as sent, even if the contact changes later.", max_length=254)),
                (
                    "state",
                    models.CharField(
                        choices=[("pending", "Pending"), ("sending", "Sending"), ("sent", "Sent"), ("failed", "Failed")],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("claimed_at", models.DateTimeField(blank=True, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="outreach_deliveries", to="incidents.account"
                    ),
                ),
                (
                    "contact",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                        related_name="outreach_deliveries", to="incidents.accountcontact",
                    ),
                ),
                (
                    "outreach",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="deliveries", to="comms.outreach"
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "outreach deliveries",
                "ordering": ["-created_at", "-id"],
                "indexes": [models.Index(fields=["state", "created_at"], name="outreach_delivery_state_idx")],
                "constraints": [
                    models.UniqueConstraint(fields=("outreach", "address"), name="outreach_delivery_once_per_address"),
                    models.CheckConstraint(
                        condition=models.Q(models.Q(("state", "sent"), _negated=True), ("sent_at__isnull", False), _connector="OR"),
                        name="outreach_delivery_sent_stamped",
                    ),
                ],
            },
        ),
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, unschedule),
    ]

# Action items and their reminders; permissions for the groups; the hourly reminder sweep in the
# beat schedule (django-celery-beat), which administrators see and change under Periodic tasks.

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

GROUP_PERMISSIONS = {
    "Responders": ["view_actionitem", "add_actionitem", "change_actionitem", "view_actionitemreminder"],
    "Communications": ["view_actionitem"],
    "Viewers": ["view_actionitem"],
}
SWEEP_TASK = "postmortems.tasks.action_item_reminders_sweep"
SWEEP_NAME = "Action-item reminders"


def grant(apps, schema_editor):
    app_config = apps.get_app_config("postmortems")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="postmortems", codename__in=codenames))


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=SWEEP_NAME,
        defaults={
            "task": SWEEP_TASK,
            "interval": every_hour,
            "description": "E-mails owners of action items due soon or overdue (at most once per item, day "
            "and kind) and escalates long-overdue items to the incident commander.",
        },
    )
    # Tell a running beat that the schedule changed (what saving in the admin does).
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": django.utils.timezone.now()})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("postmortems", "0001_initial"),
        ("incidents", "0010_dashboard"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ActionItem",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
                ("description", models.TextField(blank=True)),
                ("due_date", models.DateField(blank=True, null=True)),
                (
                    "priority",
                    models.CharField(
                        choices=[("high", "High"), ("medium", "Medium"), ("low", "Low")], default="medium", max_length=10
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("prevent", "Prevent"),
                            ("mitigate", "Mitigate"),
                            ("detect", "Detect"),
                            ("process", "Process"),
                        ],
                        default="prevent",
                        max_length=10,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("open", "Open"),
                            ("in_progress", "In progress"),
                            ("done", "Done"),
                            ("wont_do", "Won't do"),
                        ],
                        default="open",
                        max_length=20,
                    ),
                ),
                ("wont_do_reason", models.TextField(blank=True, verbose_name="reason for won't do")),
                (
                    "tracker_url",
                    models.URLField(
                        blank=True,
                        help_text="Optional link to the ticket in an external tracker (http or https).",
                        max_length=500,
                        validators=[django.core.validators.URLValidator(schemes=["http", "https"])],
                        verbose_name="tracker URL",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "completed_at",
                    models.DateTimeField(
                        blank=True, editable=False, help_text="When it was marked done or won't do.", null=True
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="action_items",
                        to="incidents.incident",
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="action_items",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "review",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="action_items",
                        to="postmortems.review",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(fields=["status", "due_date"], name="actionitem_status_due_idx"),
                    models.Index(fields=["owner", "status"], name="actionitem_owner_status_idx"),
                    models.Index(fields=["-created_at", "-id"], name="actionitem_created_idx"),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("status", "wont_do"), _negated=True)
                        | models.Q(("wont_do_reason", ""), _negated=True),
                        name="actionitem_wont_do_has_reason",
                        violation_error_message="Say why this action item won't be done.",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("completed_at__isnull", False), ("status__in", ("done", "wont_do")))
                        | models.Q(("completed_at__isnull", True), ("status__in", ("open", "in_progress"))),
                        name="actionitem_completed_stamped",
                        violation_error_message="Finished action items have a completion time; others have none.",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="ActionItemReminder",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("date", models.DateField(help_text="The day this reminder is for.")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("due_soon", "Due soon (to the owner)"),
                            ("overdue", "Overdue (to the owner)"),
                            ("escalation", "Escalation (to the incident commander)"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("sending", "Sending"), ("sent", "Sent"), ("skipped", "Skipped")],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("recipient", models.CharField(blank=True, help_text="The address it was sent to.", max_length=254)),
                ("skipped_reason", models.CharField(blank=True, max_length=200)),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("claimed_at", models.DateTimeField(blank=True, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "item",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="reminders",
                        to="postmortems.actionitem",
                    ),
                ),
            ],
            options={
                "ordering": ["-date", "-id"],
                "indexes": [models.Index(fields=["date", "status"], name="actionitemreminder_date_idx")],
                "constraints": [
                    models.UniqueConstraint(fields=("item", "date", "kind"), name="actionitemreminder_once_a_day")
                ],
            },
        ),
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, unschedule),
    ]

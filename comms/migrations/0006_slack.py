# The Slack app (issue 13, comms/slack/): the channel of each incident, Slack users' e-mails, events
# received (one row per Slack event id: retries change nothing), notes captured from messages (one per
# message) and the outbox of Web API calls that Celery makes, retried with backoff.
#
# Beat: a sweep every minute sends calls that are due (backoff over, broker down when they were made)
# and hands events that never reached a worker to one.
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

SWEEP_NAME = "comms: Slack, send due calls and pending events"
SWEEP_TASK = "comms.tasks.slack_sweep"


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
            "description": "Makes the Slack Web API calls that are due (retries after backoff or Retry-After, "
            "calls whose first message never reached the broker) and processes events left pending.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": django.utils.timezone.now()})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("comms", "0005_comms_correctness"),
        ("incidents", "0016_slack_policy"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name="SlackUser",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slack_id", models.CharField(max_length=32, unique=True)),
                ("email", models.EmailField(blank=True, db_index=True, max_length=254)),
                ("name", models.CharField(blank=True, max_length=200)),
                ("fetched_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={"verbose_name": "Slack user"},
        ),
        migrations.CreateModel(
            name="SlackEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "event_id",
                    models.CharField(
                        help_text="Slack's event_id (or the modal's view id).", max_length=100, unique=True
                    ),
                ),
                ("kind", models.CharField(max_length=50)),
                (
                    "incident",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="incidents.incident",
                    ),
                ),
                ("payload", models.JSONField(blank=True, default=dict)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("done", "Done"),
                            ("ignored", "Ignored"),
                            ("refused", "Refused (no account or permission)"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("result", models.TextField(blank=True)),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("received_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("processed_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "verbose_name": "Slack event",
                "ordering": ["-received_at", "-id"],
                "indexes": [models.Index(fields=["state", "received_at"], name="slackevent_state_idx")],
            },
        ),
        migrations.CreateModel(
            name="SlackCall",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("channel_open", "Open the incident's channel"),
                            ("channel_sync", "Update the channel (header, topic, invitations)"),
                            ("announce", "Announce"),
                            ("ephemeral", "Tell one person"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "key",
                    models.CharField(
                        blank=True,
                        help_text="Makes a repeated request create nothing.",
                        max_length=100,
                        null=True,
                        unique=True,
                    ),
                ),
                ("payload", models.JSONField(blank=True, default=dict)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Waiting"),
                            ("sending", "Sending"),
                            ("done", "Done"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("done_at", models.DateTimeField(blank=True, null=True)),
                (
                    "incident",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="incidents.incident",
                    ),
                ),
            ],
            options={
                "verbose_name": "Slack call",
                "ordering": ["-created_at", "-id"],
                "indexes": [models.Index(fields=["state", "next_attempt_at"], name="slackcall_due_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("kind", "channel_sync"), ("state", "pending")),
                        fields=("incident",),
                        name="slackcall_one_pending_sync",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SlackChannel",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("channel_id", models.CharField(blank=True, help_text="Empty until Slack created it.", max_length=32)),
                ("name", models.CharField(max_length=80)),
                ("is_private", models.BooleanField(default=False)),
                (
                    "header_ts",
                    models.CharField(
                        blank=True,
                        help_text="Timestamp of the pinned header message (its id in Slack).",
                        max_length=32,
                    ),
                ),
                ("invited", models.JSONField(blank=True, default=list, help_text="Slack user ids invited so far.")),
                (
                    "topic",
                    models.CharField(
                        blank=True, help_text="The topic last set (set again only when it changes).", max_length=250
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "incident",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="slack_channel",
                        to="incidents.incident",
                    ),
                ),
            ],
            options={
                "verbose_name": "Slack channel",
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("channel_id", ""), _negated=True),
                        fields=("channel_id",),
                        name="slackchannel_unique_id",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SlackNote",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("channel_id", models.CharField(max_length=32)),
                ("message_ts", models.CharField(max_length=32)),
                ("author_slack_id", models.CharField(blank=True, max_length=32)),
                ("captured_by_slack_id", models.CharField(blank=True, max_length=32)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="incidents.incident"
                    ),
                ),
                (
                    "timeline_event",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="incidents.timelineevent"
                    ),
                ),
            ],
            options={
                "verbose_name": "Slack note",
                "constraints": [
                    models.UniqueConstraint(fields=("channel_id", "message_ts"), name="slacknote_one_per_message")
                ],
            },
        ),
        migrations.RunPython(schedule, unschedule),
    ]

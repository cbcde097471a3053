# Subscribers, direct outreach, deliveries and incident nudges (issue 5, "deliveries").
# Also: their permissions for the Communications group, and the beat schedule for the sweeps.
import django.db.models.deletion
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

CHANNELS = [("email", "E-mail"), ("webhook", "Webhook"), ("slack", "Slack-compatible incoming webhook")]
STATES = [("pending", "Pending"), ("sending", "Sending"), ("sent", "Sent"), ("failed", "Failed")]

# Communications manage who hears of updates and watch deliveries; Responders and Viewers read them.
GROUP_PERMISSIONS = {
    "Communications": [
        "view_subscriber", "add_subscriber", "change_subscriber", "delete_subscriber",
        "view_outreachcontact", "add_outreachcontact", "change_outreachcontact", "delete_outreachcontact",
        "view_delivery", "view_incidentnudge",
    ],
    "Responders": ["view_delivery", "view_incidentnudge"],
    "Viewers": ["view_delivery"],
}

# Beat (django-celery-beat's DatabaseScheduler): administrators can change these in the admin.
PERIODIC_TASKS = [
    ("comms: re-enqueue stuck deliveries", "comms.tasks.deliveries_sweep", 60),
    ("comms: update-cadence nudges", "comms.tasks.update_cadence_sweep", 60),
    ("comms: acknowledgement escalation", "comms.tasks.ack_escalation_sweep", 60),
]


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
        ("comms", "0001_initial"),
        ("incidents", "0010_dashboard"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [
        migrations.CreateModel(
            name="Subscriber",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("channel", models.CharField(choices=CHANNELS, default="email", max_length=10)),
                ("email", models.EmailField(blank=True, max_length=254)),
                ("url", models.URLField(blank=True, max_length=500)),
                (
                    "source",
                    models.CharField(
                        choices=[
                            ("public", "Public subscription form"),
                            ("staff", "Added by staff"),
                            ("api", "Added through the API"),
                        ],
                        default="staff",
                        max_length=10,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "confirmation_sent_at",
                    models.DateTimeField(
                        blank=True, editable=False, help_text="Only the latest confirmation link works.", null=True
                    ),
                ),
                ("confirmed_at", models.DateTimeField(blank=True, null=True)),
                ("unsubscribed_at", models.DateTimeField(blank=True, null=True)),
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
                        related_name="subscribers",
                        to="incidents.service",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [models.Index(fields=["-created_at", "-id"], name="subscriber_created_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("channel", "email")),
                        fields=("email",),
                        name="subscriber_email_once",
                        violation_error_message="This address is already subscribed.",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("channel", "email"), _negated=True),
                        fields=("channel", "url"),
                        name="subscriber_url_once",
                        violation_error_message="This URL is already subscribed.",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("channel", "email"), models.Q(("email", ""), _negated=True)),
                            models.Q(models.Q(("channel", "email"), _negated=True), models.Q(("url", ""), _negated=True)),
                            _connector="OR",
                        ),
                        name="subscriber_has_address",
                        violation_error_message="An e-mail subscriber needs an address; a webhook one a URL.",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="OutreachContact",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(help_text="Customer or account name.", max_length=200)),
                ("email", models.EmailField(max_length=254)),
                ("is_active", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "services",
                    models.ManyToManyField(
                        blank=True,
                        help_text="None chosen: every service.",
                        related_name="outreach_contacts",
                        to="incidents.service",
                    ),
                ),
            ],
            options={
                "ordering": ["name", "email"],
                "constraints": [models.UniqueConstraint(fields=("name", "email"), name="outreach_contact_once")],
            },
        ),
        migrations.CreateModel(
            name="Delivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "audience",
                    models.CharField(
                        choices=[
                            ("subscriber", "Subscriber"),
                            ("outreach", "Direct outreach"),
                            ("stakeholder", "Stakeholder (role holder)"),
                        ],
                        max_length=12,
                    ),
                ),
                ("channel", models.CharField(choices=CHANNELS, max_length=10)),
                ("address", models.CharField(max_length=500)),
                ("state", models.CharField(choices=STATES, default="pending", max_length=10)),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "enqueued_at",
                    models.DateTimeField(blank=True, help_text="Handed to the broker (empty: not yet).", null=True),
                ),
                ("claimed_at", models.DateTimeField(blank=True, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "update",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="deliveries", to="comms.update"
                    ),
                ),
                (
                    "subscriber",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="deliveries",
                        to="comms.subscriber",
                    ),
                ),
                (
                    "outreach_contact",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="deliveries",
                        to="comms.outreachcontact",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "deliveries",
                "ordering": ["id"],
                "indexes": [
                    models.Index(fields=["update", "state"], name="delivery_update_state_idx"),
                    models.Index(fields=["state", "created_at"], name="delivery_state_created_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("update", "channel", "address"), name="delivery_once_per_recipient"),
                    models.CheckConstraint(
                        condition=models.Q(models.Q(("state", "sent"), _negated=True), ("sent_at__isnull", False), _connector="OR"),
                        name="delivery_sent_stamped",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="IncidentNudge",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("update_due", "Update due (communications lead)"),
                            ("update_overdue", "Update overdue by an interval (commander)"),
                            ("ack_escalation", "Not acknowledged in time"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "window",
                    models.DateTimeField(
                        help_text="The due time this reminder is for (acknowledgement: the detection time)."
                    ),
                ),
                ("recipients", models.JSONField(blank=True, default=list)),
                ("state", models.CharField(choices=STATES, default="pending", max_length=10)),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("claimed_at", models.DateTimeField(blank=True, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="nudges", to="incidents.incident"
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "constraints": [
                    models.UniqueConstraint(fields=("incident", "kind", "window"), name="nudge_once_per_window"),
                    models.UniqueConstraint(
                        condition=models.Q(("kind", "ack_escalation")),
                        fields=("incident",),
                        name="nudge_ack_escalation_once",
                    ),
                ],
            },
        ),
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, unschedule),
    ]

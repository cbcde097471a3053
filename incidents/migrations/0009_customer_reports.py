# Customer reports (issue 6): the model, and its permissions for the groups.
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

# Responders and Communications enter and attach customer reports; Viewers read them.
GROUP_PERMISSIONS = {
    "Responders": ["view_customerreport", "add_customerreport", "change_customerreport"],
    "Communications": ["view_customerreport", "add_customerreport", "change_customerreport"],
    "Viewers": ["view_customerreport"],
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("incidents")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="incidents", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0008_comms_policy_and_event_kinds"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="CustomerReport",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "customer_id",
                    models.CharField(
                        help_text="The customer's or account's id in your systems.",
                        max_length=200,
                        verbose_name="customer or account id",
                    ),
                ),
                (
                    "channel",
                    models.CharField(
                        choices=[
                            ("email", "E-mail"),
                            ("chat", "Chat"),
                            ("phone", "Phone"),
                            ("social", "Social media"),
                            ("support_ticket", "Support ticket"),
                            ("other", "Other"),
                        ],
                        default="other",
                        max_length=20,
                    ),
                ),
                ("text", models.TextField(blank=True, help_text="What the customer said.")),
                (
                    "sentiment",
                    models.CharField(
                        blank=True,
                        choices=[("negative", "Negative"), ("neutral", "Neutral"), ("positive", "Positive")],
                        help_text="Empty if unknown.",
                        max_length=10,
                    ),
                ),
                (
                    "revenue_at_risk",
                    models.DecimalField(
                        blank=True,
                        decimal_places=2,
                        help_text="Optional: revenue this customer puts at risk.",
                        max_digits=14,
                        null=True,
                    ),
                ),
                (
                    "currency",
                    models.CharField(default="USD", help_text="ISO 4217 code of the revenue figure.", max_length=3),
                ),
                (
                    "received_at",
                    models.DateTimeField(default=django.utils.timezone.now, help_text="When the customer reported it."),
                ),
                (
                    "source_reference",
                    models.CharField(
                        blank=True,
                        help_text="The sending tool's id for the report (ticket number); sending it again changes nothing.",
                        max_length=200,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("attached_at", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
                        help_text="The person, or the API key's user, who entered it.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        blank=True,
                        help_text="Empty until someone attaches the report to an incident.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="customer_reports",
                        to="incidents.incident",
                    ),
                ),
            ],
            options={
                "ordering": ["-received_at", "-id"],
                "indexes": [
                    models.Index(fields=["incident", "received_at"], name="customerreport_incident_idx"),
                    models.Index(fields=["-received_at", "-id"], name="customerreport_received_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("source_reference", ""), _negated=True),
                        fields=("created_by", "source_reference"),
                        name="customerreport_unique_source_reference",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("revenue_at_risk__isnull", True), ("revenue_at_risk__gte", 0), _connector="OR"
                        ),
                        name="customerreport_revenue_not_negative",
                        violation_error_message="Revenue at risk cannot be negative.",
                    ),
                ],
            },
        ),
        migrations.RunPython(grant, migrations.RunPython.noop),
    ]

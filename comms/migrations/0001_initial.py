# Updates and templates (issue 5, "updates"): the models, the groups' permissions and a few templates.

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

AUDIENCES = [("internal", "Internal (stakeholders, executives)"), ("external", "External (customers)")]
PUBLIC_STATUSES = [
    ("investigating", "Investigating"),
    ("identified", "Identified"),
    ("monitoring", "Monitoring"),
    ("resolved", "Resolved"),
    ("postmortem", "Postmortem"),
]
COMPONENT_STATUSES = [
    ("operational", "Operational"),
    ("degraded_performance", "Degraded performance"),
    ("partial_outage", "Partial outage"),
    ("major_outage", "Major outage"),
    ("under_maintenance", "Under maintenance"),
]

# Communications own what customers read: the whole workflow, approval and external publishing, and
# the templates. They keep only view_incident on incidents (no lifecycle changes). Responders draft and
# submit any update and publish internal ones; approval and external publishing stay with Communications.
UPDATE_EDIT = ["view_update", "add_update", "change_update"]
COMPONENT_EDIT = ["view_updatecomponent", "add_updatecomponent", "change_updatecomponent", "delete_updatecomponent"]
GROUP_PERMISSIONS = {
    "Communications": [
        *UPDATE_EDIT,
        *COMPONENT_EDIT,
        "approve_update",
        "publish_external_update",
        "view_updatetemplate",
        "add_updatetemplate",
        "change_updatetemplate",
    ],
    "Responders": [*UPDATE_EDIT, *COMPONENT_EDIT, "view_updatetemplate"],
    "Viewers": ["view_update", "view_updatecomponent", "view_updatetemplate"],
}

# name, audience, public status, title, body
TEMPLATES = [
    (
        "Investigating",
        "external",
        "investigating",
        "Investigating problems with {{ services }}",
        "We are investigating reports of problems with {{ services }} since {{ started_at }}.\n\n"
        "We will post the next update by {{ next_update_at }}. Follow along at {{ status_page_url }}.",
    ),
    (
        "Identified",
        "external",
        "identified",
        "Cause identified: {{ services }}",
        "We have identified the cause of the problems with {{ services }} and are working on a fix.\n\n"
        "Next update by {{ next_update_at }}.",
    ),
    (
        "Monitoring",
        "external",
        "monitoring",
        "Fix deployed, monitoring {{ services }}",
        "A fix is in place and {{ services }} are recovering. We are monitoring the results.\n\n"
        "Next update by {{ next_update_at }}.",
    ),
    (
        "Resolved",
        "external",
        "resolved",
        "Resolved: {{ services }}",
        "This incident has been resolved: {{ services }} are working normally again.\n\n"
        "We are sorry for the trouble. A summary will follow once our review is done.",
    ),
    (
        "Internal status update",
        "internal",
        "",
        "{{ incident.reference }} ({{ severity }}): {{ incident.status }}",
        "**{{ incident.reference }} — {{ incident.title }}**\n\n"
        "- Severity: {{ severity }}\n- Status: {{ incident.status }}\n- Impact since: {{ started_at }}\n"
        "- Services: {{ services }}\n\n**What we know:** …\n\n**What we are doing:** …\n\n"
        "Next update by {{ next_update_at }}.",
    ),
]


def grant_and_seed(apps, schema_editor):
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
    UpdateTemplate = apps.get_model("comms", "UpdateTemplate")
    for name, audience, public_status, title, body in TEMPLATES:
        UpdateTemplate.objects.get_or_create(
            name=name, defaults={"audience": audience, "public_status": public_status, "title": title, "body": body}
        )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("incidents", "0010_dashboard"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name="UpdateTemplate",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                ("audience", models.CharField(choices=AUDIENCES, max_length=10)),
                (
                    "public_status",
                    models.CharField(
                        blank=True,
                        choices=PUBLIC_STATUSES,
                        help_text="External updates: the public status this text suits (empty: any).",
                        max_length=20,
                    ),
                ),
                ("title", models.CharField(blank=True, max_length=200)),
                ("body", models.TextField(help_text="Markdown, with placeholders such as {{ incident.title }}.")),
                ("is_active", models.BooleanField(default=True, help_text="Offered when drafting.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "severity",
                    models.ForeignKey(
                        blank=True,
                        help_text="Empty: any severity.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="update_templates",
                        to="incidents.severity",
                    ),
                ),
            ],
            options={"ordering": ["audience", "public_status", "name"]},
        ),
        migrations.CreateModel(
            name="Update",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("audience", models.CharField(choices=AUDIENCES, max_length=10)),
                ("public_status", models.CharField(blank=True, choices=PUBLIC_STATUSES, max_length=20)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("draft", "Draft"),
                            ("in_review", "In review"),
                            ("approved", "Approved"),
                            ("published", "Published"),
                        ],
                        default="draft",
                        max_length=20,
                    ),
                ),
                ("title", models.CharField(blank=True, max_length=200)),
                ("body", models.TextField(help_text="Markdown.")),
                (
                    "body_html",
                    models.TextField(blank=True, editable=False, help_text="The body rendered and sanitised."),
                ),
                ("submitted_at", models.DateTimeField(blank=True, null=True)),
                ("approved_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("published_at", models.DateTimeField(blank=True, null=True)),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="updates", to="incidents.incident"
                    ),
                ),
                (
                    "template",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="updates",
                        to="comms.updatetemplate",
                    ),
                ),
                (
                    "corrects",
                    models.ForeignKey(
                        blank=True,
                        help_text="The published update this one corrects (the original stays as it was).",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="corrections",
                        to="comms.update",
                    ),
                ),
                *(
                    (
                        name,
                        models.ForeignKey(
                            blank=True,
                            null=True,
                            on_delete=django.db.models.deletion.SET_NULL,
                            related_name="+",
                            to=settings.AUTH_USER_MODEL,
                        ),
                    )
                    for name in ("author", "submitted_by", "approved_by", "published_by")
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("approve_update", "Can approve updates written by someone else"),
                    ("publish_external_update", "Can publish external updates"),
                ],
                "indexes": [
                    models.Index(fields=["incident", "status", "-published_at"], name="update_incident_published_idx"),
                    models.Index(fields=["-created_at", "-id"], name="update_created_idx"),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("status", "published"), _negated=True),
                            ("published_at__isnull", False),
                            _connector="OR",
                        ),
                        name="update_published_stamped",
                        violation_error_message="A published update needs its publication time.",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("audience", "internal"), models.Q(("public_status", ""), _negated=True), _connector="OR"
                        ),
                        name="update_external_has_public_status",
                        violation_error_message="An external update needs a public status.",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="UpdateComponent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("status", models.CharField(choices=COMPONENT_STATUSES, max_length=30)),
                (
                    "service",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to="incidents.service"
                    ),
                ),
                (
                    "update",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="components", to="comms.update"
                    ),
                ),
            ],
            options={
                "ordering": ["service__name", "id"],
                "constraints": [
                    models.UniqueConstraint(fields=("update", "service"), name="update_component_once"),
                ],
            },
        ),
        migrations.RunPython(grant_and_seed, migrations.RunPython.noop),
    ]

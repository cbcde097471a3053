from django.contrib.auth.management import create_permissions
from django.db import migrations

SEVERITIES = [
    # level, name, definition, expected response, ack target, update interval (minutes), review required, colour
    (
        1,
        "Critical",
        "Major system down, most users affected.",
        "All hands, executive comms, immediate action.",
        5,
        30,
        True,
        "#b00020",
    ),
    (
        2,
        "High",
        "Significant degradation, many users affected.",
        "Rapid response, active management.",
        15,
        60,
        True,
        "#e65100",
    ),
    (
        3,
        "Medium",
        "Partial impact, a subset of users affected.",
        "Prioritized investigation.",
        60,
        240,
        False,
        "#b8860b",
    ),
    (4, "Low", "Minor issue, limited impact.", "Normal work queues.", 240, 1440, False, "#1565c0"),
]

# What each group may do in the incidents app; later apps add their own models to these groups.
GROUP_PERMISSIONS = {
    "Responders": [
        "view_incident",
        "add_incident",
        "change_incident",
        "view_openincident",
        "add_openincident",
        "change_openincident",
        "view_timelineevent",
        "add_timelineevent",
        "view_roleassignment",
        "add_roleassignment",
        "change_roleassignment",
        "view_service",
        "view_servicegroup",
        "view_severity",
    ],
    "Communications": [
        "view_incident",
        "view_openincident",
        "view_timelineevent",
        "view_roleassignment",
        "view_service",
        "view_servicegroup",
        "view_severity",
    ],
    "Viewers": [
        "view_incident",
        "view_openincident",
        "view_timelineevent",
        "view_roleassignment",
        "view_service",
        "view_servicegroup",
        "view_severity",
    ],
}


def seed(apps, schema_editor):
    Severity = apps.get_model("incidents", "Severity")
    for level, name, definition, response, ack, interval, review, colour in SEVERITIES:
        Severity.objects.get_or_create(
            level=level,
            defaults=dict(
                name=name,
                label=f"SEV{level}",
                definition=definition,
                expected_response=response,
                ack_target_minutes=ack,
                update_interval_minutes=interval,
                review_required=review,
                colour=colour,
            ),
        )

    # Permissions are normally created after all migrations; the groups need them now.
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
        ("incidents", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]

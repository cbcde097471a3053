# The incident page and lists (issue 15): the "merged" timeline kind for incident_merge.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("incidents", "0012_hardening")]

    operations = [
        # lists
        migrations.AlterField(
            model_name="timelineevent",
            name="kind",
            field=models.CharField(
                choices=[
                    ("declared", "Declared"),
                    ("status_changed", "Status changed"),
                    ("acknowledged", "Acknowledged"),
                    ("severity_changed", "Severity changed"),
                    ("role_assigned", "Role assigned"),
                    ("role_relieved", "Role relieved"),
                    ("fields_changed", "Details changed"),
                    ("note", "Note"),
                    ("restriction_changed", "Restriction changed"),
                    ("member_added", "Member added"),
                    ("member_removed", "Member removed"),
                    ("alert", "Alert"),
                    ("review", "Post-incident review"),
                    ("action_item", "Action item"),
                    ("update_published", "Update published"),
                    ("customer_report", "Customer report"),
                    ("merged", "Duplicate merged"),
                ],
                max_length=30,
            ),
        ),
    ]

"""The incident's public identity (issue 12): a public title and impact statement set by communications."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("incidents", "0014_metrics_rollups")]

    operations = [
        migrations.AddField(
            model_name="incident",
            name="public_title",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="The title the public sees. Empty: a neutral one from the public services it affects.",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="incident",
            name="public_impact",
            field=models.TextField(
                blank=True, editable=False, help_text="What customers notice, in their words (shown publicly)."
            ),
        ),
    ]

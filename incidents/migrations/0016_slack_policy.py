# Slack policy per severity (issue 13): which severities open a Slack channel per incident and which
# are announced in SLACK_ANNOUNCE_CHANNEL. Seeded: SEV1-SEV3 open a channel, SEV1 and SEV2 are announced.
from django.db import migrations, models


def seed(apps, schema_editor):
    Severity = apps.get_model("incidents", "Severity")
    Severity.objects.filter(level__gte=4).update(slack_channel=False)
    Severity.objects.filter(level__lte=2).update(slack_announce=True)


class Migration(migrations.Migration):
    dependencies = [("incidents", "0015_public_identity")]

    operations = [
        migrations.AddField(
            model_name="severity",
            name="slack_channel",
            field=models.BooleanField(
                default=True,
                help_text="Incidents of this severity get a Slack channel of their own (when Slack is connected).",
                verbose_name="open a Slack channel",
            ),
        ),
        migrations.AddField(
            model_name="severity",
            name="slack_announce",
            field=models.BooleanField(
                default=False,
                help_text="Declarations, status and severity changes, handovers and published internal updates "
                "are posted to the announcement channel (SLACK_ANNOUNCE_CHANNEL). Restricted incidents never are.",
                verbose_name="announce in Slack",
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]

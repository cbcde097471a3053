# Daily metric roll-ups (issue 14): see incidents/rollup_models.py and incidents/rollups.py.
from django.db import migrations, models
from django.utils import timezone


def mark_built_when_empty(apps, schema_editor):
    """A database without incidents has nothing to roll up: the roll-up is complete from the start.
    One that has incidents stays unbuilt (metrics computed from the incidents) until
    `manage.py metrics_rollup_rebuild` has run."""
    Incident = apps.get_model("incidents", "Incident")
    State = apps.get_model("incidents", "MetricsRollupState")
    if not Incident.objects.exists():
        State.objects.create(built_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("incidents", "0013_incident_page")]

    operations = [
        migrations.CreateModel(
            name="MetricsRollupDay",
            fields=[
                ("day", models.DateField(primary_key=True, serialize=False)),
                ("computed_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.CreateModel(
            name="MetricsRollupState",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("built_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="MetricsRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("severity_id", models.PositiveIntegerField(help_text="A severity's id; 0 for every severity.")),
                (
                    "service_id",
                    models.PositiveIntegerField(help_text="A service's id; 0 for every service (each incident once)."),
                ),
                ("restricted", models.BooleanField()),
                ("incidents", models.PositiveIntegerField(default=0)),
                ("recurrences", models.PositiveIntegerField(default=0)),
                ("reopened", models.PositiveIntegerField(default=0)),
                ("detected_by_alert", models.PositiveIntegerField(default=0)),
                ("impact_ended_us", models.BigIntegerField(default=0)),
                ("impact_open", models.PositiveIntegerField(default=0)),
                ("impact_open_start_us", models.BigIntegerField(default=0)),
                ("durations", models.JSONField(default=dict)),
                ("histograms", models.BinaryField(default=b"")),
            ],
            options={
                "indexes": [models.Index(fields=["service_id", "severity_id", "day"], name="metricsrollup_read_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "severity_id", "service_id", "restricted"), name="metricsrollup_unique_key"
                    )
                ],
            },
        ),
        migrations.RunPython(mark_built_when_empty, migrations.RunPython.noop),
    ]

# Issue 11: stored alert posts are pruned after INGEST_PAYLOAD_RETENTION_DAYS by an hourly beat task.
import django.utils.timezone
from django.db import migrations

PRUNE_TASK = "incidents.tasks.alert_payloads_prune"
PRUNE_NAME = "Prune stored alert posts"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=PRUNE_NAME,
        defaults={
            "task": PRUNE_TASK,
            "interval": every_hour,
            "description": "Deletes alert posts (Incidents → Alert payloads) received more than "
            "INGEST_PAYLOAD_RETENTION_DAYS days ago (30 by default), in batches.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": django.utils.timezone.now()})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=PRUNE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0011_api_idempotency"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]

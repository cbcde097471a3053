# The public status page's scheduled maintenance (issue 5, status-page work).
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

# Communications staff run maintenances (schedule, start, complete, notify); everyone who reads
# incidents may read them. Notices (one e-mail per subscriber) are read-only history.
GROUP_PERMISSIONS = {
    "Communications": [
        "add_scheduledmaintenance",
        "change_scheduledmaintenance",
        "view_scheduledmaintenance",
        "view_maintenanceupdate",
        "view_maintenancenotice",
    ],
    "Responders": ["view_scheduledmaintenance", "view_maintenanceupdate"],
    "Viewers": ["view_scheduledmaintenance", "view_maintenanceupdate"],
}
TASK_NAME = "Status page: scheduled maintenance (notices, automatic start and completion)"
TASK = "comms.tasks.maintenance_sweep"


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
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(name=TASK_NAME, defaults={"task": TASK, "interval": every})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("comms", "0003_webhooks"),
        ("incidents", "0010_dashboard"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ScheduledMaintenance',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(help_text='Public title, e.g. “Database upgrade”.', max_length=200)),
                ('body', models.TextField(help_text='Markdown, shown publicly: what happens and what customers will notice.')),
                ('body_html', models.TextField(blank=True, editable=False)),
                ('scheduled_for', models.DateTimeField(help_text='Start of the window.')),
                ('scheduled_until', models.DateTimeField(help_text='End of the window.')),
                ('status', models.CharField(choices=[('scheduled', 'Scheduled'), ('in_progress', 'In progress'), ('verifying', 'Verifying'), ('completed', 'Completed')], default='scheduled', editable=False, max_length=20)),
                ('impact', models.CharField(choices=[('maintenance', 'Maintenance'), ('none', 'None'), ('minor', 'Minor'), ('major', 'Major'), ('critical', 'Critical')], default='maintenance', max_length=20)),
                ('auto_transition', models.BooleanField(default=True, help_text='Start it at the beginning of the window and complete it at the end automatically.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('started_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('completed_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('announced_at', models.DateTimeField(blank=True, editable=False, help_text='When subscribers were told of it beforehand.', null=True)),
                ('services', models.ManyToManyField(help_text='Public services among these are shown as under maintenance while it is in progress.', related_name='maintenances', to='incidents.service')),
            ],
            options={
                'ordering': ['-scheduled_for', '-id'],
            },
        ),
        migrations.CreateModel(
            name='MaintenanceUpdate',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('scheduled', 'Scheduled'), ('in_progress', 'In progress'), ('verifying', 'Verifying'), ('completed', 'Completed')], max_length=20)),
                ('body', models.TextField(blank=True)),
                ('body_html', models.TextField(blank=True, editable=False)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('maintenance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='updates', to='comms.scheduledmaintenance')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='MaintenanceNotice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('upcoming', 'Upcoming maintenance')], default='upcoming', max_length=20)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('sent', 'Sent'), ('failed', 'Failed')], default='pending', max_length=10)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('claimed_at', models.DateTimeField(blank=True, help_text='When a worker took it for sending.', null=True)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('error', models.TextField(blank=True)),
                ('subscriber', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='maintenance_notices', to='comms.subscriber')),
                ('maintenance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='notices', to='comms.scheduledmaintenance')),
            ],
        ),
        migrations.AddIndex(
            model_name='scheduledmaintenance',
            index=models.Index(fields=['status', 'scheduled_for'], name='maintenance_status_for_idx'),
        ),
        migrations.AddConstraint(
            model_name='scheduledmaintenance',
            constraint=models.CheckConstraint(condition=models.Q(('scheduled_until__gt', models.F('scheduled_for'))), name='maintenance_window_ends_after_start', violation_error_message='The window must end after it starts.'),
        ),
        migrations.AddIndex(
            model_name='maintenancenotice',
            index=models.Index(fields=['maintenance', 'status'], name='maintenance_notice_status_idx'),
        ),
        migrations.AddConstraint(
            model_name='maintenancenotice',
            constraint=models.UniqueConstraint(fields=('maintenance', 'subscriber', 'kind'), name='maintenance_notice_once_per_subscriber'),
        ),
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, unschedule),
    ]

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("incidents", "0010_dashboard")]

    operations = [
        migrations.CreateModel(
            name="IdempotencyKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("scope", models.CharField(help_text="key-<API key id> or user-<user id>.", max_length=40)),
                ("key", models.CharField(max_length=255)),
                (
                    "request_hash",
                    models.CharField(help_text="SHA-256 of the method, path and JSON body.", max_length=64),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("status_code", models.PositiveSmallIntegerField()),
                ("headers", models.JSONField(blank=True, default=dict)),
                ("body", models.TextField(blank=True)),
            ],
            options={
                "indexes": [models.Index(fields=["created_at"], name="idempotency_created_idx")],
                "constraints": [models.UniqueConstraint(fields=("scope", "key"), name="idempotency_key_once")],
            },
        ),
    ]

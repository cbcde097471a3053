# The status page's public state version (comms/status/models.py): its cached documents are valid for one token.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("comms", "0006_slack")]

    operations = [
        migrations.CreateModel(
            name="StatusPageVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("token", models.CharField(max_length=32)),
                ("changed_at", models.DateTimeField()),
            ],
            options={"verbose_name": "status page version"},
        ),
    ]

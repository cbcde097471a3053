# Placeholder reserved for one engineer's change; filled with its operations (or removed if unused).
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("comms", "0004_status_page")]

    operations = []

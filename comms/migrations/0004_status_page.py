# Reserved for the status-page work; its owner fills in the operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("comms", "0003_webhooks")]
    operations = []

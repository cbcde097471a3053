# Reserved for the outbound-webhooks work; its owner fills in the operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("comms", "0002_subscribers")]
    operations = []

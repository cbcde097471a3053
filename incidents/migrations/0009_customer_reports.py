# Reserved for work in progress; its owner fills in the operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("incidents", "0008_comms_policy_and_event_kinds")]
    operations = []

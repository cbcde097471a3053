# Reserved for the action-items work; its owner fills in the operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("postmortems", "0001_initial")]
    operations = []

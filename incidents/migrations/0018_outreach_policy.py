# Severity policy for direct outreach (issue 16): which tiers' accounts are suggested for outreach.
from django.db import migrations, models

SUGGESTED = {1: ["enterprise", "business"], 2: ["enterprise"]}


def seed(apps, schema_editor):
    Severity = apps.get_model("incidents", "Severity")
    AccountTier = apps.get_model("incidents", "AccountTier")
    for level, slugs in SUGGESTED.items():
        severity = Severity.objects.filter(level=level).first()
        if severity is not None:
            severity.outreach_tiers.add(*AccountTier.objects.filter(slug__in=slugs))


class Migration(migrations.Migration):
    dependencies = [("incidents", "0017_accounts")]

    operations = [
        migrations.AddField(
            model_name="severity",
            name="outreach_tiers",
            field=models.ManyToManyField(
                blank=True,
                help_text="Direct outreach is suggested for incidents of this severity, to accounts in these tiers "
                "(none chosen: not suggested).",
                related_name="+",
                to="incidents.accounttier",
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]

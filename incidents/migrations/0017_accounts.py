# Customer accounts (issue 16): tiers (seeded), accounts, their contacts and services; customer
# reports name an account; permissions for the groups.
import django.db.models.deletion
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

TIERS = [("enterprise", "Enterprise", 1), ("business", "Business", 2), ("self-serve", "Self-serve", 3)]

# Communications keeps accounts in sync (CSV, API); responders and viewers read them.
GROUP_PERMISSIONS = {
    "Communications": [f"{verb}_{model}" for verb in ("view", "add", "change") for model in ("account", "accountcontact")]
    + ["view_accounttier"],
    "Responders": ["view_account", "view_accountcontact", "view_accounttier"],
    "Viewers": ["view_account", "view_accounttier"],
}


def seed(apps, schema_editor):
    AccountTier = apps.get_model("incidents", "AccountTier")
    for slug, name, rank in TIERS:
        AccountTier.objects.get_or_create(slug=slug, defaults={"name": name, "rank": rank})
    app_config = apps.get_app_config("incidents")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="incidents", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [("incidents", "0016_slack_policy")]

    operations = [
        migrations.CreateModel(
            name="AccountTier",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slug", models.SlugField(unique=True)),
                ("name", models.CharField(max_length=100)),
                ("rank", models.PositiveSmallIntegerField(default=100, help_text="Ordering in reports: 1 first.")),
            ],
            options={"ordering": ["rank", "name"]},
        ),
        migrations.CreateModel(
            name="Account",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "external_id",
                    models.CharField(
                        help_text="The account's id in your CRM; imports and the API match on it.",
                        max_length=200,
                        unique=True,
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("annual_contract_value", models.DecimalField(decimal_places=2, default=0, max_digits=14)),
                ("currency", models.CharField(default="USD", help_text="ISO 4217 code of the contract value.", max_length=3)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "services",
                    models.ManyToManyField(
                        blank=True, help_text="The services it uses.", related_name="accounts", to="incidents.service"
                    ),
                ),
                (
                    "tier",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="accounts", to="incidents.accounttier"
                    ),
                ),
            ],
            options={
                "ordering": ["name", "external_id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("annual_contract_value__gte", 0)),
                        name="account_contract_value_not_negative",
                        violation_error_message="The annual contract value cannot be negative.",
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="customerreport",
            name="account",
            field=models.ForeignKey(
                blank=True,
                help_text="The customer account, when the customer id is one of your accounts' external ids.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="customer_reports",
                to="incidents.account",
            ),
        ),
        migrations.CreateModel(
            name="AccountContact",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(blank=True, max_length=200)),
                ("email", models.EmailField(max_length=254)),
                ("role", models.CharField(blank=True, help_text="E.g. technical contact, account owner.", max_length=100)),
                (
                    "incident_emails",
                    models.BooleanField(
                        default=False, help_text="Opted in to incident e-mail.", verbose_name="incident e-mails"
                    ),
                ),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="contacts", to="incidents.account"
                    ),
                ),
            ],
            options={
                "ordering": ["account", "email"],
                "constraints": [
                    models.UniqueConstraint(fields=("account", "email"), name="accountcontact_once_per_account")
                ],
            },
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]

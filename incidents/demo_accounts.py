"""Demo customer accounts for `seed_demo`: a few accounts per tier on the demo services, and reports
from some of them on the newest open incident, so impact by tier and contract value has something to show."""

from decimal import Decimal

from . import services as incident_services
from .accounts import AccountData, account_upsert
from .models import Account, AccountTier, Incident

ACCOUNTS = [  # external id, name, tier, annual contract value, currency, services, contact
    ("crm-0001", "Acme Retail", "enterprise", "240000", "USD", ["storefront", "checkout", "mobile-api"], "ops"),
    ("crm-0002", "Globex Travel", "enterprise", "180000", "EUR", ["checkout", "notifications"], "it"),
    ("crm-0003", "Initech", "business", "36000", "USD", ["storefront", "search"], "admin"),
    ("crm-0004", "Umbrella Pharmacy", "business", "42000", "GBP", ["checkout"], "support"),
    ("crm-0005", "Hooli Outlet", "business", "28000", "USD", ["mobile-api", "notifications"], "cto"),
    ("crm-0006", "Corner Bakery", "self-serve", "1200", "USD", ["storefront"], "owner"),
    ("crm-0007", "Tiny Tees", "self-serve", "900", "EUR", ["checkout"], "hello"),
]


def demo_accounts(*, services, people):
    """services: the demo services by slug. Runs once (a second seed changes nothing)."""
    if Account.objects.exists():
        return
    tiers = {t.slug: t for t in AccountTier.objects.all()}
    for external_id, name, tier, value, currency, slugs, mailbox in ACCOUNTS:
        domain = name.lower().replace(" ", "-") + ".example.com"
        account_upsert(
            data=AccountData(
                external_id=external_id,
                name=name,
                tier=tiers[tier],
                annual_contract_value=Decimal(value),
                currency=currency,
                services=[services[s] for s in slugs if s in services],
                contacts=[
                    {
                        "name": f"{name} {mailbox}",
                        "email": f"{mailbox}@{domain}",
                        "role": "Technical contact",
                        "incident_emails": True,
                    }
                ],
            )
        )
    incident = (
        Incident.objects.open().filter(is_restricted=False, services__slug="checkout").order_by("-detected_at").first()
    )
    if incident is None:
        return
    support = people["Communications"][0]
    for external_id, text, sentiment in [
        ("crm-0001", "Customers cannot pay at checkout.", "negative"),
        ("crm-0004", "Orders stuck at the payment step.", "negative"),
        ("crm-0007", "Some payments fail, retries work.", "neutral"),
    ]:
        incident_services.customer_report_create(
            actor=support,
            incident=incident,
            customer_id=external_id,
            channel="support_ticket",
            text=text,
            sentiment=sentiment,
            source_reference=f"demo-{external_id}",
        )

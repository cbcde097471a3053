"""What a period's incidents cost customers: the figures a product manager takes to a roadmap talk.

For the incidents the reader may see, detected in the dashboard's period (and its service and
severity filters): incidents by how many accounts they affected, the accounts affected by tier with
their annual contract value, customer reports by sentiment, and the accounts that suffered most.
An account is affected by an incident when it uses one of the incident's services or reported it.
"""

from collections import Counter, defaultdict

from django.db.models import Count

from .dashboard import dashboard_incidents
from .models import Account, CustomerReport, Incident

# Incidents by accounts affected: (label, lowest, highest) — highest None is open-ended.
BUCKETS = [("none", 0, 0), ("1–5", 1, 5), ("6–20", 6, 20), ("21–100", 21, 100), ("over 100", 101, None)]
TOP = 10


def affected_pairs(incidents):
    """{incident id: {account ids}} for these incidents: through their services, and through reports."""
    incident_ids = incidents.values("pk")
    users_of = defaultdict(set)
    for service_id, account_id in Account.services.through.objects.values_list("service_id", "account_id"):
        users_of[service_id].add(account_id)
    pairs = defaultdict(set)
    links = Incident.services.through.objects.filter(incident_id__in=incident_ids)
    for incident_id, service_id in links.values_list("incident_id", "service_id").iterator(chunk_size=5000):
        pairs[incident_id] |= users_of.get(service_id, set())
    reports = CustomerReport.objects.filter(incident_id__in=incident_ids, account__isnull=False)
    for incident_id, account_id in reports.values_list("incident_id", "account_id").distinct():
        pairs[incident_id].add(account_id)
    return pairs


def _money(totals):
    return [{"currency": c, "amount": a} for c, a in sorted(totals.items(), key=lambda item: (-item[1], item[0]))]


def customer_cost(*, user, scope):
    incidents = dashboard_incidents(user=user, scope=scope)
    pairs = affected_pairs(incidents)
    n_incidents = incidents.count()
    sizes = [len(pairs.get(pk, ())) for pk in pairs] + [0] * (n_incidents - len(pairs))
    buckets = [
        {"label": label, "incidents": sum(1 for n in sizes if n >= low and (high is None or n <= high))}
        for label, low, high in BUCKETS
    ]
    suffered = Counter(account_id for accounts in pairs.values() for account_id in accounts)
    accounts = {a.pk: a for a in Account.objects.filter(pk__in=suffered).select_related("tier")}
    tiers = {}
    for account in sorted(accounts.values(), key=lambda a: (a.tier.rank, a.tier.slug)):
        row = tiers.setdefault(account.tier.slug, {"tier": account.tier.name, "accounts": 0, "value": Counter()})
        row["accounts"] += 1
        row["value"][account.currency] += account.annual_contract_value
    sentiment = dict(
        CustomerReport.objects.filter(incident__in=incidents.values("pk"))
        .values_list("sentiment")
        .annotate(n=Count("id"))
        .order_by()
    )
    top = sorted(accounts.values(), key=lambda a: (-suffered[a.pk], -a.annual_contract_value, a.name))[:TOP]
    return {
        "incidents": n_incidents,
        "accounts_affected": len(accounts),
        "by_accounts_affected": buckets,
        "tiers": [{**row, "value": _money(row["value"])} for row in tiers.values()],
        "value_at_risk": _money(sum((Counter({a.currency: a.annual_contract_value}) for a in accounts.values()), Counter())),
        "sentiment": [
            {"sentiment": label, "reports": sentiment.get(value, 0)}
            for value, label in [*CustomerReport.Sentiment.choices, ("", "Unknown")]
        ],
        "top_accounts": [
            {"account": a, "incidents": suffered[a.pk], "value": a.annual_contract_value, "currency": a.currency}
            for a in top
        ],
        "_pairs": pairs,
        "_accounts": accounts,
        "_incidents": incidents,
    }


# ---- CSV: the rows behind each figure -----------------------------------------------------------------

EXPORTS = ("incidents", "tiers", "sentiment", "accounts")


def export_rows(cost, figure):
    """Rows (header first) for one figure; the incidents export lists every incident with its count."""
    if figure == "incidents":
        yield ["reference", "title", "severity", "detected_at", "accounts_affected"]
        pairs = cost["_pairs"]
        for incident in cost["_incidents"].select_related("severity").order_by("-detected_at").iterator(chunk_size=1000):
            yield [incident.reference, incident.title, incident.severity.label, incident.detected_at.isoformat(),
                   len(pairs.get(incident.pk, ()))]
    elif figure == "tiers":
        yield ["tier", "accounts_affected", "annual_contract_value", "currency"]
        for row in cost["tiers"]:
            for money in row["value"]:
                yield [row["tier"], row["accounts"], money["amount"], money["currency"]]
    elif figure == "sentiment":
        yield ["sentiment", "reports"]
        for row in cost["sentiment"]:
            yield [row["sentiment"], row["reports"]]
    else:  # every account affected, most incidents first
        yield ["external_id", "name", "tier", "incidents", "annual_contract_value", "currency"]
        suffered = Counter(a for accounts in cost["_pairs"].values() for a in accounts)
        for account in sorted(cost["_accounts"].values(), key=lambda a: (-suffered[a.pk], a.name)):
            yield [account.external_id, account.name, account.tier.slug, suffered[account.pk],
                   account.annual_contract_value, account.currency]

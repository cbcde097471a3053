"""Reads shared by the admin, the API and the other apps (update drafts, the review's impact section)."""

from django.db.models import Count, Exists, Max, Min, OuterRef, Sum
from django.db.models.functions import TruncHour

from .models import Account, CustomerReport, visible_incident_rows


def customer_report_list(*, user, incident=None, linked=None):
    """Customer reports the user may see: unlinked ones, and those of incidents visible to them."""
    reports = visible_incident_rows(CustomerReport.objects.select_related("incident", "created_by", "account"), user)
    if incident is not None:
        reports = reports.filter(incident=incident)
    if linked is not None:
        reports = reports.filter(incident__isnull=not linked)
    return reports


def incident_impact(incident):
    """Customer impact of one incident, from its linked customer reports (four small aggregate queries).

    {"customers_affected": distinct customer ids, "reports": n, "first_report_at", "last_report_at",
     "revenue_at_risk": [{"currency", "amount"}] (a sum per currency, largest first; each customer
     counted once: their largest figure),
     "sentiment": {"negative": n, "neutral": n, "positive": n, "unknown": n},
     "reports_over_time": [{"hour": datetime, "count": n}] (hours with reports, oldest first)}

    Callers must already have checked that the reader may see the incident.
    """
    reports = CustomerReport.objects.filter(incident=incident).order_by()
    totals = reports.aggregate(
        n=Count("id"), customers=Count("customer_id", distinct=True), first=Min("received_at"), last=Max("received_at")
    )
    revenue = revenue_at_risk(reports)
    sentiment = {choice: 0 for choice in CustomerReport.Sentiment.values}
    sentiment["unknown"] = 0
    for value, n in reports.values_list("sentiment").annotate(n=Count("id")):
        sentiment[value or "unknown"] = n
    over_time = [
        {"hour": row["hour"], "count": row["n"]}
        for row in reports.annotate(hour=TruncHour("received_at"))
        .values("hour")
        .annotate(n=Count("id"))
        .order_by("hour")
    ]
    return {
        "customers_affected": totals["customers"],
        "reports": totals["n"],
        "first_report_at": totals["first"],
        "last_report_at": totals["last"],
        "revenue_at_risk": revenue,
        "sentiment": sentiment,
        "reports_over_time": over_time,
    }


def revenue_at_risk(reports):
    """[{"currency", "amount"}], largest first: each customer counted once per incident and currency.

    A customer who writes in three times puts the same revenue at risk, not three times as much: their
    largest figure counts (a later, higher estimate replaces an earlier one; a lower one does not undo it).
    """
    per_customer = (
        reports.filter(revenue_at_risk__isnull=False)
        .values("incident_id", "customer_id", "currency")
        .annotate(amount=Max("revenue_at_risk"))
        .order_by()
    )
    totals = {}
    for row in per_customer:
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["amount"]
    return [
        {"currency": currency, "amount": amount}
        for currency, amount in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    ]


def incident_impact_text(incident):
    """One line for an update draft or a review's impact section, e.g.
    "12 customers affected (15 reports); revenue at risk: 4,200.00 USD." ("" without reports)."""
    accounts = incident_accounts_impact(incident)
    impact = incident_impact(incident)
    if not impact["reports"]:
        return accounts_impact_text(accounts)
    customers = impact["customers_affected"]
    text = f"{customers} customer{'s' if customers != 1 else ''} affected ({impact['reports']} report"
    text += "s)" if impact["reports"] != 1 else ")"
    if impact["revenue_at_risk"]:
        amounts = ", ".join(f"{row['amount']:,.2f} {row['currency']}" for row in impact["revenue_at_risk"])
        text += f"; revenue at risk: {amounts}"
    return " ".join(filter(None, [text + ".", accounts_impact_text(accounts)]))


def _money(rows):
    return ", ".join(f"{row['amount']:,.2f} {row['currency']}" for row in rows)


def incident_accounts_affected(incident):
    """Accounts that use one of the incident's services or reported it: EXISTS, so each counts once."""
    uses = Account.services.through.objects.filter(
        account_id=OuterRef("pk"), service_id__in=incident.services.values("pk")
    )
    reported = CustomerReport.objects.filter(account_id=OuterRef("pk"), incident_id=incident.pk)
    return Account.objects.filter(Exists(uses) | Exists(reported))


def incident_accounts_impact(incident, *, top=10):
    """Accounts affected by one incident, by tier, and the annual contract value at risk (one query
    for the counts, one for the largest accounts).

    {"accounts": n, "annual_contract_value_at_risk": [{"currency", "amount"}] (largest first),
     "by_tier": [{"tier", "name", "accounts", "annual_contract_value": [{"currency", "amount"}]}] (tier rank order),
     "top_accounts": [{"external_id", "name", "tier", "annual_contract_value", "currency", "reported"}]}
    Callers must already have checked that the reader may see the incident.
    """
    affected = incident_accounts_affected(incident)
    rows = (
        affected.values("tier__slug", "tier__name", "tier__rank", "currency")
        .annotate(n=Count("id"), amount=Sum("annual_contract_value"))
        .order_by("tier__rank", "tier__slug", "currency")
    )
    by_tier, totals = {}, {}
    for row in rows:
        tier = by_tier.setdefault(
            row["tier__slug"],
            {"tier": row["tier__slug"], "name": row["tier__name"], "accounts": 0, "annual_contract_value": []},
        )
        tier["accounts"] += row["n"]
        tier["annual_contract_value"].append({"currency": row["currency"], "amount": row["amount"]})
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["amount"]
    reported = CustomerReport.objects.filter(account_id=OuterRef("pk"), incident_id=incident.pk)
    largest = affected.annotate(reported=Exists(reported)).select_related("tier").order_by(
        "-annual_contract_value", "name"
    )[:top]
    return {
        "accounts": sum(t["accounts"] for t in by_tier.values()),
        "annual_contract_value_at_risk": [
            {"currency": c, "amount": a} for c, a in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        ],
        "by_tier": list(by_tier.values()),
        "top_accounts": [
            {
                "external_id": a.external_id,
                "name": a.name,
                "tier": a.tier.slug,
                "annual_contract_value": a.annual_contract_value,
                "currency": a.currency,
                "reported": a.reported,
            }
            for a in largest
        ],
    }


def accounts_impact_text(impact):
    """E.g. "3 accounts affected (1 Enterprise, 2 Business); annual contract value at risk: 120,000.00 USD."
    ("" when no account is affected)."""
    if not impact["accounts"]:
        return ""
    n = impact["accounts"]
    tiers = ", ".join(f"{t['accounts']} {t['name']}" for t in impact["by_tier"])
    return (
        f"{n} account{'s' if n != 1 else ''} affected ({tiers}); "
        f"annual contract value at risk: {_money(impact['annual_contract_value_at_risk'])}."
    )

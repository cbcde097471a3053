"""Action-item metrics and chart series, registered with incidents.metrics (imported by PostmortemsConfig.ready).

- Completion rate: done / (all − won't do) among the action items of the incidents in scope. Items
  marked "won't do" are a decision, not work left: they count neither as done nor as outstanding.
- Overdue: open or in-progress items whose due date is before today (the site's time zone). Items
  without a due date are never overdue.
"""

from datetime import UTC, timedelta

from django.apps import apps
from django.db.models import Count, Q
from django.db.models.functions import TruncMonth
from django.utils import timezone

from incidents.metrics import MetricDefinition, metric_result, metric_series_register, metric_source_register

OPEN = ("open", "in_progress")
DONE = "done"
WONT_DO = "wont_do"

COMPLETION = MetricDefinition(
    "action_item_completion_rate",
    "Action-item completion rate",
    "Share of the incidents' action items that are done, of all their action items except those marked "
    "won't do (`count` done of `total`).",
    "ratio",
    "rate",
)
OVERDUE = MetricDefinition(
    "action_items_overdue",
    "Overdue action items",
    "The incidents' action items still open or in progress whose due date has passed (before today). "
    "Items without a due date are never overdue.",
    "action items",
    "count",
)

# Age of open action items (since they were created), for the dashboard's chart: (label, min days, max days).
AGE_BUCKETS = [("under 7 days", 0, 7), ("7–30 days", 7, 30), ("30–90 days", 30, 90), ("over 90 days", 90, None)]


def _action_items():
    try:
        return apps.get_model("postmortems", "ActionItem")
    except LookupError:
        return None


def _items_of(incidents):
    model = _action_items()
    if model is None:
        return None
    return model.objects.filter(incident__in=incidents.values("pk")).order_by()


def _overdue_condition():
    return Q(status__in=OPEN, due_date__isnull=False, due_date__lt=timezone.localdate())


def action_item_metrics(incidents):
    items = _items_of(incidents)
    if items is None:
        return {}
    row = items.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status=DONE)),
        wont_do=Count("id", filter=Q(status=WONT_DO)),
        overdue=Count("id", filter=_overdue_condition()),
    )
    denominator = row["total"] - row["wont_do"]
    return {
        COMPLETION.key: metric_result(
            COMPLETION,
            count=row["done"],
            total=denominator,
            rate=round(row["done"] / denominator, 4) if denominator else None,
        ),
        OVERDUE.key: metric_result(OVERDUE, count=row["overdue"]),
    }


def open_action_items_by_age(incidents):
    """[{"label", "count"}] for open and in-progress action items of these incidents, youngest bucket first."""
    items = _items_of(incidents)
    if items is None:
        return []
    now = timezone.now()
    aggregates = {}
    for i, (_label, low, high) in enumerate(AGE_BUCKETS):
        condition = Q(status__in=OPEN, created_at__lte=now - timedelta(days=low))
        if high is not None:
            condition &= Q(created_at__gt=now - timedelta(days=high))
        aggregates[f"b{i}"] = Count("id", filter=condition)
    row = items.aggregate(**aggregates)
    return [{"label": label, "count": row[f"b{i}"]} for i, (label, _low, _high) in enumerate(AGE_BUCKETS)]


def overdue_action_items_per_service(incidents):
    """[{"slug", "name", "count"}] overdue action items per service of their incident, most first."""
    items = _items_of(incidents)
    if items is None:
        return []
    rows = (
        items.filter(_overdue_condition(), incident__services__isnull=False)
        .values("incident__services__slug", "incident__services__name")
        .annotate(n=Count("id", distinct=True))
        .order_by("-n", "incident__services__slug")
    )
    return [
        {"slug": row["incident__services__slug"], "name": row["incident__services__name"], "count": row["n"]}
        for row in rows
    ]


def factor_categories_by_month(incidents):
    """[{"start": first day of the month (UTC), "category", "label", "count"}]: contributing factors of these
    incidents' reviews, by the month their incident was detected in and category (no zero rows)."""
    try:
        factor = apps.get_model("postmortems", "ContributingFactor")
    except LookupError:
        return []
    labels = dict(factor.Category.choices)
    rows = (
        factor.objects.filter(review__incident__in=incidents.values("pk"))
        .annotate(month=TruncMonth("review__incident__detected_at", tzinfo=UTC))
        .values("month", "category")
        .annotate(n=Count("id"))
        .order_by("month", "category")
    )
    return [
        {
            "start": row["month"].astimezone(UTC).date() if hasattr(row["month"], "astimezone") else row["month"],
            "category": row["category"],
            "label": labels.get(row["category"], row["category"]),
            "count": row["n"],
        }
        for row in rows
    ]


metric_source_register(action_item_metrics, definitions=[COMPLETION, OVERDUE])
metric_series_register("action_items_open_by_age", open_action_items_by_age)
metric_series_register("action_items_overdue_per_service", overdue_action_items_per_service)
metric_series_register("factor_categories_by_month", factor_categories_by_month)

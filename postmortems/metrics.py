"""Action-item metrics and chart series, registered with incidents.metrics (imported by PostmortemsConfig.ready).

- Completion rate: done / (all − won't do) among the action items of the incidents in scope. Items
  marked "won't do" are a decision, not work left: they count neither as done nor as outstanding.
- Overdue: open or in-progress items whose due date is before today (the site's time zone). Items
  without a due date are never overdue.
"""

from datetime import date, datetime, timedelta

from django.apps import apps
from django.db import connection
from django.utils import timezone

from incidents.metrics import (
    MetricDefinition,
    fetch_rows,
    metric_result,
    metric_series_register,
    metric_source_register,
    query_sql,
    sql_names,
)
from incidents.models import Incident, Service

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


# The figures are aggregates over the items of the in-scope incidents, written as SQL around the ORM's own query
# of those incidents: building the same aggregates with the ORM took twice as long as running them, on every
# dashboard request (issue 14). Names come from the models; every value is a parameter.


def _scope(incidents):
    """(SQL, params) of the ids of these incidents, for `… IN (…)`."""
    return query_sql(incidents.order_by().values("pk"))


def _fetch(sql, params, one=False):
    rows = fetch_rows(sql, params)
    return rows[0] if one else rows


def _overdue_sql(status, due_date):
    """The overdue condition (see the module doc) on these columns, and its parameters."""
    today = connection.ops.adapt_datefield_value(timezone.localdate())
    return f"{status} IN (%s, %s) AND {due_date} IS NOT NULL AND {due_date} < %s", [*OPEN, today]


def action_item_metrics(incidents):
    model = _action_items()
    if model is None:
        return {}
    table, incident, status, due_date = sql_names(model, "incident", "status", "due_date")
    overdue, overdue_params = _overdue_sql(status, due_date)
    scope, scope_params = _scope(incidents)
    total, done, wont_do, overdue_count = _fetch(
        f"SELECT COUNT(*), COUNT(CASE WHEN {status} = %s THEN 1 END), COUNT(CASE WHEN {status} = %s THEN 1 END), "
        f"COUNT(CASE WHEN {overdue} THEN 1 END) FROM {table} WHERE {incident} IN ({scope})",
        [DONE, WONT_DO, *overdue_params, *scope_params],
        one=True,
    )
    denominator = total - wont_do
    return {
        COMPLETION.key: metric_result(
            COMPLETION,
            count=done,
            total=denominator,
            rate=round(done / denominator, 4) if denominator else None,
        ),
        OVERDUE.key: metric_result(OVERDUE, count=overdue_count),
    }


def open_action_items_by_age(incidents):
    """[{"label", "count"}] for open and in-progress action items of these incidents, youngest bucket first."""
    model = _action_items()
    if model is None:
        return []
    table, incident, status, created_at = sql_names(model, "incident", "status", "created_at")
    now = timezone.now()
    counts, params = [], []
    for _label, low, high in AGE_BUCKETS:
        condition = f"{created_at} <= %s"
        params.append(connection.ops.adapt_datetimefield_value(now - timedelta(days=low)))
        if high is not None:
            condition += f" AND {created_at} > %s"
            params.append(connection.ops.adapt_datetimefield_value(now - timedelta(days=high)))
        counts.append(f"COUNT(CASE WHEN {condition} THEN 1 END)")
    scope, scope_params = _scope(incidents)
    row = _fetch(
        f"SELECT {', '.join(counts)} FROM {table} WHERE {status} IN (%s, %s) AND {incident} IN ({scope})",
        [*params, *OPEN, *scope_params],
        one=True,
    )
    return [{"label": label, "count": n} for (label, _low, _high), n in zip(AGE_BUCKETS, row, strict=True)]


def overdue_action_items_per_service(incidents):
    """[{"slug", "name", "count"}] overdue action items per service of their incident, most first."""
    model = _action_items()
    if model is None:
        return []
    items, item_id, incident, status, due_date = sql_names(model, "id", "incident", "status", "due_date")
    links, link_incident, link_service = sql_names(Incident.services.through, "incident", "service")
    services, service_id, slug, name = sql_names(Service, "id", "slug", "name")
    overdue, overdue_params = _overdue_sql(f"{items}.{status}", f"{items}.{due_date}")
    scope, scope_params = _scope(incidents)
    rows = _fetch(
        f"SELECT {services}.{slug}, {services}.{name}, COUNT(DISTINCT {items}.{item_id}) FROM {items} "
        f"INNER JOIN {links} ON {links}.{link_incident} = {items}.{incident} "
        f"INNER JOIN {services} ON {services}.{service_id} = {links}.{link_service} "
        f"WHERE {overdue} AND {items}.{incident} IN ({scope}) "
        f"GROUP BY {services}.{slug}, {services}.{name} ORDER BY 3 DESC, 1 ASC",
        [*overdue_params, *scope_params],
    )
    return [{"slug": slug_, "name": name_, "count": n} for slug_, name_, n in rows]


def factor_categories_by_month(incidents):
    """[{"start": first day of the month (UTC), "category", "label", "count"}]: contributing factors of these
    incidents' reviews, by the month their incident was detected in and category (no zero rows)."""
    try:
        factor = apps.get_model("postmortems", "ContributingFactor")
    except LookupError:
        return []
    labels = dict(factor.Category.choices)
    factors, review, category = sql_names(factor, "review", "category")
    reviews, review_id, review_incident = sql_names(factor._meta.get_field("review").related_model, "id", "incident")
    incidents_table, incident_id, detected_at = sql_names(Incident, "id", "detected_at")
    month, month_params = connection.ops.datetime_trunc_sql("month", f"{incidents_table}.{detected_at}", (), "UTC")
    scope, scope_params = _scope(incidents)
    rows = _fetch(
        f"SELECT {month}, {factors}.{category}, COUNT(*) FROM {factors} "
        f"INNER JOIN {reviews} ON {reviews}.{review_id} = {factors}.{review} "
        f"INNER JOIN {incidents_table} ON {incidents_table}.{incident_id} = {reviews}.{review_incident} "
        f"WHERE {reviews}.{review_incident} IN ({scope}) GROUP BY 1, 2 ORDER BY 1, 2",
        [*month_params, *scope_params],
    )
    return [
        {"start": _month_start(start), "category": name, "label": labels.get(name, name), "count": n}
        for start, name, n in rows
    ]


def _month_start(value):
    """The truncated month as a date: a datetime (PostgreSQL, in UTC) or its text (SQLite)."""
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    return value.date() if isinstance(value, datetime) else value


metric_source_register(action_item_metrics, definitions=[COMPLETION, OVERDUE])
metric_series_register("action_items_open_by_age", open_action_items_by_age)
metric_series_register("action_items_overdue_per_service", overdue_action_items_per_service)
metric_series_register("factor_categories_by_month", factor_categories_by_month)

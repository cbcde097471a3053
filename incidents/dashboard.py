"""Selectors behind the reliability dashboard: chart series, hot spots and the CSV export's rows.

Built on ``incidents.metrics``, so the page and ``GET /api/v1/metrics/`` count the same incidents:
those the user may see, detected inside the period (``since <= detected_at < until``), optionally of
one service and one severity, leaving out dismissed incidents and duplicates. Every series is one
aggregate query grouped by week, severity or service; the number of queries does not depend on how
many incidents there are.

Impact minutes (top services, hot spots): from ``started_at`` (``detected_at`` when the start of
impact is unknown) to ``mitigated_at`` (``resolved_at`` if it skipped mitigation; an open incident
counts up to now), summed over the service's incidents; an incident with several services counts for
each of them.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from django.db.models import Count, Exists, F, OuterRef
from django.utils import timezone

from . import metrics, rollups
from .models import Incident, Service, Severity

PERIOD_DAYS = {"30": 30, "90": 90, "365": 365}
DEFAULT_PERIOD = "90"
HOT_SPOT_COLUMNS = ("incidents", "impact_minutes", "customer_reports", "overdue_action_items")
# Series that postmortems registers with incidents.metrics.metric_series_register (incidents never
# imports postmortems): rows of {"label", "count"} and of {"slug", "count"}.
ACTION_ITEMS_BY_AGE = "action_items_open_by_age"
ACTION_ITEMS_OVERDUE_PER_SERVICE = "action_items_overdue_per_service"
FACTOR_CATEGORIES_BY_MONTH = "factor_categories_by_month"

# Why a duration is missing for an incident, in plain words: "<n> incidents <reason>".
MISSING_REASONS = {
    "mttd": "have no start-of-impact time recorded, so their time to detect cannot be measured",
    "mtta": "were never acknowledged by a person, so they have no time to acknowledge",
    "mtta_alert": "opened by an alert were never acknowledged by a person",
    "mtta_person": "declared by a person were never acknowledged",
    "time_to_mitigate": "are not mitigated yet",
    "mttr": "were never resolved, so they have no time to resolve",
    "time_to_final_resolution": "are not resolved now (never resolved, or reopened and open again)",
    "mttr_from_start": "have no start-of-impact time or were never resolved",
}

IMPACT_DEFINITION = (
    "From when impact started (detection when unknown) to mitigation (resolution when it skipped "
    "mitigation; an open incident counts up to now), summed over the service's incidents. An incident "
    "with several services counts for each."
)

# The durations in the CSV export: column -> (from field, to field), as the metrics define them.
EXPORT_DURATIONS = {
    "minutes_to_detect": ("started_at", "detected_at"),
    "minutes_to_acknowledge": ("detected_at", "acknowledged_at"),
    "minutes_to_mitigate": ("detected_at", "mitigated_at"),
    "minutes_to_resolve": ("detected_at", "resolved_at"),
}


@dataclass
class Scope:
    """What the dashboard shows: a period (by detection time), a service, a severity."""

    since: datetime
    until: datetime
    service: Service | None = None
    severity: Severity | None = None
    period: str = DEFAULT_PERIOD
    now: datetime = field(default_factory=timezone.now)

    @classmethod
    def last(cls, days, **kwargs):
        """The last `days` calendar days in UTC, today included: whole days, so that the daily roll-up
        answers it without reading incidents at the edges."""
        now = kwargs.pop("now", None) or timezone.now()
        tomorrow = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time.min, tzinfo=UTC)
        return cls(since=tomorrow - timedelta(days=days), until=tomorrow, now=now, period=str(days), **kwargs)

    @classmethod
    def between(cls, first_day, last_day, **kwargs):
        """From the start of first_day to the end of last_day (dates, in the current time zone)."""
        return cls(since=day_start(first_day), until=day_start(last_day + timedelta(days=1)), period="custom", **kwargs)

    def previous(self):
        """The period of the same length just before this one (for period-over-period change)."""
        length = self.until - self.since
        return Scope(
            since=self.since - length,
            until=self.since,
            service=self.service,
            severity=self.severity,
            period="custom",
            now=self.now,
        )

    def params(self):
        """The GET parameters that reproduce this scope (for the links to the export)."""
        params = {"period": self.period}
        if self.period == "custom":
            params["since"] = timezone.localtime(self.since).date().isoformat()
            params["until"] = (timezone.localtime(self.until) - timedelta(days=1)).date().isoformat()
        if self.service is not None:
            params["service"] = self.service.slug
        if self.severity is not None:
            params["severity"] = str(self.severity.level)
        return params


def day_start(day):
    return timezone.make_aware(datetime.combine(day, time.min))


def dashboard_incidents(*, user, scope):
    """The incidents behind every figure (see the module doc)."""
    return metrics.incidents_for_metrics(
        user=user, since=scope.since, until=scope.until, service=scope.service, severity=scope.severity
    )


def week_starts(scope):
    """Mondays (dates, in the current time zone) of every week the period touches."""
    return metrics.period_buckets("week", scope.since, scope.until)


def incidents_per_week(rows, scope, severities):
    """{"weeks": [Monday, …], "series": [(severity, [count per week])]}: every week, zeros included.
    rows: metrics.frequency_by_severity's (or the roll-up's)."""
    weeks = week_starts(scope)
    index = {week: i for i, week in enumerate(weeks)}
    counts = {severity.level: [0] * len(weeks) for severity in severities}
    for row in rows:
        i = index.get(row["start"])
        if i is not None and row["level"] in counts:
            counts[row["level"]][i] += row["count"]
    return {"weeks": weeks, "series": [(severity, counts[severity.level]) for severity in severities]}


def response_trend(trends, scope):
    """Weekly MEAN time to acknowledge (minutes) and to resolve (hours), by week of detection.

    trends: {"mtta": rows, "mttr": rows} of metrics.duration_trend (or the roll-up's). A week without an
    acknowledged (resolved) incident has no value (None), never a zero.
    """
    weeks = week_starts(scope)
    index = {week: i for i, week in enumerate(weeks)}
    trend = {"weeks": weeks}
    for key, divisor, name in (("mtta", 60, "mtta_minutes"), ("mttr", 3600, "mttr_hours")):
        values, counts = [None] * len(weeks), [0] * len(weeks)
        for row in trends[key]:
            i = index.get(row["start"])
            if i is not None and row["mean"] is not None:
                values[i], counts[i] = row["mean"] / divisor, row["count"]
        trend[name], trend[f"{key}_counts"] = values, counts
    return trend


def severity_mix(counts, severities):
    """[(severity, count)] for every severity, in level order, from {severity id: incidents}."""
    return [(severity, counts.get(severity.pk, 0)) for severity in severities]


class LiveSeries:
    """The dashboard's series computed from the incidents (an aggregate query each)."""

    def __init__(self, incidents, scope):
        self.incidents, self.scope = incidents, scope

    def per_week_by_severity(self):
        return metrics.frequency_by_severity(self.incidents, "week")

    def trends(self):
        return {key: metrics.duration_trend(self.incidents, key, "week") for key in ("mtta", "mttr")}

    def severity_counts(self):
        return dict(self.incidents.order_by().values_list("severity_id").annotate(n=Count("pk")))

    def services_impact(self, only, services=None):
        return metrics.services_impact(self.incidents, only=only)


class RollupSeries:
    """The same series from the daily roll-up (incidents.rollups): sums per day, not every incident."""

    def __init__(self, read, incidents, scope, severities):
        self.read, self.incidents, self.scope = read, incidents, scope
        self.levels = {severity.pk: severity.level for severity in severities}

    def per_week_by_severity(self):
        weeks = {}
        for (day, severity_id), n in self.read.per_day_severity.items():
            key = (metrics._bucket_start(day, "week"), self.levels.get(severity_id))
            weeks[key] = weeks.get(key, 0) + n
        return [{"start": start, "level": level, "count": n} for (start, level), n in sorted(weeks.items()) if n]

    def trends(self):
        result = {}
        for key in ("mtta", "mttr"):
            weeks = {}
            for (day, name), (count, total) in self.read.per_day_duration.items():
                if name == key and count:
                    cell = weeks.setdefault(metrics._bucket_start(day, "week"), [0, 0])
                    cell[0] += count
                    cell[1] += total
            result[key] = [
                {"start": start, "count": count, "mean": metrics._round(total / count / 1e6)}
                for start, (count, total) in sorted(weeks.items())
            ]
        return result

    def severity_counts(self):
        counts = {}
        for (_day, severity_id), n in self.read.per_day_severity.items():
            counts[severity_id] = counts.get(severity_id, 0) + n
        return counts

    def services_impact(self, only, services=None):
        return metrics.services_impact_from(
            self.read.services(),
            self.incidents,
            self.scope.now,
            only=only,
            reports=self.read._selection.reports(),
            services=services,
        )


def action_item_series(*, user, scope):
    """(open items by age [(label, count)], overdue items per service {slug: {"name", "count"}}); each
    None when postmortems registered no such series.

    Open work is counted whatever the period: an item 150 days overdue matters even when its incident
    was detected before the period. The service and severity filters still apply.
    """
    incidents = metrics.incidents_for_metrics(user=user, service=scope.service, severity=scope.severity)
    by_age = metrics.metric_series(ACTION_ITEMS_BY_AGE, incidents)
    overdue = metrics.metric_series(ACTION_ITEMS_OVERDUE_PER_SERVICE, incidents)
    by_age = None if by_age is None else [(row["label"], row["count"]) for row in by_age]
    if overdue is not None:
        overdue = {row["slug"]: row for row in overdue if scope.service is None or row["slug"] == scope.service.slug}
    return by_age, overdue


def factor_categories(incidents):
    """{"months": [first days], "series": [(category label, [count per month])]} or None when not tracked."""
    rows = metrics.metric_series(FACTOR_CATEGORIES_BY_MONTH, incidents)
    if rows is None:
        return None
    months = sorted({row["start"] for row in rows})
    index = {month: i for i, month in enumerate(months)}
    series = {}
    for row in rows:
        series.setdefault(row["label"], [0] * len(months))[index[row["start"]]] += row["count"]
    return {"months": months, "series": sorted(series.items())}


def period_change(current, previous):
    """{key: {"previous", "change"}} for the headline figures: counts, rates and mean durations as they
    were the period before, and the relative change (None when there is nothing to compare with)."""

    def value(metric):
        if metric is None:
            return None
        if metric.get("kind") == "duration":
            return metric.get("mean")
        if metric.get("kind") == "rate":
            return metric.get("rate")
        if metric.get("kind") == "series":
            return metric.get("mean")
        return metric.get("count")

    changes = {}
    for key, metric in current.items():
        now, before = value(metric), value(previous.get(key))
        if now is None or before is None:
            changes[key] = {"previous": before, "change": None}
        else:
            changes[key] = {"previous": before, "change": None if before == 0 else (now - before) / before}
    return changes


def hot_spots(impact, overdue, order="incidents"):
    """Services ranked by `order` (one of HOT_SPOT_COLUMNS), ties broken by the other columns in turn.

    impact: rows of metrics.services_impact; overdue: {slug: {"name", "count"}} or None. A service
    with overdue action items but no incident in the period is listed too.
    """
    rows = {row["slug"]: {**row, "overdue_action_items": 0} for row in impact}
    for slug, item in (overdue or {}).items():
        row = rows.setdefault(
            slug,
            {"slug": slug, "name": item.get("name", slug), "incidents": 0, "impact_minutes": 0, "customer_reports": 0},
        )
        row["overdue_action_items"] = item["count"]
    order = order if order in HOT_SPOT_COLUMNS else "incidents"
    keys = (order, *(c for c in HOT_SPOT_COLUMNS if c != order))
    return sorted(rows.values(), key=lambda r: (*(-r[k] for k in keys), r["name"]))


def dashboard_series(*, user, scope, severities):
    """The series' source: the daily roll-up when it can answer, else the incidents."""
    selection = rollups.selection_for(
        user=user, since=scope.since, until=scope.until, service=scope.service, severity=scope.severity
    )
    if selection is None:
        incidents = dashboard_incidents(user=user, scope=scope)
        return LiveSeries(incidents, scope), incidents
    selection.severity_list = severities  # read once a request (metrics_read uses it too)
    selection.versions_also_from(scope.previous().since)  # the period before is read too (its change)
    incidents = selection.incidents()  # the same incidents as dashboard_incidents', built once
    return RollupSeries(rollups.Read(selection), incidents, scope, severities), incidents


def dashboard_data(*, user, scope, hot_spot_order="incidents"):
    """Every series the page draws, for `user` and `scope`; a fixed number of queries."""
    severities = list(Severity.objects.order_by("level"))
    services = list(Service.objects.order_by("name"))  # the rankings' names and the service picker's options
    series, incidents = dashboard_series(user=user, scope=scope, severities=severities)
    # The service filter applies to every ranking: an incident on checkout and search, seen through the
    # checkout filter, counts for checkout only.
    impact = series.services_impact([scope.service.slug] if scope.service else None, services)
    by_age, overdue = action_item_series(user=user, scope=scope)
    spots = hot_spots(impact, overdue, hot_spot_order)
    mix = severity_mix(series.severity_counts(), severities)
    return {
        "severities": severities,
        "services": services,
        "total": sum(n for _severity, n in mix),
        "per_week": incidents_per_week(series.per_week_by_severity(), scope, severities),
        "trend": response_trend(series.trends(), scope),
        "mix": mix,
        "top_services": impact[:10],
        "action_items_by_age": by_age,
        "action_items_tracked": overdue is not None,
        "hot_spots": spots,
        "factors": factor_categories(incidents),
        "read": getattr(series, "read", None),  # the roll-up read, for the metric cards of the same scope
    }


# ---- the incidents behind a figure (CSV export) --------------------------------------------------


class UnknownFigure(ValueError):
    pass


def _week_range(value):
    try:
        monday = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as error:
        raise UnknownFigure(f"Not a week: {value!r}.") from error
    return day_start(monday), day_start(monday + timedelta(days=7))


def _level(value):
    if not value.isdigit():
        raise UnknownFigure(f"Not a severity level: {value!r}.")
    return int(value)


def figure_incidents(*, user, scope, figure):
    """The in-scope incidents behind one figure of the dashboard.

    ``all``; ``metric:<key>`` for a metric card (every in-scope incident: the export shows which ones
    lack the timestamps the metric needs); ``week:<monday>`` or ``week:<monday>:<level>`` for a bar of
    the weekly chart; ``mtta:<monday>`` / ``mttr:<monday>`` for a trend point (that week's acknowledged
    / resolved incidents); ``severity:<level>``; ``service:<slug>`` for a top-service bar or a hot-spot
    row.
    """
    incidents = dashboard_incidents(user=user, scope=scope)
    kind, _, rest = (figure or "all").partition(":")
    if kind in ("all", "metric"):
        return incidents
    if kind in ("week", "mtta", "mttr"):
        week, _, level = rest.partition(":")
        start, end = _week_range(week)
        incidents = incidents.filter(detected_at__gte=start, detected_at__lt=end)
        if kind == "mtta":
            return incidents.filter(acknowledged_at__isnull=False)
        if kind == "mttr":
            return incidents.filter(resolved_at__isnull=False)
        return incidents.filter(severity__level=_level(level)) if level else incidents
    if kind == "severity":
        return incidents.filter(severity__level=_level(rest))
    if kind == "service" and rest:
        links = Incident.services.through.objects.filter(incident_id=OuterRef("pk"), service__slug=rest)
        return incidents.filter(Exists(links))
    raise UnknownFigure(f"Unknown figure: {figure!r}.")


def export_queryset(incidents):
    """The export's rows: incidents with their durations (seconds) computed in the database."""
    durations = {name: metrics.Seconds(F(end), F(start)) for name, (start, end) in EXPORT_DURATIONS.items()}
    return (
        incidents.select_related("severity")
        .prefetch_related("services")
        .annotate(impact_seconds=metrics.impact_seconds_expression(), **durations)
        .order_by("detected_at", "pk")
    )

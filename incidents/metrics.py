"""Reliability metrics, computed in the database: every figure is an aggregate query, never a loop over incidents.

Which incidents count (``incidents_for_metrics``):

- the ones the user may see (``Incident.objects.visible_to``), minus dismissed incidents and duplicates;
- in the period by **detection time**: ``since <= detected_at < until`` (either end optional). An
  incident detected inside the period counts even if its impact started before it, or it was resolved
  after it; one detected before ``since`` does not, even if it was still open during the period;
- optionally only those touching one of the given services (slugs), or of the given severity levels.

Durations are in seconds, from the timestamps kept on the incident. An incident that lacks one of the
two timestamps is not counted as zero: it is left out of the mean, median and p90 and counted in
``missing``. Reopening clears ``mitigated_at`` and ``resolved_at``, so a reopened incident is measured
to its final mitigation and resolution; while it is open again it is ``missing`` for those.

Other apps add metrics about their own records with ``metric_source_register(fn, definitions=...)``
(fn(incidents) -> {key: metric}) and chart series with ``metric_series_register(key, fn)``.
"""

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    Func,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Now, TruncMonth, TruncWeek

from .models import CustomerReport, Incident, Service, Severity, TimelineEvent


class MetricsError(ValueError):
    """Parameters the metrics cannot be computed for (the API answers 400 with the message)."""


_definition_dicts = {}  # MetricDefinition -> its asdict()


@dataclass(frozen=True)
class MetricDefinition:
    key: str
    name: str
    definition: str
    unit: str
    kind: str  # duration | series | distribution | rate | count

    def as_dict(self):
        # A new dict each call (callers add their values to it), copied from one made once: asdict() was a
        # measurable share of assembling the metrics.
        found = _definition_dicts.get(self)
        if found is None:
            found = _definition_dicts[self] = asdict(self)
        return dict(found)


@dataclass(frozen=True)
class DurationDefinition(MetricDefinition):
    start: str = ""
    end: str = ""
    detected_by: str = ""  # "alert" or "person": only the incidents detected that way (MTTA split)


def _duration(key, name, start, end, definition, detected_by=""):
    return DurationDefinition(key, name, definition, "seconds", "duration", start, end, detected_by)


DURATIONS = [
    _duration(
        "mttd",
        "Mean time to detect (MTTD)",
        "started_at",
        "detected_at",
        "From when impact started to when the incident was detected. Incidents without a known start "
        "of impact are counted in `missing`.",
    ),
    _duration(
        "mtta",
        "Mean time to acknowledge (MTTA)",
        "detected_at",
        "acknowledged_at",
        "From detection to the first acknowledgement by a person. Incidents nobody acknowledged "
        "(yet) are counted in `missing`.",
    ),
    _duration(
        "mtta_alert",
        "MTTA, detected by an alert",
        "detected_at",
        "acknowledged_at",
        "MTTA of the incidents opened by an alert (alert ingestion declared them: no person did). "
        "`missing` counts those of them nobody acknowledged (yet).",
        detected_by="alert",
    ),
    _duration(
        "mtta_person",
        "MTTA, declared by a person",
        "detected_at",
        "acknowledged_at",
        "MTTA of the incidents a person declared (in the admin, the API, chat). `missing` counts those of "
        "them nobody acknowledged (yet).",
        detected_by="person",
    ),
    _duration(
        "time_to_mitigate",
        "Mean time to mitigate",
        "detected_at",
        "mitigated_at",
        "From detection to mitigation (the latest mitigation for a reopened incident). Incidents not "
        "mitigated (yet) are counted in `missing`.",
    ),
    _duration(
        "mttr",
        "Mean time to resolve (MTTR)",
        "detected_at",
        "first_resolved_at",
        "From detection to the first resolution. A reopened incident keeps its first resolution here (see "
        "`reopen_rate` and `time_to_final_resolution`); incidents never resolved are counted in `missing`.",
    ),
    _duration(
        "time_to_final_resolution",
        "Time to final resolution",
        "detected_at",
        "resolved_at",
        "From detection to the current resolution: for a reopened incident, the last one. Incidents not "
        "resolved now (never, or open again after a reopen) are counted in `missing`.",
    ),
    _duration(
        "mttr_from_start",
        "Mean time to resolve from start of impact",
        "started_at",
        "first_resolved_at",
        "From when impact started to the first resolution. Incidents without a known start of impact or "
        "never resolved are counted in `missing`.",
    ),
]

CORE_DEFINITIONS = [
    *DURATIONS,
    MetricDefinition(
        "incidents",
        "Incidents",
        "Incidents detected in the period, not dismissed and not duplicates.",
        "incidents",
        "count",
    ),
    MetricDefinition(
        "frequency_week",
        "Incidents per week",
        "Incidents by the calendar week (Monday 00:00 to Sunday 24:00, UTC) they were detected in, every "
        "week the period touches listed (zero included) with `coverage`, the share of that week inside the "
        "period. `mean` is incidents per full week: the total divided by the weeks the period covers "
        "(a partial week counts as its coverage).",
        "incidents per week",
        "series",
    ),
    MetricDefinition(
        "frequency_month",
        "Incidents per month",
        "The same by calendar month (UTC): `mean` is incidents per full month, so a 30-day period with 10 "
        "incidents shows about 10 per month whichever months it straddles.",
        "incidents per month",
        "series",
    ),
    MetricDefinition(
        "severity_distribution",
        "Severity distribution",
        "Incidents per severity level (their current severity), with each level's share of all incidents.",
        "incidents",
        "distribution",
    ),
    MetricDefinition(
        "reopen_rate",
        "Reopen rate",
        "Share of incidents reopened at least once after being resolved (`count` of `total`).",
        "ratio",
        "rate",
    ),
    MetricDefinition(
        "recurrence_rate",
        "Recurrence rate",
        "Share of incidents linked as a recurrence of an earlier incident (`count` of `total`).",
        "ratio",
        "rate",
    ),
    MetricDefinition(
        "customers_affected",
        "Customers affected",
        "Distinct customer or account ids among the customer reports linked to these incidents.",
        "customers",
        "count",
    ),
    MetricDefinition(
        "customer_reports",
        "Customer reports",
        "Customer reports linked to these incidents.",
        "reports",
        "count",
    ),
]

_sources = []  # (fn, definitions)
_series = {}


def metric_source_register(fn, *, definitions=()):
    """fn(incidents) -> {key: metric dict} adds metrics about another app's records (see metric_result)."""
    if all(existing is not fn for existing, _defs in _sources):
        _sources.append((fn, tuple(definitions)))


def metric_series_register(key, fn):
    """fn(incidents) -> list of rows: a chart series another app computes (e.g. open action items by age)."""
    _series[key] = fn


def metric_series(key, incidents):
    """The registered series for these incidents, or None when no app registered it."""
    fn = _series.get(key)
    return None if fn is None else fn(incidents)


def metric_definitions():
    """Every metric's definition, core first, then the registered ones, in order."""
    return [*CORE_DEFINITIONS, *(d for _fn, defs in _sources for d in defs)]


def metric_result(definition, **values):
    return {**definition.as_dict(), **values}


# ---- Database expressions ---------------------------------------------------------------------


class Seconds(Func):
    """end - start in seconds (a float); NULL when either is missing."""

    output_field = FloatField()

    def __init__(self, end, start):
        super().__init__(end, start)

    def as_sql(self, compiler, connection, **extra):
        # SQLite: Django's own timestamp difference (integer microseconds, exact).
        return super().as_sql(
            compiler, connection, template="(django_timestamp_diff(%(expressions)s) / 1000000.0)", arg_joiner=", "
        )

    def as_postgresql(self, compiler, connection, **extra):
        return super().as_sql(
            compiler,
            connection,
            template="EXTRACT(EPOCH FROM (%(expressions)s))::double precision",
            arg_joiner=" - ",
        )


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont: the continuous (interpolated) percentile, NULLs ignored."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction, **extra):
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def _supports_percentile_cont():
    return connection.vendor == "postgresql"


def duration_expression(definition):
    """The definition's seconds; NULL for an incident the definition leaves out (detected the other way)."""
    seconds = Seconds(F(definition.end), F(definition.start))
    if not definition.detected_by:
        return seconds
    return Case(
        When(_detected_by(definition.detected_by), then=seconds), default=Value(None), output_field=FloatField()
    )


def _detected_by(source):
    return Q(detected_by_alert=(source == "alert"))


def with_lifecycle_facts(incidents):
    """Annotate what the timeline knows and the incident row does not keep:

    - first_resolved_at: the first time it was resolved (reopening clears resolved_at; the timeline
      keeps every move). Incidents whose history predates the timeline fall back to resolved_at.
    - reopened: it was reopened at least once after being resolved.
    - detected_by_alert: alert ingestion declared it (its `declared` event has no person).
    """
    moves = TimelineEvent.objects.filter(incident=OuterRef("pk"), kind=TimelineEvent.Kind.STATUS_CHANGED)
    first = (
        moves.filter(data__to__in=Incident.RESOLVED_OR_LATER_STATUSES)
        .order_by()
        .values("incident")
        .annotate(first=Min("occurred_at"))
        .values("first")
    )
    declared_by_system = TimelineEvent.objects.filter(
        incident=OuterRef("pk"), kind=TimelineEvent.Kind.DECLARED, actor__isnull=True
    )
    return incidents.annotate(
        first_resolved_at=Coalesce(Subquery(first), F("resolved_at")),
        reopened=Exists(moves.filter(data__reopened=True)),
        detected_by_alert=Exists(declared_by_system),
    )


# ---- Which incidents ---------------------------------------------------------------------------


def incidents_for_metrics(*, user, since=None, until=None, service=None, severity=None):
    """The incidents the metrics are about: visible to the user, not dismissed, not duplicates, in the period.

    since/until are aware datetimes on detected_at (since inclusive, until exclusive); service is a
    slug, a Service, or a list of either; severity a level, a Severity, or a list of either.
    """
    incidents = (
        Incident.objects.visible_to(user)
        .exclude(status=Incident.Status.DISMISSED)
        .filter(duplicate_of__isnull=True)
        .order_by()
    )
    if since is not None and until is not None and since >= until:
        raise MetricsError("The period's start must be before its end.")
    if since is not None:
        incidents = incidents.filter(detected_at__gte=since)
    if until is not None:
        incidents = incidents.filter(detected_at__lt=until)
    services = _as_list(service)
    if services:
        slugs = [s.slug if isinstance(s, Service) else s for s in services]
        links = Incident.services.through.objects.filter(incident_id=OuterRef("pk"), service__slug__in=slugs)
        incidents = incidents.filter(Exists(links))
    levels = _as_list(severity)
    if levels:
        incidents = incidents.filter(severity__level__in=[s.level if isinstance(s, Severity) else s for s in levels])
    return incidents


def _as_list(value):
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


# ---- Computation -------------------------------------------------------------------------------


def _round(value, digits=3):
    return None if value is None else round(float(value), digits)


def _sqlite_percentile(incidents, expression, count, fraction):
    """percentile_cont's answer with ORDER BY + OFFSET in the database: the two neighbours, interpolated."""
    position = fraction * (count - 1)
    low = math.floor(position)
    values = list(
        incidents.annotate(v=expression)
        .filter(v__isnull=False)
        .order_by("v")
        .values_list("v", flat=True)[low : low + 2]
    )
    if not values:
        return None
    if len(values) == 1 or position == low:
        return values[0]
    return values[0] + (position - low) * (values[1] - values[0])


def duration_stats(incidents, definitions=DURATIONS):
    """{key: {count, missing, mean, median, p90}} for these duration definitions, plus "_total",
    "_recurrences" and "_reopened". `incidents` carries with_lifecycle_facts()."""
    aggregates = {
        "_total": Count("id"),
        "_recurrences": Count("id", filter=Q(recurrence_of__isnull=False)),
        "_reopened": Count("id", filter=Q(reopened=True)),
    }
    postgres = _supports_percentile_cont()
    for d in definitions:
        expression = duration_expression(d)
        aggregates[f"{d.key}__count"] = Count(expression)
        aggregates[f"{d.key}__mean"] = Avg(expression)
        if d.detected_by:
            aggregates[f"{d.key}__scope"] = Count("id", filter=_detected_by(d.detected_by))
        if postgres:
            aggregates[f"{d.key}__median"] = PercentileCont(expression, 0.5)
            aggregates[f"{d.key}__p90"] = PercentileCont(expression, 0.9)
    row = incidents.aggregate(**aggregates)
    total = row["_total"]
    stats = {"_total": total, "_recurrences": row["_recurrences"], "_reopened": row["_reopened"]}
    for d in definitions:
        count = row[f"{d.key}__count"]
        if postgres:
            median, p90 = row[f"{d.key}__median"], row[f"{d.key}__p90"]
        elif count:
            expression = duration_expression(d)
            median = _sqlite_percentile(incidents, expression, count, 0.5)
            p90 = _sqlite_percentile(incidents, expression, count, 0.9)
        else:
            median = p90 = None
        stats[d.key] = {
            "count": count,
            "missing": row.get(f"{d.key}__scope", total) - count,
            "mean": _round(row[f"{d.key}__mean"]),
            "median": _round(median),
            "p90": _round(p90),
        }
    return stats


TRUNC = {"week": TruncWeek, "month": TruncMonth}
MAX_BUCKETS = {"week": 1100, "month": 250}  # about 21 years


def _utc_date(value):
    return value.astimezone(UTC).date() if isinstance(value, datetime) else value


def _bucket_start(value, period):
    """The first day (UTC) of the calendar week (Monday) or month holding `value`."""
    return _day_bucket_start(_utc_date(value), period)


@lru_cache(maxsize=8192)  # the roll-up's readers ask it for every day of a period, on every request
def _day_bucket_start(day, period):
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_bucket(day, period):
    if period == "week":
        return day + timedelta(days=7)
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def _buckets(first, last, period):
    days, day = [], first
    while day <= last:
        days.append(day)
        day = _next_bucket(day, period)
    return days


def _midnight(day):
    return datetime.combine(day, time.min, tzinfo=UTC)


def bucket_coverage(day, period, since=None, until=None):
    """Share (0-1) of the calendar bucket starting on `day` that lies inside [since, until)."""
    start, end = _midnight(day), _midnight(_next_bucket(day, period))
    inside_start = max(start, since) if since is not None else start
    inside_end = min(end, until) if until is not None else end
    return max(0.0, (inside_end - inside_start) / (end - start))


def period_buckets(period, since=None, until=None, found=()):
    """Every bucket start of the period: from since (or the first found) to until (or the last found)."""
    found = sorted(found)
    first = _bucket_start(since, period) if since is not None else (found[0] if found else None)
    last = (
        _bucket_start(until - timedelta(microseconds=1), period)
        if until is not None
        else (found[-1] if found else None)
    )
    if first is None or last is None:
        return list(found)
    if first > last:
        return []
    span = (last - first).days // (7 if period == "week" else 28)
    if span > MAX_BUCKETS[period]:
        raise MetricsError(f"The period is too long for a {period}ly series: choose a start within about 20 years.")
    return _buckets(first, last, period)


def frequency(incidents, period="week", since=None, until=None):
    """Incidents per calendar week or month (UTC), gaps as zero.

    {"series": [{"start": date, "count": n, "coverage": share of the bucket inside the period}],
     "total", "mean"}: mean is per full bucket, the total over the sum of the coverages.
    """
    rows = (
        incidents.annotate(bucket=TRUNC[period]("detected_at", tzinfo=UTC))
        .values("bucket")
        .annotate(n=Count("id"))
        .order_by("bucket")
    )
    return frequency_from_counts({_bucket_start(row["bucket"], period): row["n"] for row in rows}, period, since, until)


def frequency_from_counts(counts, period, since=None, until=None):
    """The frequency series from {bucket start: incidents} (see frequency)."""
    series = [
        {"start": day, "count": counts.get(day, 0), "coverage": _round(bucket_coverage(day, period, since, until), 4)}
        for day in period_buckets(period, since, until, counts)
    ]
    total = sum(counts.values())
    covered = sum(bucket_coverage(row["start"], period, since, until) for row in series)
    return {"series": series, "total": total, "mean": _round(total / covered) if covered else None}


def frequency_by_severity(incidents, period="week", since=None, until=None):
    """Incidents per week (or month) and severity level: [{"start", "level", "count"}] (no zero rows)."""
    rows = (
        incidents.annotate(bucket=TRUNC[period]("detected_at", tzinfo=UTC))
        .values("bucket", "severity__level")
        .annotate(n=Count("id"))
        .order_by("bucket", "severity__level")
    )
    return [
        {"start": _bucket_start(row["bucket"], period), "level": row["severity__level"], "count": row["n"]}
        for row in rows
    ]


def duration_trend(incidents, key, period="week"):
    """A duration's trend: [{"start", "count", "mean"}] per week or month of detection (weeks without one left out)."""
    definition = next(d for d in DURATIONS if d.key == key)
    expression = duration_expression(definition)
    rows = (
        with_lifecycle_facts(incidents)
        .annotate(bucket=TRUNC[period]("detected_at", tzinfo=UTC))
        .values("bucket")
        .annotate(n=Count(expression), mean=Avg(expression))
        .filter(n__gt=0)
        .order_by("bucket")
    )
    return [
        {"start": _bucket_start(row["bucket"], period), "count": row["n"], "mean": _round(row["mean"])} for row in rows
    ]


def severity_distribution(incidents):
    return severity_distribution_from_counts(
        dict(incidents.values_list("severity_id").annotate(n=Count("id")).order_by())
    )


def severity_distribution_from_counts(counts, severities=None):
    """{"items", "total"} from {severity id: incidents}; `severities`: every Severity in level order, when the
    caller has them."""
    total = sum(counts.values())
    items = [
        {
            "level": severity.level,
            "label": severity.label,
            "name": severity.name,
            "count": counts.get(severity.pk, 0),
            "share": _round(counts.get(severity.pk, 0) / total, 4) if total else None,
        }
        for severity in (Severity.objects.order_by("level") if severities is None else severities)
    ]
    return {"items": items, "total": total}


# Customer impact minutes: from when impact started (detection if unknown) to mitigation (resolution if
# it skipped mitigation; now while the incident is still open).
def impact_seconds_expression(prefix=""):
    """Seconds of customer impact of the incident at prefix ("" or "incident__")."""
    return Seconds(
        Coalesce(f"{prefix}mitigated_at", f"{prefix}resolved_at", Now()),
        Coalesce(f"{prefix}started_at", f"{prefix}detected_at"),
    )


def services_impact(incidents, only=None):
    """Per service touched by these incidents: incidents, impact minutes, customer reports; most impact first.

    [{"slug", "name", "incidents", "impact_minutes", "customer_reports"}]. An incident with several
    services counts for each of them. `only` (slugs) keeps the ranking to the services a filter chose.
    """
    through = Incident.services.through
    links = through.objects.filter(incident__in=incidents.values("pk"))
    if only:
        links = links.filter(service__slug__in=only)
    rows = links.values("service_id").annotate(
        n=Count("incident_id"),
        seconds=Sum(impact_seconds_expression("incident__")),
    )
    reports = reports_per_service(CustomerReport.objects.filter(incident__in=incidents.values("pk")))
    found = {row["service_id"]: (row["n"], row["seconds"] or 0) for row in rows}
    return _services_ranked(found, reports)


def services_impact_from(per_service, incidents, now, only=None, reports=None, services=None):
    """services_impact from the daily roll-up's per-service sums (incidents.rollups.Read.services, which
    already keeps to the service filter); an open incident's impact counts up to `now`. `reports`: these
    incidents' customer reports when the caller has them (incidents.rollups.Selection.reports, read from
    the reports' side), else found through `incidents`. `services`: every Service, when the caller has
    read them (else the ones ranked are read)."""
    now_us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    found = {
        service_id: (n, (ended_us + open_n * now_us - open_starts_us) / 1e6)
        for service_id, (n, ended_us, open_n, open_starts_us) in per_service.items()
        if n
    }
    if only:
        wanted = set(Service.objects.filter(slug__in=only).values_list("pk", flat=True))
        found = {pk: v for pk, v in found.items() if pk in wanted}
    if reports is None:
        reports = CustomerReport.objects.filter(incident__in=incidents.values("pk"))
    return _services_ranked(found, reports_per_service(reports), services)


# The two aggregates over customer reports are SQL around the ORM's query of the reports: built with the ORM
# they took longer to build than to run, on every dashboard request (issue 14). Every value is a parameter.


def query_sql(queryset):
    """(SQL, params) of a queryset, for hand-written SQL around it. One that can find nothing (.none(), an empty
    IN list) is written as a query that finds nothing, where sql_with_params() would raise EmptyResultSet."""
    return queryset.query.get_compiler(queryset.db, elide_empty=False).as_sql()


def sql_names(model, *fields):
    """The model's quoted table name, then each field's quoted column, for hand-written SQL."""
    quote = connection.ops.quote_name
    return (quote(model._meta.db_table), *(quote(model._meta.get_field(name).column) for name in fields))


def fetch_rows(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def report_counts(reports):
    """(reports, distinct customers among them) of a CustomerReport queryset."""
    sql, params = query_sql(reports.order_by().values("id", "customer_id"))
    ((count, customers),) = fetch_rows(
        f"SELECT COUNT(*), COUNT(DISTINCT report.customer_id) FROM ({sql}) report", params
    )
    return count, customers


def reports_per_service(reports):
    """{service id: reports} of a CustomerReport queryset: a report counts for each service of its incident."""
    sql, params = query_sql(reports.order_by().values("id", "incident_id"))
    links, incident, service = sql_names(Incident.services.through, "incident", "service")
    return dict(
        fetch_rows(
            f"SELECT {links}.{service}, COUNT(*) FROM ({sql}) report "
            f"INNER JOIN {links} ON {links}.{incident} = report.incident_id GROUP BY {links}.{service}",
            params,
        )
    )


def _services_ranked(found, reports, services=None):
    """[{"slug", "name", "incidents", "impact_minutes", "customer_reports"}], most impact first, from
    {service id: (incidents, impact seconds)} and {service id: customer reports}; `services`: every
    Service when already read."""
    if services is None:
        services = Service.objects.filter(pk__in=found).only("id", "slug", "name")
    else:
        services = [service for service in services if service.pk in found]
    result = [
        {
            "slug": service.slug,
            "name": service.name,
            "incidents": found[service.pk][0],
            "impact_minutes": _round(found[service.pk][1] / 60, 1),
            "customer_reports": reports.get(service.pk, 0),
        }
        for service in services
    ]
    result.sort(key=lambda r: (-r["impact_minutes"], -r["incidents"], r["slug"]))
    return result


def metrics_compute(*, user, since=None, until=None, service=None, severity=None):
    """Every metric for these filters, computed from the incidents: an ordered dict of key -> definition
    and values (see the module doc). incidents.rollups.metrics_read gives the same from the daily roll-up."""
    incidents = incidents_for_metrics(user=user, since=since, until=until, service=service, severity=severity)
    # Check the period before running the queries.
    period_buckets("week", since, until)
    stats = duration_stats(with_lifecycle_facts(incidents))
    return metrics_assemble(
        incidents,
        stats,
        frequencies={period: frequency(incidents, period, since, until) for period in ("week", "month")},
        severities=severity_distribution(incidents),
    )


def metrics_assemble(incidents, stats, *, frequencies, severities, reports=None):
    """The result of metrics_compute from its parts; customer reports (`reports`, or those of `incidents`)
    and the registered sources are read from the in-scope queryset."""
    definitions = {d.key: d for d in CORE_DEFINITIONS}
    total, recurrences, reopened = stats["_total"], stats["_recurrences"], stats["_reopened"]
    result = OrderedDict()
    for d in DURATIONS:
        result[d.key] = metric_result(d, **stats[d.key])
    result["incidents"] = metric_result(definitions["incidents"], count=total)
    for period in ("week", "month"):
        key = f"frequency_{period}"
        result[key] = metric_result(definitions[key], **frequencies[period])
    result["severity_distribution"] = metric_result(definitions["severity_distribution"], **severities)
    result["reopen_rate"] = metric_result(
        definitions["reopen_rate"], count=reopened, total=total, rate=_round(reopened / total, 4) if total else None
    )
    result["recurrence_rate"] = metric_result(
        definitions["recurrence_rate"],
        count=recurrences,
        total=total,
        rate=_round(recurrences / total, 4) if total else None,
    )
    if reports is None:
        reports = CustomerReport.objects.filter(incident__in=incidents.values("pk"))
    count, customers = report_counts(reports)
    result["customers_affected"] = metric_result(definitions["customers_affected"], count=customers)
    result["customer_reports"] = metric_result(definitions["customer_reports"], count=count)
    for fn, _defs in _sources:
        result.update(fn(incidents))
    return result


def incident_impact(incident):
    """Customer impact of one incident (see incidents.selectors.incident_impact)."""
    from .selectors import incident_impact as impact

    return impact(incident)


__all__ = [
    "CORE_DEFINITIONS",
    "DURATIONS",
    "MetricDefinition",
    "MetricsError",
    "duration_stats",
    "duration_trend",
    "frequency",
    "frequency_by_severity",
    "frequency_from_counts",
    "metrics_assemble",
    "fetch_rows",
    "query_sql",
    "sql_names",
    "severity_distribution_from_counts",
    "incident_impact",
    "incidents_for_metrics",
    "metric_definitions",
    "metric_result",
    "metric_series",
    "metric_series_register",
    "metric_source_register",
    "metrics_compute",
    "period_buckets",
    "with_lifecycle_facts",
    "services_impact",
    "services_impact_from",
    "severity_distribution",
]

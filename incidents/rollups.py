"""Daily roll-ups of the metrics (issue 14): the metrics and the dashboard read sums per UTC day instead
of every incident, so their cost follows the length of the period, not the number of incidents.

How they stay right:
- Every change that can move a figure records a timeline event in the service's transaction; for
  those kinds ``rollup_after_event`` recomputes the incident's day(s) of detection from the incidents
  themselves, in that same transaction, under a lock on the day (``MetricsRollupDay``). A committed
  change is therefore in the roll-up, and nothing else is: no nightly batch, no stale numbers.
- Every recomputation gives the day a new random version in that transaction (``_lock_day``). What a read
  sums from a period's rows is memoized under the versions of its days, read before the rows (``Read``):
  a committed change gives the next read another key, so a memoized sum is never a stale one.
- Recomputing a whole day (not adding deltas) makes the roll-up equal to a from-scratch computation
  by construction; ``rollup_rebuild`` is that computation for every day (and the way to fill the
  roll-up for history written without the services, e.g. bench/generate.py's COPY).

What is kept per (day, severity or all, service or all, restricted or not): counts, the sum of every
duration in microseconds (exact means), impact, and for every duration a histogram of logarithmic
buckets 0.8% wide (0 and under a second apart). Medians and p90 come from the merged histogram: the
true value lies in the bucket found, so the answer's rank error is at most that bucket's share of the
incidents; when that share is over 1% (few incidents, or many equal values) the exact percentile is
computed from the incidents instead. See docs/metrics.md, "How the figures are computed".
"""

import math
import secrets
import zlib
from array import array
from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from functools import reduce
from itertools import accumulate
from operator import or_

from django.db import connection, transaction
from django.db.models import BinaryField, Case, Exists, F, JSONField, Min, OuterRef, Q, Sum, Value, When
from django.utils import timezone

from . import metrics
from .models import (
    CustomerReport,
    Incident,
    IncidentMember,
    RoleAssignment,
    Service,
    Severity,
    TimelineEvent,
    sees_all_incidents,
    visible_incident_rows,
)
from .rollup_models import MetricsRollup, MetricsRollupDay, MetricsRollupState

DURATION_KEYS = tuple(d.key for d in metrics.DURATIONS)
GAMMA = 1.008
LOG_GAMMA = math.log(GAMMA)
BUCKETS = 2 + math.ceil(math.log(1e8) / LOG_GAMMA) + 1  # up to about three years; longer ones share the last
MAX_RANK_ERROR = 0.01
ZERO_BLOCK = bytes(4 * BUCKETS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)
# Timeline events after which a figure may have moved (notes, roles, alerts… do not move any).
ROLLUP_KINDS = {
    TimelineEvent.Kind.DECLARED,
    TimelineEvent.Kind.STATUS_CHANGED,
    TimelineEvent.Kind.ACKNOWLEDGED,
    TimelineEvent.Kind.SEVERITY_CHANGED,
    TimelineEvent.Kind.FIELDS_CHANGED,
    TimelineEvent.Kind.RESTRICTION_CHANGED,
}


_tables = {}


def rollup_tables_exist():
    """Whether this database has the roll-up tables. A database that recorded migration 0014 while it was
    still an empty placeholder (this session's dev databases) has not: it then works without the roll-up
    (figures computed from the incidents) instead of failing every incident change."""
    name = connection.settings_dict["NAME"]
    if name not in _tables:
        _tables[name] = MetricsRollup._meta.db_table in connection.introspection.table_names()
    return _tables[name]


def bucket_of(seconds):
    if seconds <= 0:
        return 0
    if seconds < 1:
        return 1
    return min(BUCKETS - 1, 2 + int(math.log(seconds) / LOG_GAMMA))


def bucket_bounds(bucket):
    if bucket == 0:
        return 0.0, 0.0
    if bucket == 1:
        return 0.0, 1.0
    return GAMMA ** (bucket - 2), GAMMA ** (bucket - 1)


def _day_start(day):
    return datetime.combine(day, time.min, tzinfo=UTC)


def utc_day(value):
    return value.astimezone(UTC).date()


# ---- accumulating incidents ------------------------------------------------------------------------


# The sums a roll-up row and a Totals share (columns of MetricsRollup, attributes of Totals).
SUM_FIELDS = (
    "incidents",
    "recurrences",
    "reopened",
    "detected_by_alert",
    "impact_ended_us",
    "impact_open",
    "impact_open_start_us",
)


class Totals:
    """Sums over a set of incidents; added together from roll-up rows and from incidents read live."""

    __slots__ = (*SUM_FIELDS, "counts", "sums", "histograms", "rows_packed")

    def __init__(self):
        self.incidents = self.recurrences = self.reopened = self.detected_by_alert = 0
        self.impact_ended_us = self.impact_open = self.impact_open_start_us = 0
        self.counts = dict.fromkeys(DURATION_KEYS, 0)
        self.sums = dict.fromkeys(DURATION_KEYS, 0)
        self.histograms = {key: None for key in DURATION_KEYS}  # array('I') or a packed int (see add_row)
        self.rows_packed = 0  # the roll-up rows' histograms, every duration's block in one int (see add_row)

    def add_incident(self, row):
        self.incidents += 1
        self.recurrences += row["recurrence_of_id"] is not None
        self.reopened += bool(row["reopened"])
        self.detected_by_alert += bool(row["detected_by_alert"])
        start = row["started_at"] or row["detected_at"]
        end = row["mitigated_at"] or row["resolved_at"]
        if end is not None:
            self.impact_ended_us += (end - start) // MICRO
        else:
            self.impact_open += 1
            self.impact_open_start_us += (start - EPOCH) // MICRO
        for d in metrics.DURATIONS:
            if d.detected_by and (d.detected_by == "alert") != bool(row["detected_by_alert"]):
                continue
            begin, finish = row[d.start], row[d.end]
            if begin is None or finish is None:
                continue
            micros = (finish - begin) // MICRO
            self.counts[d.key] += 1
            self.sums[d.key] += micros
            histogram = self.histograms[d.key]
            if histogram is None:
                histogram = self.histograms[d.key] = array("I", ZERO_BLOCK)
            elif not isinstance(histogram, array):
                histogram = self.histograms[d.key] = array("I", histogram.to_bytes(4 * BUCKETS, "little"))
            histogram[bucket_of(micros / 1e6)] += 1

    def copy(self):
        """An independent Totals with the same sums (histograms as arrays are copied: add_incident changes them)."""
        other = Totals()
        for name in SUM_FIELDS:
            setattr(other, name, getattr(self, name))
        other.counts, other.sums = dict(self.counts), dict(self.sums)
        other.histograms = {
            key: array("I", value) if isinstance(value, array) else value for key, value in self.histograms.items()
        }
        other.rows_packed = self.rows_packed
        return other

    def packed_histograms(self):
        blocks = b"".join(self.histogram(key).tobytes() for key in DURATION_KEYS)
        return zlib.compress(blocks, 1)

    def add_row(self, row, histograms=True):
        """Add a MetricsRollup (or another Totals). Histograms are added as packed integers: one big-int
        addition adds every bucket at once (32 bits a bucket never carry: counts stay far below 2**32).
        histograms=False: counts and sums only (no medians wanted)."""
        for name in SUM_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(row, name))
        if isinstance(row, Totals):
            for key in DURATION_KEYS:
                self.counts[key] += row.counts[key]
                self.sums[key] += row.sums[key]
            blocks = zlib.decompress(row.packed_histograms())
        else:
            durations = row.duration_sums if hasattr(row, "duration_sums") else row.durations
            for key, (count, total) in durations.items():
                if key in self.counts:
                    self.counts[key] += count
                    self.sums[key] += total
            if histograms:
                self.rows_packed += _row_packed(bytes(row.packed if hasattr(row, "packed") else row.histograms))
            return
        width = 4 * BUCKETS
        for i, key in enumerate(DURATION_KEYS):
            block = blocks[i * width : (i + 1) * width]
            if block == ZERO_BLOCK:
                continue
            packed = int.from_bytes(block, "little")
            current = self.histograms[key]
            self.histograms[key] = packed if current is None else _as_int(current) + packed

    def histogram(self, key):
        """The bucket counts of a duration, as an array."""
        value = self.histograms[key]
        if self.rows_packed:
            from_rows = (self.rows_packed >> (DURATION_KEYS.index(key) * 32 * BUCKETS)) & BLOCK_MASK
            if from_rows:
                value = from_rows if value is None else _as_int(value) + from_rows
        if value is None:
            return array("I", ZERO_BLOCK)
        if isinstance(value, array):
            return value
        return array("I", value.to_bytes(4 * BUCKETS, "little"))


BLOCK_MASK = (1 << (32 * BUCKETS)) - 1
_unpacked = {}  # a row's compressed histograms -> the same as one int (see _row_packed)
UNPACKED_KEPT = 512  # rows: a year of days, restricted apart, or the last 90 days for a few filters


def _row_packed(blob):
    """A roll-up row's histograms (every duration's block, in DURATION_KEYS order) as one little-endian int:
    adding two adds every bucket of every duration at once (32 bits a bucket never carry). Memoized by the
    compressed bytes themselves, so an answer can never be stale: a recomputed day writes new bytes; the
    days of a period already read are not decompressed again (emptied when it holds UNPACKED_KEPT rows)."""
    if not blob:
        return 0
    packed = _unpacked.get(blob)
    if packed is None:
        if len(_unpacked) >= UNPACKED_KEPT:
            _unpacked.clear()
        packed = _unpacked[blob] = int.from_bytes(zlib.decompress(blob), "little")
    return packed


_summed = {}  # the compressed histograms of a set of rows -> the sum of their _row_packed
SUMS_KEPT = 64


def _rows_packed(blobs):
    """The sum of _row_packed over these rows' compressed histograms, memoized by the bytes themselves (the
    same period read again adds nothing; a day recomputed since makes another key)."""
    total = _summed.get(blobs)
    if total is None:
        if len(_summed) >= SUMS_KEPT:
            _summed.clear()
        total = _summed[blobs] = sum(_row_packed(blob) for blob in blobs)
    return total


def _as_int(histogram):
    return int.from_bytes(histogram.tobytes(), "little") if isinstance(histogram, array) else histogram


FIELDS = (
    "pk",
    "severity_id",
    "is_restricted",
    "recurrence_of_id",
    "started_at",
    "detected_at",
    "acknowledged_at",
    "mitigated_at",
    "resolved_at",
)


def _incident_rows_bulk(incidents, events):
    """_incident_rows for many incidents at once: the lifecycle facts (see metrics.with_lifecycle_facts) from
    three aggregate queries over `events` (their timeline rows) instead of three subqueries per incident."""
    moves = events.filter(kind=TimelineEvent.Kind.STATUS_CHANGED).order_by()
    first = dict(
        moves.filter(data__to__in=Incident.RESOLVED_OR_LATER_STATUSES)
        .values("incident_id")
        .annotate(first=Min("occurred_at"))
        .values_list("incident_id", "first")
    )
    reopened = set(moves.filter(data__reopened=True).values_list("incident_id", flat=True).distinct())
    by_alert = set(
        events.filter(kind=TimelineEvent.Kind.DECLARED, actor__isnull=True)
        .order_by()
        .values_list("incident_id", flat=True)
        .distinct()
    )
    rows = list(incidents.values(*FIELDS))
    for row in rows:
        row["first_resolved_at"] = first.get(row["pk"], row["resolved_at"])
        row["reopened"] = row["pk"] in reopened
        row["detected_by_alert"] = row["pk"] in by_alert
    return rows, _services_of(rows)


def _services_of(rows):
    services = defaultdict(list)
    ids = [row["pk"] for row in rows]
    for chunk in range(0, len(ids), 20000):
        links = Incident.services.through.objects.filter(incident_id__in=ids[chunk : chunk + 20000])
        for incident_id, service_id in links.values_list("incident_id", "service_id"):
            services[incident_id].append(service_id)
    return services


def _incident_rows(incidents):
    """The per-incident values the roll-up needs, with their service ids: (rows, {incident id: [service ids]})."""
    rows = list(
        metrics.with_lifecycle_facts(incidents).values(
            "pk",
            "severity_id",
            "is_restricted",
            "recurrence_of_id",
            "reopened",
            "detected_by_alert",
            "started_at",
            "detected_at",
            "acknowledged_at",
            "mitigated_at",
            "first_resolved_at",
            "resolved_at",
        )
    )
    return rows, _services_of(rows)


def _counted(queryset):
    return queryset.exclude(status=Incident.Status.DISMISSED).filter(duplicate_of__isnull=True).order_by()


# ---- writing -----------------------------------------------------------------------------------------


def rollup_day_compute(day, rows=None, services=None, keys=None):
    """{(severity id or 0, service id or 0, restricted): Totals} for the incidents detected on `day` (UTC)
    (their rows and services read here unless given); only the given keys when `keys` is a set."""
    if rows is None:
        start = _day_start(day)
        incidents = _counted(Incident.objects.filter(detected_at__gte=start, detected_at__lt=start + timedelta(days=1)))
        if keys is not None:  # only the incidents that can fall in those rows
            incidents = incidents.filter(is_restricted__in={key[2] for key in keys})
        rows, services = _incident_rows(incidents)
    totals = defaultdict(Totals)
    for row in rows:
        for severity_id in (0, row["severity_id"]):
            for service_id in (0, *services.get(row["pk"], ())):
                key = (severity_id, service_id, row["is_restricted"])
                if keys is None or key in keys:
                    totals[key].add_incident(row)
    return totals


def _rollup_rows(day, totals):
    return [
        MetricsRollup(
            day=day,
            severity_id=severity_id,
            service_id=service_id,
            restricted=restricted,
            incidents=t.incidents,
            recurrences=t.recurrences,
            reopened=t.reopened,
            detected_by_alert=t.detected_by_alert,
            impact_ended_us=t.impact_ended_us,
            impact_open=t.impact_open,
            impact_open_start_us=t.impact_open_start_us,
            durations={key: [t.counts[key], t.sums[key]] for key in DURATION_KEYS if t.counts[key]},
            histograms=t.packed_histograms(),
        )
        for (severity_id, service_id, restricted), t in totals.items()
    ]


def _lock_day(day):
    """Lock the day's row (made when missing) for its recomputation, giving it a new version: the UPDATE takes
    the row lock as SELECT … FOR UPDATE did. The version is random, so that what readers memoize under the
    versions of the days they read (see Read) is never reused for other contents, not even after a rollback
    or with a clock that stands still."""
    MetricsRollupDay.objects.get_or_create(day=day)
    MetricsRollupDay.objects.filter(day=day).update(version=secrets.randbits(62))


@transaction.atomic
def rollup_days_refresh(days, keys=None):
    """Recompute these UTC days from their incidents, each under its day lock (taken in date order); only
    the rows of `keys` ((severity id or 0, service id or 0, restricted)) when given."""
    for day in sorted(set(days)):
        _lock_day(day)
        # Read after the lock: a change committed meanwhile by another transaction is included.
        rows = _rollup_rows(day, rollup_day_compute(day, keys=keys))
        stale = MetricsRollup.objects.filter(day=day)
        if keys is not None:
            stale = stale.filter(
                reduce(or_, (Q(severity_id=a, service_id=b, restricted=c) for a, b, c in keys), Q(pk__in=[]))
            )
        stale.delete()
        MetricsRollup.objects.bulk_create(rows)


@transaction.atomic
def _month_refresh(first, end):
    """Recompute the days [first, end) with one read of their incidents (the rebuild's path)."""
    days = []
    day = first
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    for day in days:
        _lock_day(day)
    start, stop = _day_start(first), _day_start(end)
    incidents = _counted(Incident.objects.filter(detected_at__gte=start, detected_at__lt=stop))
    events = TimelineEvent.objects.filter(incident__detected_at__gte=start, incident__detected_at__lt=stop)
    rows, services = _incident_rows_bulk(incidents, events)
    by_day = defaultdict(list)
    for row in rows:
        by_day[utc_day(row["detected_at"])].append(row)
    MetricsRollup.objects.filter(day__gte=first, day__lt=end).delete()
    for day in days:
        MetricsRollup.objects.bulk_create(
            _rollup_rows(day, rollup_day_compute(day, by_day.get(day, []), services)), batch_size=500
        )


def rollup_after_event(*, incident, kind, data, occurred_at):
    """Called by incidents.services.timeline_event_record in the service's transaction: when the event may
    have moved a figure (its kind, or it acknowledged the incident), recompute the rows of the incident's
    day that it belongs or belonged to (its severity, services and restriction before and after)."""
    if not rollup_tables_exist():
        return
    current = Incident.objects.values("detected_at", "acknowledged_at", "severity_id", "is_restricted").get(
        pk=incident.pk
    )
    if kind not in ROLLUP_KINDS and current["acknowledged_at"] != occurred_at:
        return
    data = data or {}
    days = {utc_day(current["detected_at"])}
    severities = {0, current["severity_id"]}
    services = {
        0,
        *Incident.services.through.objects.filter(incident_id=incident.pk).values_list("service_id", flat=True),
    }
    restricted = {current["is_restricted"]}
    if kind == TimelineEvent.Kind.FIELDS_CHANGED:
        if data.get("detected_at") and data["detected_at"][0]:
            days.add(utc_day(datetime.fromisoformat(data["detected_at"][0])))
        if "services" in data:
            services |= set(Service.objects.filter(slug__in=data["services"][0]).values_list("pk", flat=True))
    elif kind == TimelineEvent.Kind.SEVERITY_CHANGED:
        severities |= set(Severity.objects.filter(level=data.get("from")).values_list("pk", flat=True))
    elif kind == TimelineEvent.Kind.RESTRICTION_CHANGED:
        restricted = {True, False}
    keys = {(a, b, c) for a in severities for b in services for c in restricted}
    rollup_days_refresh(days, keys=keys)


def rollup_rebuild(*, log=None):
    """Recompute every day from the incidents (from scratch), newest month first (so that recent periods
    are right early in a long rebuild), then mark the roll-up built."""
    first = Incident.objects.order_by("detected_at").values_list("detected_at", flat=True).first()
    last = Incident.objects.order_by("-detected_at").values_list("detected_at", flat=True).first()
    stale = set(MetricsRollupDay.objects.values_list("day", flat=True))
    if first is not None:
        oldest = utc_day(first).replace(day=1)
        month = utc_day(last).replace(day=1)
        while month >= oldest:
            following = metrics._next_bucket(month, "month")
            _month_refresh(month, following)
            stale = {day for day in stale if not month <= day < following}
            if log:
                log(f"rolled up {month:%Y-%m}")
            month = (month - timedelta(days=1)).replace(day=1)
    for day in stale:  # days whose incidents have all gone
        rollup_days_refresh([day])
    MetricsRollupState.objects.all().delete()
    MetricsRollupState.objects.create(built_at=timezone.now())


def rollup_state():
    """(id, built_at) of the mark that the roll-up is built, or None (then the metrics are computed live). A
    rebuild makes a new mark: part of the key of what a read memoizes."""
    if not rollup_tables_exist():
        return None
    return MetricsRollupState.objects.values_list("pk", "built_at").first()


def rollup_built():
    return rollup_state() is not None


# ---- reading -----------------------------------------------------------------------------------------


def _full_days(since, until):
    """(first full day, day after the last full day) inside [since, until); either may be None (open)."""
    first = None
    if since is not None:
        first = utc_day(since)
        if _day_start(first) < since:
            first += timedelta(days=1)
    end = utc_day(until) if until is not None else None
    return first, end


class Selection:
    """Which roll-up rows and which incidents (read live) make up one metrics request."""

    def __init__(
        self, *, user, since, until, service_ids, severity_ids, service_slugs=(), severity_levels=(), state=None
    ):
        self.user, self.since, self.until = user, since, until
        self.service_ids, self.severity_ids = service_ids, severity_ids
        self.service_slugs, self.severity_levels = list(service_slugs), list(severity_levels)
        self.sees_all = not _needs_live_restricted(user)
        self.first_day, self.end_day = _full_days(since, until)
        self.state = state  # rollup_state() when it was read
        self._own = {}  # the incidents this person holds a role in or is a member of, read once (see own_incidents)
        self._versions = {}  # the days' versions, read once for this selection and those of for_period
        self._incidents = self._reports = None
        self.severity_list = None  # every Severity in level order, when the caller has read them

    def for_period(self, since, until):
        """The same person and filters over another period (e.g. the period before, for the change)."""
        other = Selection(
            user=self.user,
            since=since,
            until=until,
            service_ids=self.service_ids,
            severity_ids=self.severity_ids,
            service_slugs=self.service_slugs,
            severity_levels=self.severity_levels,
            state=self.state,
        )
        other._own, other._versions, other.severity_list = self._own, self._versions, self.severity_list
        return other

    def versions_also_from(self, since):
        """Before the first read: a period starting at `since` will be read too (for_period), so the days'
        versions are read for both in one query."""
        first, _end = _full_days(since, None)
        self._versions["from"] = first

    def memo_key(self, *parts):
        """What a read of this selection's roll-up rows is memoized under: the roll-up's mark, the filters,
        whether restricted rows are read, the days, and the version of every day rolled up in the period. The
        versions are read before the rows: a day recomputed since changes the key, never what a key holds."""
        return (
            self.state,
            tuple(self.service_ids),
            tuple(self.severity_ids),
            self.sees_all,
            self.first_day,
            self.end_day,
            self.day_versions(),
            *parts,
        )

    def day_versions(self):
        """((day, version), …) of the rolled-up days of the period, in day order (one query, shared with the
        selections of for_period when it covers their days)."""
        shared = self._versions
        if not _covers(shared.get("span"), self.first_day, self.end_day):
            first, hint = self.first_day, shared.get("from")
            if first is not None and hint is not None:
                first = min(first, hint)
            days = MetricsRollupDay.objects.order_by("day")
            if first is not None:
                days = days.filter(day__gte=first)
            if self.end_day is not None:
                days = days.filter(day__lt=self.end_day)
            shared["span"], shared["days"] = (first, self.end_day), tuple(days.values_list("day", "version"))
        first, end = self.first_day, self.end_day
        return tuple(
            (day, version)
            for day, version in shared["days"]
            if (first is None or day >= first) and (end is None or day < end)
        )

    def own_incidents(self):
        """Ids of the incidents this person holds (or held) a role in or is a member of: two index-only reads
        by person (a few rows), not a join that the planner may answer by scanning every restricted incident.
        Shared by the selections of one request (for_period)."""
        if "ids" not in self._own:
            roles = RoleAssignment.objects.filter(user=self.user).order_by().values_list("incident_id", flat=True)
            memberships = IncidentMember.objects.filter(user=self.user).order_by().values_list("incident_id", flat=True)
            self._own["ids"] = set(roles.union(memberships))
        return self._own["ids"]

    def rows(self):
        return self.rows_by()

    def rows_by(self, *, severity=False, service=False, severity_and_total=False):
        """The rows for the filters: one per day (all severities and services), or one per day and
        severity (severity=True), or per day and service (service=True); severity_and_total=True: both the
        rows of rows() and those of rows_by(severity=True) at once (severity_id 0: the totals)."""
        rows = MetricsRollup.objects.all()
        if severity_and_total and not self.severity_ids:
            pass  # every severity row, and the all-severities one
        elif severity and not self.severity_ids:
            rows = rows.exclude(severity_id=0)
        else:
            rows = rows.filter(severity_id__in=self.severity_ids or [0])
        if service and not self.service_ids:
            rows = rows.exclude(service_id=0)
        else:
            rows = rows.filter(service_id__in=self.service_ids or [0])
        if not self.sees_all:
            rows = rows.filter(restricted=False)
        if self.first_day is not None:
            rows = rows.filter(day__gte=self.first_day)
        if self.end_day is not None:
            rows = rows.filter(day__lt=self.end_day)
        return rows

    def incidents(self):
        """Every in-scope incident (for what is read from the incidents: customer reports, action items).
        Built once per selection (a queryset: each use runs its own query)."""
        if self._incidents is None:
            self._incidents = metrics.incidents_for_metrics(
                user=self.user,
                since=self.since,
                until=self.until,
                service=self.service_slugs,
                severity=self.severity_levels,
            )
        return self._incidents

    def reports(self):
        """The in-scope incidents' customer reports, read from the reports' side (a join per report,
        not a pass over every incident of the period). Built once per selection (a queryset)."""
        if self._reports is None:
            self._reports = self._reports_of_scope()
        return self._reports

    def _reports_of_scope(self):
        reports = CustomerReport.objects.filter(incident__isnull=False, incident__duplicate_of__isnull=True).exclude(
            incident__status=Incident.Status.DISMISSED
        )
        if self.since is not None:
            reports = reports.filter(incident__detected_at__gte=self.since)
        if self.until is not None:
            reports = reports.filter(incident__detected_at__lt=self.until)
        if self.service_ids:
            links = Incident.services.through.objects.filter(
                incident_id=OuterRef("incident_id"), service_id__in=self.service_ids
            )
            reports = reports.filter(Exists(links))
        if self.severity_ids:
            reports = reports.filter(incident__severity_id__in=self.severity_ids)
        return visible_incident_rows(reports.order_by(), self.user)

    def live_incidents(self):
        """Incidents not in the rows read: the partial days at the edges, and the restricted incidents
        this person may see (when they may not see them all). None when there are none to read."""
        edges = Q()
        if self.first_day is not None and self.since is not None and _day_start(self.first_day) > self.since:
            edges |= Q(detected_at__lt=_day_start(self.first_day))
        if self.end_day is not None and self.until is not None and _day_start(self.end_day) < self.until:
            edges |= Q(detected_at__gte=_day_start(self.end_day))
        if self.first_day is not None and self.end_day is not None and self.first_day >= self.end_day:
            edges = Q(pk__isnull=False)  # shorter than a day: all of it live
        condition = edges
        if not self.sees_all:
            # Restricted incidents this person may see, found from their own roles and memberships (a few),
            # not by checking every restricted incident of the period.
            ids = self.own_incidents()
            if ids:
                condition |= Q(pk__in=ids, is_restricted=True)
        return self.incidents().filter(condition) if condition else None


def _covers(span, first, end):
    """Whether the days read for `span` ((first, end), None: open) include the days [first, end)."""
    if span is None:
        return False
    span_first, span_end = span
    return (span_first is None or (first is not None and first >= span_first)) and (
        span_end is None or (end is not None and end <= span_end)
    )


def _needs_live_restricted(user):
    return not sees_all_incidents(user)


def selection_for(*, user, since=None, until=None, service=None, severity=None):
    """A Selection when the roll-up can answer (built, at most one service), else None (compute live)."""
    services = metrics._as_list(service)
    state = rollup_state() if len(services) <= 1 else None
    if state is None:
        return None
    slugs = [s.slug if isinstance(s, Service) else s for s in services]
    levels = [s.level if isinstance(s, Severity) else s for s in metrics._as_list(severity)]
    service_ids = list(Service.objects.filter(slug__in=slugs).values_list("pk", flat=True)) if slugs else []
    severity_ids = list(Severity.objects.filter(level__in=levels).values_list("pk", flat=True)) if levels else []
    if (slugs and not service_ids) or (levels and not severity_ids):
        return None
    return Selection(
        user=user,
        since=since,
        until=until,
        service_ids=service_ids,
        severity_ids=severity_ids,
        service_slugs=slugs,
        severity_levels=levels,
        state=state,
    )


SERVICE_SUMS = ("incidents", "impact_ended_us", "impact_open", "impact_open_start_us")
TREND_KEYS = ("mtta", "mttr")  # the durations the dashboard draws week by week


class Read:
    """What one request reads: the totals, counts per day and severity, the weekly trends' duration sums,
    per service. Rows are read as tuples (no model instances); the per-service sums are added up by the
    database (one row a service, whatever the length of the period)."""

    def __init__(self, selection, histograms=True):
        self.histograms = histograms
        rows = _rows_read(selection, histograms)
        self.total = rows.total.copy()
        self.per_day = defaultdict(int, rows.per_day)  # day -> incidents
        self.per_day_severity = defaultdict(int, rows.per_day_severity)  # (day, severity id) -> incidents
        # (day, "mtta" or "mttr") -> [count, sum µs]
        self.per_day_duration = {key: list(cell) for key, cell in rows.per_day_duration.items()}
        self.per_service = None  # id -> [incidents, ended µs, open, open starts], read by services()
        live = selection.live_incidents()
        self.live, services = _incident_rows(live) if live is not None else ([], {})
        for row in self.live:
            self.total.add_incident(row)
            day = utc_day(row["detected_at"])
            self.per_day[day] += 1
            self.per_day_severity[(day, row["severity_id"])] += 1
            for d in metrics.DURATIONS:
                if d.key in TREND_KEYS and row[d.start] and row[d.end]:
                    cell = self.per_day_duration.setdefault((day, d.key), [0, 0])
                    cell[0] += 1
                    cell[1] += (row[d.end] - row[d.start]) // MICRO
        self._selection, self._live_services = selection, services

    def services(self):
        """{service id: [incidents, impact ended µs, impact open, sum of open starts µs]} (rows, then live)."""
        if self.per_service is not None:
            return self.per_service
        self.per_service = defaultdict(lambda: [0, 0, 0, 0])
        for service_id, values in _service_sums(self._selection).items():
            self.per_service[service_id] = list(values)
        wanted = set(self._selection.service_ids)
        for row in self.live:
            start = row["started_at"] or row["detected_at"]
            end = row["mitigated_at"] or row["resolved_at"]
            for service_id in self._live_services.get(row["pk"], ()):
                if wanted and service_id not in wanted:
                    continue
                cell = self.per_service[service_id]
                cell[0] += 1
                if end is not None:
                    cell[1] += (end - start) // MICRO
                else:
                    cell[2] += 1
                    cell[3] += (start - EPOCH) // MICRO
        return self.per_service


class RowsRead:
    """The sums of one selection's roll-up rows (before the incidents read live are added): the totals, and
    incidents per day, per day and severity, and the trends' duration sums per day."""

    def __init__(self, selection, histograms):
        self.total = Totals()
        self.per_day = defaultdict(int)
        self.per_day_severity = defaultdict(int)
        self.per_day_duration = {}
        # One query for the totals (severity 0, or the severity filtered on) and the rows per severity; only
        # the totals' histograms are fetched.
        rows = selection.rows_by(severity_and_total=True)
        filtered = bool(selection.severity_ids)  # then every row is both a total and a severity's row

        def of_totals(field, empty, output_field):  # a column only the totals need: left empty in the others
            if filtered:
                return F(field)
            return Case(When(severity_id=0, then=F(field)), default=Value(empty), output_field=output_field)

        rows = rows.annotate(duration_sums=of_totals("durations", None, JSONField()))
        if histograms:
            rows = rows.annotate(packed=of_totals("histograms", b"", BinaryField()))
        columns = ("day", "severity_id", *SUM_FIELDS, "duration_sums", *(("packed",) if histograms else ()))
        per_day, per_day_duration, per_day_severity = self.per_day, self.per_day_duration, self.per_day_severity
        blobs = []
        for row in rows.values_list(*columns, named=True):  # a few hundred rows a year
            if row.severity_id or filtered:
                per_day_severity[(row.day, row.severity_id)] += row.incidents
            if row.severity_id and not filtered:
                continue
            self.total.add_row(row, histograms=False)
            if histograms:
                blobs.append(bytes(row.packed))
            per_day[row.day] += row.incidents
            for key in TREND_KEYS:
                found = row.duration_sums.get(key)
                if found:
                    cell = per_day_duration.setdefault((row.day, key), [0, 0])
                    cell[0] += found[0]
                    cell[1] += found[1]
        self.total.rows_packed += _rows_packed(tuple(blobs))


_reads = {}  # Selection.memo_key(…) -> RowsRead, or the per-service sums
READS_KEPT = 64  # periods and filters (emptied when full)


def _memoized(key, compute):
    """compute() memoized under `key` (see Selection.memo_key: the versions of the days read are part of it,
    so a committed change is in the next read; what one request reads is never written back)."""
    found = _reads.get(key)
    if found is None:
        if len(_reads) >= READS_KEPT:
            _reads.clear()
        found = _reads[key] = compute()
    return found


def _rows_read(selection, histograms):
    return _memoized(selection.memo_key("rows", histograms), lambda: RowsRead(selection, histograms))


def _service_sums(selection):
    """{service id: (incidents, impact ended µs, impact open, sum of open starts µs)} from the roll-up rows
    per service (summed by the database: one row a service, whatever the length of the period)."""

    def compute():
        rows = (
            selection.rows_by(service=True)
            .order_by()
            .values("service_id")
            .annotate(**{f"sum_{name}": Sum(name) for name in SERVICE_SUMS})
            .values_list("service_id", *(f"sum_{name}" for name in SERVICE_SUMS))
        )
        return {service_id: tuple(int(value or 0) for value in values) for service_id, *values in rows}

    return _memoized(selection.memo_key("services"), compute)


def percentile(histogram, count, fraction, cumulative=None):
    """(value, rank error bound) of the continuous percentile, from bucket counts.

    The value at rank fraction*(count-1) lies in the bucket found (the first whose running total passes
    the rank); the answer is interpolated inside it (geometrically), so its rank is off by at most the
    bucket's count: the bound returned, as a share. `cumulative`: the running totals of `histogram`
    (itertools.accumulate), when several percentiles of one histogram are wanted.
    """
    if not count:
        return None, 0.0
    rank = fraction * (count - 1)
    if cumulative is None:
        cumulative = list(accumulate(histogram))
    bucket = bisect_right(cumulative, rank)
    if bucket == len(cumulative):
        return None, 1.0
    if bucket == 0:
        return 0.0, 0.0  # exactly zero: no error
    n = histogram[bucket]
    seen = cumulative[bucket] - n
    low, high = bucket_bounds(bucket)
    position = (rank - seen + 0.5) / n
    value = low * (high / low) ** position if low > 0 else high * position
    return value, n / count


def _stats_from(total, selection, percentiles=True):
    """duration_stats' shape from roll-up totals; percentiles from the histograms, exact when their rank
    error bound would be over 1% (none at all with percentiles=False)."""
    stats = {"_total": total.incidents, "_recurrences": total.recurrences, "_reopened": total.reopened}
    exact = []
    for d in metrics.DURATIONS:
        count = total.counts[d.key]
        in_scope = total.incidents
        if d.detected_by:
            in_scope = (
                total.detected_by_alert if d.detected_by == "alert" else total.incidents - total.detected_by_alert
            )
        median = p90 = None
        if count and percentiles:
            histogram = total.histogram(d.key)
            cumulative = list(accumulate(histogram))
            median, median_error = percentile(histogram, count, 0.5, cumulative)
            p90, p90_error = percentile(histogram, count, 0.9, cumulative)
            if max(median_error, p90_error) > MAX_RANK_ERROR:
                exact.append(d)
        stats[d.key] = {
            "count": count,
            "missing": in_scope - count,
            "mean": metrics._round(total.sums[d.key] / count / 1e6) if count else None,
            "median": metrics._round(median),
            "p90": metrics._round(p90),
        }
    if exact:
        # All durations at once, so that the number of queries does not depend on which ones needed it.
        found = metrics.duration_stats(metrics.with_lifecycle_facts(selection.incidents()))
        for d in exact:
            stats[d.key]["median"], stats[d.key]["p90"] = found[d.key]["median"], found[d.key]["p90"]
    return stats


def metrics_read(
    *, user, since=None, until=None, service=None, severity=None, read=None, percentiles=True, selection=None
):
    """metrics.metrics_compute's result, from the daily roll-up when it can answer (it is built and at
    most one service is asked for), else computed from the incidents. `read`: a Read of the same
    selection already made in this request (the dashboard's), not read again; `selection`: the
    Selection of these arguments when the caller has it (Selection.for_period), not looked up again."""
    metrics.period_buckets("week", since, until)  # refuse a bad period first
    if since is not None and until is not None and since >= until:
        raise metrics.MetricsError("The period's start must be before its end.")
    if read is not None:
        selection = read._selection
    if selection is None:
        selection = selection_for(user=user, since=since, until=until, service=service, severity=severity)
    if selection is None:
        return metrics.metrics_compute(user=user, since=since, until=until, service=service, severity=severity)
    read = read or Read(selection, histograms=percentiles)
    frequencies = {}
    for period in ("week", "month"):
        counts = defaultdict(int)
        for day, n in read.per_day.items():
            if n:
                counts[metrics._bucket_start(day, period)] += n
        frequencies[period] = metrics.frequency_from_counts(dict(counts), period, since, until)
    severities = defaultdict(int)
    for (_day, severity_id), n in read.per_day_severity.items():
        severities[severity_id] += n
    return metrics.metrics_assemble(
        selection.incidents(),
        _stats_from(read.total, selection, percentiles=read.histograms),
        frequencies=frequencies,
        severities=metrics.severity_distribution_from_counts(dict(severities), selection.severity_list),
        reports=selection.reports(),
    )

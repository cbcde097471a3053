"""The product's URLs plus the bare endpoints the metrics benchmark compares against.

/bench/metrics/raw/?user=<id>[&days=N | &since=…&until=…] runs the aggregate SQL the metrics endpoint needs, written by
hand (one aggregate with percentile_cont for every duration, weekly and monthly counts, the severity
mix, customer reports and action items), with the same visibility rule for that user, and answers JSON.
/bench/metrics/raw-dashboard/?user=<id>&days=N adds what the dashboard page draws besides the metrics
(incidents per week and severity, weekly MTTA/MTTR means, services by impact, open action items by
age, overdue action items per service). No authentication, no ORM, no serializers, no templates.
"""

from datetime import datetime, timedelta

from django.db import connection
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone

from incidents_site.urls import urlpatterns as product_urlpatterns

DURATIONS = {
    "mttd": ("started_at", "detected_at"),
    "mtta": ("detected_at", "acknowledged_at"),
    "time_to_mitigate": ("detected_at", "mitigated_at"),
    "mttr": ("detected_at", "resolved_at"),
    "mttr_from_start": ("started_at", "resolved_at"),
}


def _scope(request):
    """The WHERE clause over incidents_incident i (and its parameters) the metrics apply for this request."""
    user = int(request.GET["user"])
    where = [
        "i.status <> 'dismissed'",
        "i.duplicate_of_id IS NULL",
        "(NOT i.is_restricted"
        " OR EXISTS (SELECT 1 FROM incidents_roleassignment r WHERE r.incident_id = i.id AND r.user_id = %s)"
        " OR EXISTS (SELECT 1 FROM incidents_incidentmember m WHERE m.incident_id = i.id AND m.user_id = %s))",
    ]
    params = [user, user]
    if request.GET.get("days"):
        now = timezone.now()
        where.append("i.detected_at >= %s AND i.detected_at < %s")
        params += [now - timedelta(days=int(request.GET["days"])), now]
    if request.GET.get("since"):
        where.append("i.detected_at >= %s")
        params.append(datetime.fromisoformat(request.GET["since"].replace("Z", "+00:00")))
    if request.GET.get("until"):
        where.append("i.detected_at < %s")
        params.append(datetime.fromisoformat(request.GET["until"].replace("Z", "+00:00")))
    return " AND ".join(where), params


def _rows(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _table_exists(name):
    return name in connection.introspection.table_names()


def raw_metrics(where, params):
    columns = ["count(*)", "count(*) FILTER (WHERE i.recurrence_of_id IS NOT NULL)"]
    for start, end in DURATIONS.values():
        d = f"EXTRACT(EPOCH FROM (i.{end} - i.{start}))::double precision"
        columns += [
            f"count({d})",
            f"avg({d})",
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {d})",
            f"percentile_cont(0.9) WITHIN GROUP (ORDER BY {d})",
        ]
    row = _rows(f"SELECT {', '.join(columns)} FROM incidents_incident i WHERE {where}", params)[0]
    out = {"incidents": row[0], "recurrences": row[1]}
    for n, key in enumerate(DURATIONS):
        count, mean, median, p90 = row[2 + 4 * n : 6 + 4 * n]
        out[key] = {"count": count, "missing": row[0] - count, "mean": mean, "median": median, "p90": p90}
    for period in ("week", "month"):
        out[f"per_{period}"] = [
            (start.date().isoformat(), n)
            for start, n in _rows(
                f"SELECT date_trunc('{period}', i.detected_at AT TIME ZONE 'UTC') AS b, count(*) "
                f"FROM incidents_incident i WHERE {where} GROUP BY b ORDER BY b",
                params,
            )
        ]
    counts = dict(_rows(f"SELECT i.severity_id, count(*) FROM incidents_incident i WHERE {where} GROUP BY 1", params))
    out["severity"] = [
        (level, label, name, counts.get(pk, 0))
        for pk, level, label, name in _rows("SELECT id, level, label, name FROM incidents_severity ORDER BY level", [])
    ]
    reports, customers = _rows(
        "SELECT count(*), count(DISTINCT customer_id) FROM incidents_customerreport "
        f"WHERE incident_id IN (SELECT i.id FROM incidents_incident i WHERE {where})",
        params,
    )[0]
    out["customer_reports"], out["customers_affected"] = reports, customers
    if _table_exists("postmortems_actionitem"):
        out["action_items"] = _rows(
            "SELECT count(*), count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'wont_do'), "
            "count(*) FILTER (WHERE status IN ('open', 'in_progress') AND due_date < CURRENT_DATE) "
            f"FROM postmortems_actionitem WHERE incident_id IN (SELECT i.id FROM incidents_incident i WHERE {where})",
            params,
        )[0]
    return out


def raw_dashboard_extra(where, params):
    week = "date_trunc('week', i.detected_at AT TIME ZONE 'UTC')"
    out = {
        "per_week_severity": _rows(
            f"SELECT {week} AS b, s.level, count(*) FROM incidents_incident i "
            f"JOIN incidents_severity s ON s.id = i.severity_id WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2",
            params,
        ),
    }
    for key in ("mtta", "mttr"):
        start, end = DURATIONS[key]
        d = f"EXTRACT(EPOCH FROM (i.{end} - i.{start}))::double precision"
        out[f"trend_{key}"] = _rows(
            f"SELECT {week} AS b, count({d}), avg({d}) FROM incidents_incident i WHERE {where} "
            f"GROUP BY 1 HAVING count({d}) > 0 ORDER BY 1",
            params,
        )
    impact = (
        "EXTRACT(EPOCH FROM (COALESCE(i.mitigated_at, i.resolved_at, now()) - COALESCE(i.started_at, i.detected_at)))"
    )
    out["services"] = _rows(
        f"SELECT sv.slug, sv.name, count(*), sum({impact}) / 60 FROM incidents_incident_services l "
        "JOIN incidents_incident i ON i.id = l.incident_id JOIN incidents_service sv ON sv.id = l.service_id "
        f"WHERE {where} GROUP BY sv.id ORDER BY 4 DESC",
        params,
    )
    out["reports_per_service"] = _rows(
        "SELECT l.service_id, count(*) FROM incidents_customerreport c "
        "JOIN incidents_incident_services l ON l.incident_id = c.incident_id "
        f"WHERE c.incident_id IN (SELECT i.id FROM incidents_incident i WHERE {where}) GROUP BY 1",
        params,
    )
    if _table_exists("postmortems_actionitem"):
        items = f"FROM postmortems_actionitem a WHERE a.incident_id IN (SELECT i.id FROM incidents_incident i WHERE {where})"
        out["open_by_age"] = _rows(
            "SELECT count(*) FILTER (WHERE a.created_at > now() - interval '7 days'), "
            "count(*) FILTER (WHERE a.created_at <= now() - interval '7 days' AND a.created_at > now() - interval '30 days'), "
            "count(*) FILTER (WHERE a.created_at <= now() - interval '30 days' AND a.created_at > now() - interval '90 days'), "
            f"count(*) FILTER (WHERE a.created_at <= now() - interval '90 days') {items} "
            "AND a.status IN ('open', 'in_progress')",
            params,
        )
        out["overdue_per_service"] = _rows(
            "SELECT sv.slug, count(DISTINCT a.id) FROM postmortems_actionitem a "
            "JOIN incidents_incident_services l ON l.incident_id = a.incident_id "
            "JOIN incidents_service sv ON sv.id = l.service_id "
            f"WHERE a.incident_id IN (SELECT i.id FROM incidents_incident i WHERE {where}) "
            "AND a.status IN ('open', 'in_progress') AND a.due_date < CURRENT_DATE GROUP BY 1 ORDER BY 2 DESC",
            params,
        )
    return out


def raw(request):
    where, params = _scope(request)
    return JsonResponse(raw_metrics(where, params), json_dumps_params={"default": str})


def raw_dashboard(request):
    where, params = _scope(request)
    return JsonResponse(
        {**raw_metrics(where, params), **raw_dashboard_extra(where, params)}, json_dumps_params={"default": str}
    )


urlpatterns = [
    path("bench/metrics/raw/", raw, name="bench-metrics-raw"),
    path("bench/metrics/raw-dashboard/", raw_dashboard, name="bench-metrics-raw-dashboard"),
    *product_urlpatterns,
]

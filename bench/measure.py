"""Measure the admin pages against a bare baseline and write the results into docs/benchmarks.md.

Called by bench/run.sh once gunicorn is up (it sets the environment); not meant to be run alone:

    .venv/bin/python bench/measure.py --base-url http://127.0.0.1:8765 [--duration 15s] [--runs 2]

For each endpoint: a pre-check (HTTP 200 for the logged-in session, no redirect), a warm-up with wrk,
then `wrk -t2 -c8 -d15s --latency --timeout 30s` twice, interleaved across endpoints so drift of a
shared machine hits all of them alike. Query counts come from CaptureQueriesContext around a
test-client request after a warm-up request, at several page sizes for the lists (a count that
grows with the page size is an N+1). The slowest query of a slow page is EXPLAIN ANALYZEd.
"""

import cProfile
import io
import json
import os
import platform
import pstats
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)

PROG = "bench/measure.py"
RESULTS = common.RESULTS
SECTION = "## Admin list and incident page (issue 2)"
BENCH_USER = "bench-admin"
SLOW_P50_MS = 200
ms = common.ms


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8765")
    parser.add_argument("--render-from", help="only rewrite the docs section from bench/results/<stamp>.json")
    common.add_run_options(parser, command="bench/run.sh")
    return parser.parse_args()


def bench_user():
    from django.contrib.auth import get_user_model

    user, created = get_user_model().objects.get_or_create(
        username=BENCH_USER, defaults={"is_staff": True, "is_superuser": True, "email": "bench@example.com"}
    )
    if created:
        user.set_unusable_password()  # logged in through a session made here, never with a password
        user.save(update_fields=["password"])
    return user


def session_cookie(user):
    """A real database session for the superuser, as the login view would create it."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


STORM_TITLE = "Bench: alert storm (5,000 timeline events)"
STORM_EVENTS = 5_000
# Issue 15's targets: p50 within these multiples of the bare DRF list's p50 in the same run.
TARGETS = {"admin_storm": 4, "admin_list": 3, "admin_open": 3}


def storm_incident():
    """The incident of an alert storm: 5,000 timeline events. Made once (it stays in the bench data).

    Declared by the system a month ago and resolved two hours later, so it is on no list's first page
    and in no open-incidents count; its alert events are inserted in one batch.
    """
    from datetime import timedelta

    from django.utils import timezone

    from incidents import services
    from incidents.models import Incident, Severity, TimelineEvent

    incident = Incident.objects.filter(title=STORM_TITLE).first()
    if incident is not None:
        return incident
    detected = timezone.now() - timedelta(days=30)
    incident = services.incident_declare(
        title=STORM_TITLE, severity=Severity.objects.order_by("level").first(), actor=None, detected_at=detected
    )
    incident = services.incident_transition(
        incident=incident, to="resolved", actor=None, at=detected + timedelta(hours=2)
    )
    missing = STORM_EVENTS - incident.timeline.count()
    TimelineEvent.objects.bulk_create(
        (
            TimelineEvent(
                incident=incident,
                kind=TimelineEvent.Kind.ALERT,
                occurred_at=detected + timedelta(seconds=1 + n),
                body=f"HighErrorRate firing on checkout-{n % 40} (storm event {n})",
                data={"fingerprint": f"storm-{n % 40}", "status": "firing"},
            )
            for n in range(missing)
        ),
        batch_size=1000,
    )
    return incident


def pick_incident():
    """A heavy but typical change page: the newest closed SEV1 incident (all roles, long timeline)."""
    from incidents.models import Incident

    incident = (
        Incident.objects.filter(status="closed", severity__level=1).order_by("-detected_at", "-id").first()
        or Incident.objects.order_by("-detected_at", "-id").first()
    )
    if incident is None:
        sys.exit("bench/measure.py: no incidents; run bench/generate.py first.")
    return incident


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def precheck(url, cookie):
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    started = time.monotonic()
    try:
        with opener.open(request, timeout=60) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    elapsed = (time.monotonic() - started) * 1000
    if status != 200:
        raise SystemExit(f"bench/measure.py: {url} answered {status}, not 200: {body[:300]!r}")
    return elapsed, len(body)


def capture(client, url, host):
    """Queries for one request after a warm-up request: (count, total ms, [(ms, sql)] slowest first)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url, HTTP_HOST=host)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, HTTP_HOST=host)
    if response.status_code != 200:
        raise SystemExit(f"bench/measure.py: test client got {response.status_code} for {url}")
    queries = sorted(((float(q["time"]) * 1000, q["sql"]) for q in ctx.captured_queries), reverse=True)
    return len(ctx.captured_queries), sum(ms for ms, _ in queries), queries


def serial_and_profile(client, url, host, repeat=20):
    """Time in the server for one request at a time (test client, no network), and where it goes."""
    for _ in range(3):
        client.get(url, HTTP_HOST=host)
    started = time.perf_counter()
    for _ in range(repeat):
        client.get(url, HTTP_HOST=host)
    serial_ms = (time.perf_counter() - started) / repeat * 1000
    profiler = cProfile.Profile()
    profiler.enable()
    client.get(url, HTTP_HOST=host)
    profiler.disable()
    stats = pstats.Stats(profiler)

    def cumulative(pattern):
        return max((v[3] for k, v in stats.stats.items() if pattern in f"{k[0]}:{k[2]}"), default=0.0)

    total = cumulative("test/client.py:get") or 1.0
    shares = {
        "template rendering": cumulative("template/response.py:rendered_content") / total,
        "result rows (list_display)": cumulative("admin_list.py:items_for_result") / total,
        "database": cumulative("backends/utils.py:_execute") / total,
    }
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    return serial_ms, {k: v for k, v in shares.items() if v}, text.getvalue()


def query_counts(endpoints, user, host):
    """Query counts per endpoint; for admin lists also at 1 and 100 rows a page (same process only)."""
    from django.contrib import admin
    from django.test import Client

    client = Client()
    client.force_login(user)
    results = {}
    for endpoint in endpoints:
        count, total_ms, queries = capture(client, endpoint["path"], host)
        entry = {"queries": count, "sql_ms": total_ms, "slowest": queries[:3], "by_page_size": {}}
        entry["serial_ms"], entry["shares"], entry["profile"] = serial_and_profile(client, endpoint["path"], host)
        model_admin = next(
            (
                ma
                for model, ma in admin.site._registry.items()
                if endpoint.get("admin_model") == model._meta.label_lower
            ),
            None,
        )
        if model_admin is not None:
            default = model_admin.list_per_page
            try:
                for size in (1, default, 100):
                    model_admin.list_per_page = size
                    entry["by_page_size"][size] = capture(client, endpoint["path"], host)[0]
            finally:
                model_admin.list_per_page = default
        results[endpoint["name"]] = entry
    return results


def explain(sql):
    from django.db import DatabaseError, connection, transaction

    # A server-side cursor (QuerySet.iterator()) shows up as DECLARE … FOR SELECT: explain the SELECT.
    sql = re.sub(r"^DECLARE .*? CURSOR (?:WITH(?:OUT)? HOLD )?FOR ", "", sql, flags=re.DOTALL)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())
    except DatabaseError as exc:
        return f"(EXPLAIN failed: {exc})"


def dataset():
    from django.db import connection

    from incidents.models import Incident, RoleAssignment, TimelineEvent

    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        pg_version = cursor.fetchone()[0].split(" on ")[0]
    return {
        "incidents": Incident.objects.count(),
        "open_incidents": Incident.objects.open().count(),
        "timeline_events": TimelineEvent.objects.count(),
        "role_assignments": RoleAssignment.objects.count(),
        "incident_service_links": Incident.services.through.objects.count(),
        "postgres": pg_version,
    }


def machine():
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{mem_kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, AttributeError):
        memory = "unknown RAM"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} cores ({common.cpu_model()}), {memory}, {platform.system()} {platform.release()}, "
        f"load {load:.2f} at start"
    )


def render(meta, endpoints, runs, counts, explains):
    lines = [
        SECTION,
        "",
        "How to reproduce: `bench/run.sh` from the repository root (or `make bench`). It creates, migrates and, "
        "when empty, fills the PostgreSQL database `incidents_bench` with `bench/generate.py` (200,000 incidents, "
        "about 40 s), starts gunicorn, measures, and rewrites this section; `REGENERATE=1` rebuilds the data, "
        "`DATABASE_URL` points it elsewhere. Raw output goes to `bench/results/` (not committed).",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}, {meta['load_after']} at the end; wrk, gunicorn and PostgreSQL share "
        f"these cores (and the machine is shared with other work, so compare ratios, not absolute figures). "
        f"{meta['postgres']}.",
        f"- Data from `bench/generate.py`: {meta['incidents']:,} incidents ({meta['open_incidents']:,} open), "
        f"{meta['timeline_events']:,} timeline events, {meta['role_assignments']:,} role assignments, "
        f"{meta['incident_service_links']:,} incident-service links.",
        f"- Server: `{meta['gunicorn']}` (2 sync workers, DEBUG off, persistent connections).",
        f"- Load: `{meta['wrk']}` with `Cookie: sessionid=…` of a superuser, after a {meta['warmup']} warm-up "
        f"per URL; {meta['runs']} runs per endpoint, interleaved. Percentiles from wrk's latency histogram "
        "(`bench/wrk_report.lua` prints p95, which `--latency` leaves out).",
        "- Queries: `CaptureQueriesContext` around one test-client request after a warm-up request.",
        "",
        "| endpoint | req/s (each run) | p50 | p95 | p99 | req/s ÷ baseline (same run) | p50 ÷ baseline | queries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for endpoint in endpoints:
        name = endpoint["name"]
        results = runs[name]
        rps = [r["rps"] for r in results]
        p95 = " / ".join(ms(r["p95_us"]) for r in results)
        p99 = " / ".join(ms(r["p99_us"]) for r in results)
        p50s = " / ".join(ms(r["p50_us"]) for r in results)
        # Each run against the baseline of the same run: the machine's drift hits both alike.
        rps_ratio = " / ".join(f"{r['rps'] / b['rps']:.3f}×" for r, b in zip(results, runs["baseline"], strict=True))
        p50_ratio = " / ".join(
            f"{r['p50_us'] / b['p50_us']:.2f}×" for r, b in zip(results, runs["baseline"], strict=True)
        )
        bad = sum(r["non_2xx_3xx"] + r["errors_timeout"] + r["errors_status"] for r in results)
        flag = f" ⚠ {bad} errors" if bad else ""
        lines.append(
            f"| {endpoint['label']} `{endpoint['path']}` | {' / '.join(f'{x:.0f}' for x in rps)}{flag} | {p50s} | "
            f"{p95} | {p99} | {rps_ratio} | {p50_ratio} | {counts[name]['queries']} |"
        )
    lines += ["", "Targets (issue 15): p50 within a multiple of the bare DRF list's p50 in the same run:", ""]
    for endpoint in endpoints:
        limit = TARGETS.get(endpoint["name"])
        if limit is None:
            continue
        ratios = [r["p50_us"] / b["p50_us"] for r, b in zip(runs[endpoint["name"]], runs["baseline"], strict=True)]
        verdict = "met" if max(ratios) <= limit else "NOT met"
        lines.append(f"- {endpoint['label']}: ≤ {limit}× — {' / '.join(f'{x:.2f}×' for x in ratios)}: **{verdict}**")
    lines += [
        "",
        "The incident page (issue 15) reads its timeline a page of 50 at a time (its query count is the same at 10 "
        "and 5,000 events; before, the timeline inline made one query per event: 543 queries for 510 events), "
        "and lets the other apps' panels (customer impact, communications, review, similar past incidents, whose "
        "full-text search is most of their SQL) load from `panels/` after it is shown. A plain GET of the page builds "
        "no ModelForm, member formsets or app list (its sidebar is hidden) and writes its timeline rows without a "
        "template include per row; Django's change view, with the edit form, serves `?edit=1` and POSTs. What "
        "remains is the session and user lookup the bare list does not do, the page's other queries (incident, "
        "services, timeline count and page, roles, updates, alerts) and rendering the admin's base templates.",
    ]
    lines += [
        "",
        "Queries per request by rows a page (`list_per_page` set in the measuring process only); for the default "
        "page its SQL time and slowest query (CaptureQueriesContext times, 1 ms resolution), the time one request "
        "takes alone (mean of 20 test-client requests, no network, no concurrency) and, from one profiled request, "
        "the share spent rendering templates, building the list rows and in database calls:",
        "",
        "| page | 1 row | default | 100 rows | SQL time | slowest query | one request at a time | where the time goes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for endpoint in endpoints:
        entry = counts[endpoint["name"]]
        sizes = entry["by_page_size"]
        cells = [str(v) for v in sizes.values()] if sizes else ["–", str(entry["queries"]), "–"]
        if sizes:
            cells[1] = f"{cells[1]} ({list(sizes)[1]} rows)"
        slowest = entry["slowest"][0] if entry["slowest"] else (0, "")
        shares = ", ".join(f"{name} {share:.0%}" for name, share in entry["shares"].items())
        lines.append(
            f"| {endpoint['label']} | {' | '.join(cells)} | {entry['sql_ms']:.1f} ms | "
            f"{slowest[0]:.1f} ms: `{shorten(slowest[1])}` | {entry['serial_ms']:.1f} ms | {shares} |"
        )
    lists = [e for e in endpoints if counts[e["name"]]["by_page_size"]]
    flat = [e["label"] for e in lists if len(set(counts[e["name"]]["by_page_size"].values())) == 1]
    if flat:
        lines += ["", f"No per-row queries: the query count of {' and '.join(flat)} is the same at every page size."]
    slow = [e for e in endpoints if e["name"] in explains]
    for endpoint in slow:
        reason = explains[endpoint["name"]]["reason"]
        lines += [
            "",
            f"**{endpoint['label']}** — {reason}. Slowest query, `EXPLAIN (ANALYZE, BUFFERS)`:",
            "",
            "```sql",
            explains[endpoint["name"]]["sql"],
            "```",
            "```",
            explains[endpoint["name"]]["plan"],
            "```",
        ]
    lines += ["", f"Raw wrk output and every plan: `bench/results/{meta['stamp']}.json` (not committed).", ""]
    return "\n".join(lines)


def shorten(sql, limit=110):
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r"SELECT .*? FROM", "SELECT … FROM", sql, count=1)
    return (sql[:limit] + "…" if len(sql) > limit else sql).replace("|", "\\|").replace("`", "'")


def main():
    args = parse_args()
    if args.render_from:  # rewrite the docs section from an earlier run's raw results
        publish(json.loads(Path(args.render_from).read_text()), args.docs)
        return
    common.setup_django("bench.settings", PROG)
    from incidents.models import Incident  # noqa: F401  (apps are ready)

    base = args.base_url.rstrip("/")
    host = re.sub(r"^https?://", "", base).split(":")[0]
    user = bench_user()
    cookie = session_cookie(user)
    incident = pick_incident()
    storm = storm_incident()
    endpoints = [
        {
            "name": "baseline",
            "label": "baseline: bare DRF list (ListAPIView + ModelSerializer + CursorPagination, 50 rows, no auth)",
            "path": "/bench/baseline-drf/",
            "auth": False,
        },
        {
            "name": "values",
            "label": "bare `.values()` of 50 incidents as JSON",
            "path": "/bench/baseline/",
            "auth": False,
        },
        {
            "name": "admin_list",
            "label": "admin incident list",
            "path": "/admin/incidents/incident/",
            "auth": True,
            "admin_model": "incidents.incident",
        },
        {
            "name": "admin_storm",
            "label": f"admin incident page, {STORM_EVENTS:,} timeline events ({storm.reference})",
            "path": f"/admin/incidents/incident/{storm.pk}/change/",
            "auth": True,
        },
        {
            "name": "admin_storm_panels",
            "label": f"its follow-up panels, fetched by the page after it is shown ({storm.reference})",
            "path": f"/admin/incidents/incident/{storm.pk}/panels/",
            "auth": True,
        },
        {
            "name": "admin_change",
            "label": f"admin incident page ({incident.reference}, closed SEV1, {incident.timeline.count()} events)",
            "path": f"/admin/incidents/incident/{incident.pk}/change/",
            "auth": True,
        },
        {
            "name": "admin_open",
            "label": "admin open-incidents list",
            "path": "/admin/incidents/openincident/",
            "auth": True,
            "admin_model": "incidents.openincident",
        },
    ]
    meta = common.run_meta(args, machine())
    meta.update(dataset())
    print(
        f"dataset: {meta['incidents']:,} incidents, {meta['timeline_events']:,} events; change page {incident.reference}"
    )

    for endpoint in endpoints:
        elapsed, size = precheck(base + endpoint["path"], cookie if endpoint["auth"] else None)
        print(f"  pre-check {endpoint['path']}: 200, {size:,} bytes, {elapsed:.0f} ms")
    counts = query_counts(endpoints, user, host)
    for name, entry in counts.items():
        print(
            f"  queries {name}: {entry['queries']} ({entry['sql_ms']:.1f} ms SQL), by page size {entry['by_page_size']}"
        )

    by_name = {e["name"]: e for e in endpoints}

    def target(name, run):
        endpoint = by_name[name]
        headers = [f"Cookie: {cookie}"] if endpoint["auth"] else []
        return {"url": base + endpoint["path"], "script": ROOT / "bench" / "wrk_report.lua", "headers": headers}

    def line(run, name, r):
        return (
            f"  run {run + 1} {name:<13} {r['rps']:8.1f} req/s  p50 {ms(r['p50_us']):>8}  p95 {ms(r['p95_us']):>8}  "
            f"p99 {ms(r['p99_us']):>8}  non-2xx/3xx {r['non_2xx_3xx']}"
        )

    runs = common.interleaved(args, list(by_name), prog=PROG, target=target, line=line)

    for endpoint in endpoints:
        entry = counts[endpoint["name"]]
        entry["explain"] = explain(entry["slowest"][0][1]) if entry["slowest"] else ""

    meta["load_after"] = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = {"meta": meta, "endpoints": endpoints, "runs": runs, "queries": counts}
    (RESULTS / f"{meta['stamp']}.json").write_text(json.dumps(raw, indent=2, default=str))
    publish(raw, args.docs)


def findings(endpoints, runs, counts):
    """Pages that are slow (p50 above the limit in any run) or whose query count grows with the rows."""
    explains = {}
    for endpoint in endpoints:
        entry = counts[endpoint["name"]]
        p50s = [r["p50_us"] / 1000 for r in runs[endpoint["name"]]]
        sizes = list(entry["by_page_size"].values())
        reasons = []
        if max(p50s) > SLOW_P50_MS:
            reasons.append(f"p50 {' / '.join(f'{p:.0f}' for p in p50s)} ms, above {SLOW_P50_MS} ms")
        if sizes and len(set(sizes)) > 1:
            reasons.append(f"query count grows with the page size ({' → '.join(map(str, sizes))})")
        if reasons and entry["slowest"]:
            reasons.append(
                f"its {entry['queries']} queries take {entry['sql_ms']:.0f} ms of the {entry['serial_ms']:.0f} ms "
                "a request takes alone"
            )
            explains[endpoint["name"]] = {
                "reason": "; ".join(reasons),
                "sql": entry["slowest"][0][1],
                "plan": entry["explain"],
            }
    return explains


def publish(raw, docs):
    explains = findings(raw["endpoints"], raw["runs"], raw["queries"])
    text = render(raw["meta"], raw["endpoints"], raw["runs"], raw["queries"], explains)
    common.write_section(docs, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()

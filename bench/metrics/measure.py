"""Metrics endpoint and dashboard page against the raw aggregate SQL they need, same run; results into
docs/benchmarks.md, section "## Metrics (issue 6)".

Called by bench/metrics/run.sh once gunicorn is up (it sets the environment); not meant to be run alone:

    .venv/bin/python bench/metrics/measure.py --base-url http://127.0.0.1:8768 [--duration 15s] [--runs 2]

The user is bench-metrics-viewer: staff in the Viewers group, without "view all restricted incidents", so
every figure carries the visibility rule (the raw SQL carries the same EXISTS conditions for that user).
Pairs, each measured with `wrk -t1 -c2 -d30s --latency --timeout 30s` (one connection per gunicorn worker:
these requests take seconds, and more connections would only queue), interleaved, after a warm-up, the
server drained of abandoned requests before every run:

- whole history: GET /api/v1/metrics/ vs /bench/metrics/raw/?user=<id>;
- last 365 days: GET /api/v1/metrics/?since=…&until=… vs /bench/metrics/raw/?user=<id>&since=…&until=…;
- the dashboard page /admin/incidents/dashboard/?period=365 (session cookie) vs
  /bench/metrics/raw-dashboard/?user=<id>&days=365 (the same raw metrics plus the dashboard's own series).

Before measuring, the endpoint's figures are checked against the raw SQL's (every duration's count, missing,
mean, median and p90; weekly counts; severity mix), so the comparison is between equal answers.
"""

import json
import os
import re
import statistics
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)
from bench.measure import machine  # noqa: E402

PROG = "bench/metrics/measure.py"
RESULTS = common.RESULTS
SECTION = "## Metrics (issue 6)"
USERNAME = "bench-metrics-viewer"
KEY_NAME = "bench metrics"
LIMIT = 2.0
SERIAL_REQUESTS = 5
REPORT_EVERY = 10  # one customer report per 10 incidents (by id), seeded once
ms = common.ms


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8768")
    parser.add_argument("--render-from", help="only rewrite the docs section from bench/results/<file>.json")
    common.add_run_options(parser, command="bench/metrics/run.sh")
    return parser.parse_args()


def prepare():
    """The viewer user and the customer reports (seeded once with one INSERT … SELECT); returns the user."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from incidents.models import CustomerReport

    with transaction.atomic():
        user, created = get_user_model().objects.get_or_create(
            username=USERNAME, defaults={"is_staff": True, "email": f"{USERNAME}@example.com"}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        user.groups.set([Group.objects.get(name="Viewers")])
        user.user_permissions.clear()
        if not CustomerReport.objects.exists():
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO incidents_customerreport (incident_id, customer_id, channel, text, sentiment, "
                    "revenue_at_risk, currency, received_at, source_reference, created_at) "
                    "SELECT i.id, 'cust-' || ((i.id * 7919) %% 5000), 'support_ticket', 'Seeded for the benchmark', "
                    "'negative', ((i.id %% 50) * 100)::numeric, 'USD', i.detected_at + interval '10 minutes', '', now() "
                    "FROM incidents_incident i WHERE i.id %% %s = 0",
                    [REPORT_EVERY],
                )
                cursor.execute("ANALYZE incidents_customerreport")
    return user


def fetch(url, headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= max(1e-6, 1e-6 * abs(float(b))) + 0.001


def check_equal(api, raw, label):
    """The endpoint's figures equal the raw SQL's; exits otherwise."""
    problems = []
    metrics = api["metrics"]
    if metrics["incidents"]["count"] != raw["incidents"]:
        problems.append(f"incidents {metrics['incidents']['count']} != {raw['incidents']}")
    if metrics["recurrence_rate"]["count"] != raw["recurrences"]:
        problems.append("recurrences differ")
    for key in ("mttd", "mtta", "time_to_mitigate", "mttr", "mttr_from_start"):
        for field in ("count", "missing", "mean", "median", "p90"):
            if not close(metrics[key][field], raw[key][field]):
                problems.append(f"{key}.{field}: {metrics[key][field]} != {raw[key][field]}")
    weeks = {row["start"]: row["count"] for row in metrics["frequency_week"]["series"] if row["count"]}
    if weeks != dict(raw["per_week"]):
        problems.append("weekly counts differ")
    mix = {row["level"]: row["count"] for row in metrics["severity_distribution"]["items"]}
    if mix != {level: n for level, _l, _n, n in raw["severity"]}:
        problems.append("severity mix differs")
    if metrics["customer_reports"]["count"] != raw["customer_reports"]:
        problems.append("customer reports differ")
    if problems:
        sys.exit(f"{PROG}: {label}: the endpoint and the raw SQL disagree: {problems}")
    print(f"  pre-check {label}: the endpoint's figures equal the raw SQL's ({raw['incidents']:,} incidents)")


def capture(client, path, extra):
    from django.core.signals import request_started
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    client.get(path, **extra)
    # Django empties the query log when a request starts: keep it for the one request counted.
    request_started.disconnect(reset_queries)
    try:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(path, **extra)
    finally:
        request_started.connect(reset_queries)
    captured = list(ctx.captured_queries)  # read from the log, which the next request empties
    if response.status_code != 200:
        sys.exit(f"{PROG}: test client got {response.status_code} for {path}")
    serial = []
    for _ in range(SERIAL_REQUESTS):
        started = time.perf_counter()
        client.get(path, **extra)
        serial.append((time.perf_counter() - started) * 1000)
    return {
        "queries": len(captured),
        "sql_ms": sum(float(q["time"]) * 1000 for q in captured),
        "serial_ms": statistics.median(serial),
        "all_sql": [q["sql"] for q in captured],
    }


def explain(sql):
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        for _ in range(2):  # the second run is the warm one
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    return plan


def drain(base):
    """Wait until the server has finished the requests wrk abandoned when it stopped (sync workers go on
    with them), so that they do not slow the next URL's run: two quick requests in a row answer fast."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = time.perf_counter()
        fetch(base + "/healthz", {})
        if time.perf_counter() - started < 0.05:
            started = time.perf_counter()
            fetch(base + "/healthz", {})
            if time.perf_counter() - started < 0.05:
                return
        time.sleep(0.5)


def interleaved_with_drain(args, names, *, target, line):
    """common.interleaved, with the server drained before every wrk run (these requests take seconds)."""
    options = {"prog": PROG, "threads": args.threads, "connections": args.connections}
    base = args.base_url.rstrip("/")
    for name in names:
        drain(base)
        common.wrk(**target(name, None), duration=args.warmup, **options)
    results = {name: [] for name in names}
    for run in range(args.runs):
        for name in names:
            drain(base)
            result = common.wrk(**target(name, run), duration=args.duration, **options)
            results[name].append(result)
            print(line(run, name, result), flush=True)
    return results


def main():
    args = parse_args()
    if args.render_from:
        publish(json.loads(Path(args.render_from).read_text()), args.docs)
        return
    common.setup_django("bench.metrics.settings", PROG)
    from django.conf import settings
    from django.test import Client

    from incidents.api.keys import api_key_create
    from incidents.models import ApiKey, CustomerReport, Incident

    base = args.base_url.rstrip("/")
    host = re.sub(r"^https?://", "", base).split(":")[0]
    user = prepare()
    ApiKey.objects.filter(name__startswith=KEY_NAME).delete()
    key = api_key_create(name=KEY_NAME, user=user)[1]
    session = Client()
    session.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}"
    until = datetime.now(UTC).replace(microsecond=0)
    since = until - timedelta(days=365)
    period = urlencode(
        {"since": since.isoformat().replace("+00:00", "Z"), "until": until.isoformat().replace("+00:00", "Z")}
    )
    urls = {
        "api_all": ("metrics endpoint, whole history", "/api/v1/metrics/", "api"),
        "raw_all": ("raw SQL, whole history", f"/bench/metrics/raw/?user={user.pk}", None),
        "api_year": ("metrics endpoint, last 365 days", f"/api/v1/metrics/?{period}", "api"),
        "raw_year": ("raw SQL, last 365 days", f"/bench/metrics/raw/?user={user.pk}&{period}", None),
        "dashboard": ("dashboard page, last 365 days", "/admin/incidents/dashboard/?period=365", "admin"),
        "raw_dashboard": (
            "raw SQL of the dashboard, last 365 days",
            f"/bench/metrics/raw-dashboard/?user={user.pk}&days=365",
            None,
        ),
    }
    pairs = [("api_all", "raw_all"), ("api_year", "raw_year"), ("dashboard", "raw_dashboard")]

    def headers(kind):
        if kind == "api":
            return {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        if kind == "admin":
            return {"Cookie": cookie}
        return {}

    meta = {
        **common.run_meta(args, machine()),
        "incidents": Incident.objects.count(),
        "restricted": Incident.objects.filter(is_restricted=True).count(),
        "in_scope_all": None,
        "customer_reports": CustomerReport.objects.count(),
        "user": USERNAME,
        "since": since.isoformat(),
        "until": until.isoformat(),
    }
    print(f"dataset: {meta['incidents']:,} incidents, {meta['customer_reports']:,} customer reports")
    answers = {}
    for name, (_label, path, kind) in urls.items():
        status, body = fetch(base + path, headers(kind))
        if status != 200:
            sys.exit(f"{PROG}: {path} answered {status}: {body[:300]!r}")
        answers[name] = body
        print(f"  pre-check {path}: 200, {len(body):,} bytes")
    check_equal(json.loads(answers["api_all"]), json.loads(answers["raw_all"]), "whole history")
    check_equal(json.loads(answers["api_year"]), json.loads(answers["raw_year"]), "last 365 days")
    meta["in_scope_all"] = json.loads(answers["raw_all"])["incidents"]
    meta["in_scope_year"] = json.loads(answers["raw_year"])["incidents"]

    counts = {}
    for name, (_label, path, kind) in urls.items():
        client = Client()
        extra = {"HTTP_HOST": host}
        if kind == "api":
            extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        elif kind == "admin":
            client.force_login(user)
        counts[name] = capture(client, path, extra)
        print(
            f"  {name}: {counts[name]['queries']} queries, {counts[name]['sql_ms']:.1f} ms SQL, "
            f"one request alone {counts[name]['serial_ms']:.1f} ms"
        )
    aggregate = next(sql for sql in counts["api_all"]["all_sql"] if "PERCENTILE_CONT" in sql)
    meta["aggregate_sql"] = aggregate
    meta["aggregate_plan"] = explain(aggregate)

    names = list(urls)

    def target(name, run):
        return {
            "url": base + urls[name][1],
            "script": ROOT / "bench" / "wrk_report.lua",
            "headers": [f"{k}: {v}" for k, v in headers(urls[name][2]).items()],
        }

    def line(run, name, r):
        return (
            f"  run {run + 1} {name:<14} {r['rps']:8.2f} req/s  p50 {ms(r['p50_us']):>8}  p99 {ms(r['p99_us']):>8}  "
            f"non-2xx/3xx {r['non_2xx_3xx']}  timeouts {r['errors_timeout']}"
        )

    runs = interleaved_with_drain(args, names, target=target, line=line)
    meta["load_after"] = f"load {os.getloadavg()[0]:.2f}"
    meta["urls"] = {name: {"label": label, "path": path} for name, (label, path, _kind) in urls.items()}
    meta["pairs"] = pairs
    raw = {"meta": meta, "runs": runs, "queries": counts}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"metrics-{meta['stamp']}.json"
    path.write_text(json.dumps(raw, indent=2, default=str))
    print(f"raw results: {path}")
    publish(raw, args.docs)


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else float("inf")


def render(meta, runs, counts):
    lines = [
        SECTION,
        "",
        "How to reproduce: `bench/metrics/run.sh` from the repository root. It migrates the PostgreSQL database "
        "`bench_metrics` (filled by `bench/generate.py` if empty; one customer report per ten incidents is seeded "
        "once), starts gunicorn with `bench.metrics.settings` (the product plus two bare raw-SQL views), checks that "
        "the endpoint's figures equal the raw SQL's, measures, and rewrites this section. Raw output: "
        "`bench/results/metrics-*.json` (not committed).",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}, {meta['load_after']} at the end; wrk, gunicorn and PostgreSQL share these "
        "cores, and the machine is shared with other work: compare the ratios within a run, not absolute figures.",
        f"- Data: {meta['incidents']:,} incidents ({meta['restricted']:,} restricted), {meta['customer_reports']:,} "
        f"customer reports. In scope for the user: {meta['in_scope_all']:,} incidents over the whole history, "
        f"{meta['in_scope_year']:,} in the last 365 days (dismissed and duplicates left out).",
        f"- User: `{meta['user']}` (Viewers, no global permission: the visibility rule is in every query, raw SQL "
        "included).",
        f"- Server: `{meta['gunicorn']}` (2 sync workers, DEBUG off). Load: `{meta['wrk']}` per URL (one "
        "connection per worker: a request takes seconds, more connections would only queue) after a "
        f"{meta['warmup']} warm-up; {meta['runs']} runs, interleaved across the six URLs, the server drained of "
        "abandoned requests before each run.",
        "- Raw SQL: `bench/metrics/urls.py` — the same aggregates written by hand (one SELECT with `percentile_cont` "
        "for the 5 durations, weekly and monthly `date_trunc` counts, severity mix, customer reports, action items; "
        "the dashboard's adds its weekly series, services by impact and action-item series), no ORM, no "
        "authentication, JSON out.",
        "",
        "| URL | req/s (per run) | p50 | p99 | queries | one request alone |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in meta["urls"].items():
        results = runs[name]
        bad = sum(r["non_2xx_3xx"] + r["errors_timeout"] + r["errors_status"] for r in results)
        flag = f" ⚠ {bad} errors" if bad else ""
        rps = " / ".join(f"{r['rps']:.2f}" for r in results)
        lines.append(
            f"| {spec['label']} `{spec['path'].split('?')[0]}` | {rps}{flag} | "
            f"{' / '.join(ms(r['p50_us']) for r in results)} | {' / '.join(ms(r['p99_us']) for r in results)} | "
            f"{counts[name]['queries']} | {counts[name]['serial_ms']:.0f} ms |"
        )
    lines += [
        "",
        f"Against the raw SQL, per run (limit {LIMIT:g}×; above 1 means the product is slower):",
        "",
        "| pair | raw req/s ÷ product req/s | product p50 ÷ raw p50 | within 2× |",
        "|---|---|---|---|",
    ]
    for product, raw in meta["pairs"]:
        ratios = [
            (_ratio(b["rps"], a["rps"]), _ratio(a["p50_us"], b["p50_us"]))
            for a, b in zip(runs[product], runs[raw], strict=True)
        ]
        ok = all(max(pair) <= LIMIT for pair in ratios)
        lines.append(
            f"| {meta['urls'][product]['label']} vs {meta['urls'][raw]['label']} | "
            f"{' / '.join(f'{t:.2f}×' for t, _ in ratios)} | {' / '.join(f'{p:.2f}×' for _, p in ratios)} | "
            f"{'yes' if ok else '**no**'} |"
        )
    lines += [
        "",
        f'"One request alone": median of {SERIAL_REQUESTS} test-client requests in the measuring process, one at a '
        "time (no network, no concurrency).",
        "",
        "The endpoint's main aggregate (whole history) and its warm `EXPLAIN (ANALYZE, BUFFERS)`:",
        "",
        "```sql",
        meta["aggregate_sql"],
        "```",
        "```",
        meta["aggregate_plan"],
        "```",
        "",
        f"Raw wrk output and every query: `bench/results/metrics-{meta['stamp']}.json`.",
        "",
    ]
    return "\n".join(lines)


def publish(raw, docs):
    text = render(raw["meta"], raw["runs"], raw["queries"])
    common.write_section(docs, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()

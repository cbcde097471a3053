"""Measure alert ingestion against a bare insert endpoint and write the results into docs/benchmarks.md.

Called by bench/ingest/run.sh once gunicorn is up (it sets the environment and creates the key):

    .venv/bin/python bench/ingest/measure.py --base-url http://127.0.0.1:8766 --key KEY [--duration 15s]

Three endpoints, each `wrk -t2 -c8 -d15s --latency --timeout 30s -s bench/ingest/post.lua` after a
warm-up, every run interleaved across them so drift of a shared machine hits all alike:
- bare: /bench/ingest/bare/ inserts the body as one row (no authentication, parsing or de-duplication);
- repeat: the Alertmanager endpoint, the same group of two firing alerts every time (steady state);
- churn: the Alertmanager endpoint, every post opening or resolving an incident (worst case).
Query counts come from CaptureQueriesContext around a test-client request after a warm-up request.
"""

import json
import os
import platform
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)

PROG = "bench/ingest/measure.py"
RESULTS = common.RESULTS
ms = common.ms
SCRIPT = ROOT / "bench" / "ingest" / "post.lua"
SECTION = "## Alert ingestion (issue 3)"
AM_PATH = "/api/v1/integrations/alertmanager/"
BARE_PATH = "/bench/ingest/bare/"
ENDPOINTS = [
    ("bare", BARE_PATH, "bare endpoint: one `INSERT` of the body, autocommit"),
    ("repeat", AM_PATH, "Alertmanager endpoint, a repeated group (2 alerts, nothing changes)"),
    ("churn", AM_PATH, "Alertmanager endpoint, every post opens or resolves an incident"),
]


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True, help="the Alertmanager integration's key")
    common.add_run_options(parser, command="bench/ingest/run.sh")
    return parser.parse_args()


def precheck(base_url, key):
    from tests.incidents.test_ingestion import alert, message

    for path, auth in ((BARE_PATH, None), (AM_PATH, key)):
        request = urllib.request.Request(
            base_url + path,
            data=json.dumps(message(alert())).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {auth}"} if auth else {})},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 200:
                raise SystemExit(f"{PROG}: {path} answered {response.status}")


def query_counts(key):
    """Queries per request for each endpoint, with the test client (warm-up request first)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tests.incidents.test_ingestion import alert, message, resolved

    client = Client(HTTP_HOST="127.0.0.1")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    firing = alert(instance="count-1")
    stamp = f"{time.time()}"
    cases = {
        "bare": (BARE_PATH, [message(firing)] * 2, {}),
        "repeat": (AM_PATH, [message(firing, group_key=f"repeat-{stamp}")] * 2, headers),
        "churn (opens an incident)": (
            AM_PATH,
            [message(alert(instance="w"), group_key=f"w-{stamp}"), message(firing, group_key=f"o-{stamp}")],
            headers,
        ),
        "churn (resolves it)": (
            AM_PATH,
            [
                message(resolved(alert(instance="w")), group_key=f"w2-{stamp}"),
                message(resolved(firing), group_key=f"o-{stamp}"),
            ],
            headers,
        ),
    }
    counts = {}
    for name, (path, (warm, measured), extra) in cases.items():
        client.post(path, data=json.dumps(warm), content_type="application/json", **extra)
        with CaptureQueriesContext(connection) as captured:
            response = client.post(path, data=json.dumps(measured), content_type="application/json", **extra)
        assert response.status_code == 200, (name, response.content)
        counts[name] = len(captured.captured_queries)
    return counts


def serial_time(base_url, key, n=200):
    """Mean time of one request at a time over HTTP (no concurrency), for each endpoint."""
    from tests.incidents.test_ingestion import alert, message

    body = json.dumps(message(alert(instance="serial"), group_key="serial")).encode()
    times = {}
    for name, path in (("bare", BARE_PATH), ("repeat", AM_PATH)):
        request = urllib.request.Request(
            base_url + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        urllib.request.urlopen(request, timeout=30).read()
        start = time.perf_counter()
        for _ in range(n):
            urllib.request.urlopen(request, timeout=30).read()
        times[name] = (time.perf_counter() - start) / n * 1000
    return times


def outcome(key):
    """What the churn runs did to the database: incidents opened and resolved by this integration."""
    from incidents.models import AlertPayload, Incident, Integration

    integration = Integration.objects.get(key_prefix=key[:8])
    incidents = Incident.objects.filter(alerts__group__integration=integration).distinct()
    return {
        "payloads": AlertPayload.objects.filter(integration=integration).count(),
        "rejected_or_failed": AlertPayload.objects.filter(integration=integration).exclude(status="accepted").count(),
        "incidents": incidents.count(),
        "incidents_resolved": incidents.filter(status="resolved").count(),
        "incidents_total": Incident.objects.count(),
    }


def machine():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync = cursor.fetchone()[0]
    return {
        "cores": os.cpu_count(),
        "cpu": common.cpu_model(),
        "kernel": platform.release(),
        "postgresql": pg,
        "synchronous_commit": sync,
        "load": os.getloadavg()[0],
    }


def render(meta, runs, counts, serial, result):
    lines = [
        SECTION,
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']['cores']} cores ({meta['machine']['cpu']}), Linux {meta['machine']['kernel']}, "
        f"load {meta['machine']['load']:.2f} at start, {meta['load_after']:.2f} at the end; wrk, gunicorn and "
        f"PostgreSQL {meta['machine']['postgresql']} (synchronous_commit {meta['machine']['synchronous_commit']}) "
        "share these cores, and the machine is shared with other work: compare ratios, not absolute figures.",
        f"- Data: the database of `bench/generate.py` ({meta['incidents_before']:,} incidents before the run).",
        f"- Server: `{meta['gunicorn']}` (2 sync workers, DEBUG off, persistent connections), settings "
        "`bench.ingest.settings` (the product's, plus the bare endpoint in `bench/ingest/urls.py`).",
        f"- Load: `{meta['wrk']}`, after a {meta['warmup']} warm-up per endpoint; {meta['runs']} runs per "
        "endpoint, interleaved. Bodies: compact Alertmanager `version 4` webhooks of about 0.8 KB "
        "(`bench/ingest/post.lua`).",
        "",
        "| endpoint | posts/s (each run) | p50 | p99 | posts/s vs bare | queries |",
        "|---|---|---|---|---|---|",
    ]
    bare = sum(r["rps"] for r in runs["bare"]) / len(runs["bare"])
    count_key = {"bare": "bare", "repeat": "repeat", "churn": "churn (opens an incident)"}
    for name, path, label in ENDPOINTS:
        rs = runs[name]
        mean = sum(r["rps"] for r in rs) / len(rs)
        queries = str(counts[count_key[name]])
        if name == "churn":
            queries += f" / {counts['churn (resolves it)']}"
        rps = " / ".join(f"{r['rps']:.0f}" for r in rs)
        p50 = " / ".join(ms(r["p50_us"]) for r in rs)
        p99 = " / ".join(ms(r["p99_us"]) for r in rs)
        lines.append(f"| {label} `{path}` | {rps} | {p50} | {p99} | {mean / bare:.2f}× | {queries} |")
    errors = sum(r[k] for rs in runs.values() for r in rs for k in r if k.startswith("errors_"))
    lines += [
        "",
        f"- Goal: at least half the bare endpoint's throughput. Steady state (repeat): "
        f"**{sum(r['rps'] for r in runs['repeat']) / len(runs['repeat']) / bare:.2f}×**; every post changing "
        f"an incident (churn): {sum(r['rps'] for r in runs['churn']) / len(runs['churn']) / bare:.2f}×.",
        f"- One request at a time over HTTP (mean of 200, no concurrency): bare {serial['bare']:.1f} ms, "
        f"repeat {serial['repeat']:.1f} ms.",
        f"- Socket errors and non-2xx answers during the runs: {errors}. The bench integration received "
        f"{result['payloads']:,} posts ({result['rejected_or_failed']} not accepted) and its churn opened "
        f"{result['incidents']:,} incidents, {result['incidents_resolved']:,} of them resolved at the end.",
        "- Queries per post (CaptureQueriesContext, test client, after a warm-up post; churn: opening / "
        "resolving). A repeat: the body's `INSERT` in its own transaction (committed without waiting for the "
        "disk: the next commit on the connection, synchronous, makes it durable), then one round trip that "
        "marks the post accepted and reads the group's alerts; the key's lookup is remembered by the process "
        "for 10 s. A post that changes something then locks the group row, compares again, and goes through "
        "the incident services in one transaction.",
        "",
        f"Raw wrk output: `bench/results/ingest-{meta['stamp']}.json` (not committed).",
        "",
    ]
    return "\n".join(lines)


def main():
    args = parse_args()
    common.setup_django("bench.ingest.settings", PROG)
    from incidents.models import Incident

    RESULTS.mkdir(parents=True, exist_ok=True)
    date, stamp = common.now()
    meta = {
        "date": date,
        "stamp": stamp,
        "command": args.command,
        "gunicorn": args.gunicorn,
        "revision": common.git_revision(),
        "machine": machine(),
        "runs": args.runs,
        "warmup": args.warmup,
        "incidents_before": Incident.objects.count(),
        "wrk": f"{common.wrk_command_line(args)} -s bench/ingest/post.lua URL -- MODE KEY",
    }
    precheck(args.base_url, args.key)
    counts = query_counts(args.key)
    print("queries per post:", counts, flush=True)

    paths = {name: path for name, path, _ in ENDPOINTS}

    def target(name, run):
        tag = f"warm{stamp}" if run is None else f"{stamp}r{run}"
        return {"url": args.base_url + paths[name], "script": SCRIPT, "script_args": [name, args.key, tag]}

    def line(run, name, r):
        return f"run {run + 1} {name}: {r['rps']:.0f} posts/s, p50 {ms(r['p50_us'])}, p99 {ms(r['p99_us'])}"

    runs = common.interleaved(args, list(paths), prog=PROG, target=target, line=line)
    serial = serial_time(args.base_url, args.key)
    result = outcome(args.key)
    meta["load_after"] = os.getloadavg()[0]

    text = render(meta, runs, counts, serial, result)
    common.write_section(args.docs, SECTION, text)
    (RESULTS / f"ingest-{stamp}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "queries": counts, "serial_ms": serial, "outcome": result}, indent=2)
    )
    print(text)


if __name__ == "__main__":
    main()

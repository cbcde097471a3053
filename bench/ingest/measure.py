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

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True, help="the Alertmanager integration's key")
    parser.add_argument("--duration", default="15s")
    parser.add_argument("--warmup", default="5s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--command", default="bench/ingest/run.sh", help="the command line recorded in the docs")
    parser.add_argument("--gunicorn", default="", help="the gunicorn command line recorded in the docs")
    return parser.parse_args()


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.ingest.settings")
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("bench/ingest/measure.py: the benchmark runs on PostgreSQL only.")


def wrk(url, mode, key, tag, *, threads, connections, duration):
    command = [
        "/usr/bin/wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}",
        "--latency",
        "--timeout",
        "30s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        mode,
        key,
        tag,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^WRK_JSON (.*)$", output, re.MULTILINE)
    if not match:
        raise SystemExit(f"bench/ingest/measure.py: could not read wrk's output:\n{output}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["raw"] = output
    return result


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
                raise SystemExit(f"bench/ingest/measure.py: {path} answered {response.status}")


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
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "postgresql": pg,
        "synchronous_commit": sync,
        "load": os.getloadavg()[0],
    }


def git_revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return rev.strip() + (" with uncommitted changes" if dirty.strip() else "")
    except OSError:
        return "unknown"


def ms(us):
    return f"{us / 1000:.1f} ms" if us < 10_000 else f"{us / 1000:.0f} ms"


def render(meta, runs, counts, serial, result):
    lines = [
        SECTION,
        "",
        f"Measured {meta['date']} with `{meta['command']}` (commit {meta['revision']}).",
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


def write_section(path, text):
    path = Path(path)
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text, current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


def main():
    args = parse_args()
    setup_django()
    from incidents.models import Incident

    RESULTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "stamp": stamp,
        "command": args.command,
        "gunicorn": args.gunicorn,
        "revision": git_revision(),
        "machine": machine(),
        "runs": args.runs,
        "warmup": args.warmup,
        "incidents_before": Incident.objects.count(),
        "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency --timeout 30s "
        "-s bench/ingest/post.lua URL -- MODE KEY",
    }
    precheck(args.base_url, args.key)
    counts = query_counts(args.key)
    print("queries per post:", counts, flush=True)

    options = {"threads": args.threads, "connections": args.connections}
    for name, path, _ in ENDPOINTS:
        wrk(args.base_url + path, name, args.key, f"warm{stamp}", duration=args.warmup, **options)
    runs = {name: [] for name, _, _ in ENDPOINTS}
    for run in range(args.runs):
        for name, path, _ in ENDPOINTS:
            result = wrk(args.base_url + path, name, args.key, f"{stamp}r{run}", duration=args.duration, **options)
            runs[name].append(result)
            print(
                f"run {run + 1} {name}: {result['rps']:.0f} posts/s, p50 {ms(result['p50_us'])}, "
                f"p99 {ms(result['p99_us'])}",
                flush=True,
            )
    serial = serial_time(args.base_url, args.key)
    result = outcome(args.key)
    meta["load_after"] = os.getloadavg()[0]

    text = render(meta, runs, counts, serial, result)
    write_section(args.docs, text)
    (RESULTS / f"ingest-{stamp}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "queries": counts, "serial_ms": serial, "outcome": result}, indent=2)
    )
    print(text)


if __name__ == "__main__":
    main()

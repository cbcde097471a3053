"""The public status page under a spike (issue 14), against a bare Django view, in the same run.

Called by bench/status/run.sh (it sets the environment and starts gunicorn):

    .venv/bin/python bench/status/measure.py --prepare          # the public state of an outage (idempotent)
    .venv/bin/python bench/status/measure.py --base-url http://127.0.0.1:8768 --connections 64

Endpoints: the bare `.values()` view (/bench/baseline/), /status/, and the Statuspage v2 documents
summary.json, status.json, components.json and incidents/unresolved.json, plus summary.json sent
with the If-None-Match of its current ETag (what a CDN or a polling client revalidating gets: 304).
After pre-checks (200, ETag, 304) and the queries of a warm request (CaptureQueriesContext around a
test-client request, the cache warm), each endpoint gets a warm-up, then rounds of
`wrk -t2 -cN -d15s --latency --timeout 30s`, interleaved across endpoints: first with nothing
changing ("still"), then while an update is published every second through the services
("publishing"), each publish timed until summary.json, fetched over HTTP, shows it. A round whose
1-minute load (before or after) is above --max-load is noisy and repeated (up to --retries times);
only quiet rounds are quoted when there are any.
"""

import functools
import json
import signal
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)
from bench.measure import machine  # noqa: E402

PROG = "bench/status/measure.py"
SECTION = "## Status page under a spike (issue 14)"
MARK = "[status bench]"
PROGRESS = "Bench progress"  # the body of every update the publisher adds
WRITER = "bench-status-writer"
GOAL = 1.0  # throughput of each document ≥ 1× the bare view's, same round
DOCUMENTS = {
    "index": "/status/",
    "summary": "/status/api/v2/summary.json",
    "status": "/status/api/v2/status.json",
    "components": "/status/api/v2/components.json",
    "unresolved": "/status/api/v2/incidents/unresolved.json",
}
LABELS = {
    "baseline": "bare `.values()` view (baseline)",
    "index": "`/status/`",
    "summary": "`summary.json`",
    "status": "`status.json`",
    "components": "`components.json`",
    "unresolved": "`incidents/unresolved.json`",
    "summary_304": "`summary.json` with If-None-Match (304)",
    "index_gzip": "`/status/` with Accept-Encoding: gzip",
}
# Beyond the five documents, with nothing changing: what a CDN or a poller revalidating gets (304), and
# what browsers get (the copy gzipped at render time).
EXTRA = {"summary_304": "summary", "index_gzip": "index"}


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--prepare", action="store_true", help="only add the public state of an outage, then exit")
    parser.add_argument("--base-url", default="http://127.0.0.1:8768")
    parser.add_argument("--max-load", type=float, default=2.0)
    parser.add_argument("--retries", type=int, default=1, help="extra rounds allowed to replace noisy ones")
    parser.add_argument("--quiet-wait", type=int, default=60, help="seconds to wait for a quieter machine first")
    common.add_run_options(parser, command="bench/status/run.sh")
    return parser.parse_args()


# ---- the public state of an outage -----------------------------------------------------------------------


def writer():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, created = get_user_model().objects.get_or_create(
        username=WRITER, defaults={"is_staff": True, "email": "bench-status@example.com"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get(name="Communications"))
    return user


def _publish(incident, actor, *, status, title, body, components):
    from comms import services as comms_services

    draft = comms_services.update_draft_create(
        incident=incident, actor=actor, audience="external", public_status=status, title=title, body=body,
        components=components,
    )  # fmt: skip
    return comms_services.update_publish(update=draft, actor=actor)


def prepare():
    """Three unresolved public incidents, 30 resolved ones of the last month (three updates each), a
    maintenance in progress and one upcoming, on the generated public services. Idempotent; the updates
    an earlier run's publisher added are taken back, so that every run starts from the same page."""
    from django.utils import timezone

    from comms import services as comms_services
    from comms.models import ScheduledMaintenance, Update
    from incidents import services as incident_services
    from incidents.models import Incident, Service, Severity

    if Incident.objects.filter(title__startswith=MARK).exists():
        # Without this every document would carry every update of every earlier run (one a second).
        taken_back, _ = Update.objects.filter(incident__title__startswith=MARK, body__startswith=PROGRESS).delete()
        print(f"{PROG}: the public state is already there ({taken_back} rows of earlier runs' publishing taken back)")
        return
    actor = writer()
    Severity.objects.update(update_approval_required=False, notify_email_subscribers=False)
    public = list(Service.objects.filter(is_public=True).order_by("id"))
    if len(public) < 6:
        sys.exit(f"{PROG}: expected the generated public services; run bench/generate.py first")
    severities = {s.level: s for s in Severity.objects.all()}
    now = timezone.now()
    for n in range(30):
        service = public[n % len(public)]
        started = now - timedelta(days=1 + n, hours=3)
        incident = incident_services.incident_declare(
            title=f"{MARK} resolved {n}", severity=severities[2 + n % 2], actor=actor, services=[service],
            detected_at=started, started_at=started,
        )  # fmt: skip
        for status, component in (("investigating", "partial_outage"), ("identified", "degraded_performance"),
                                  ("resolved", "operational")):  # fmt: skip
            _publish(incident, actor, status=status, title=f"{service.name} errors",
                     body=f"{status.title()}: errors on **{service.name}**.", components=[(service, component)])  # fmt: skip
        incident_services.incident_transition(incident=incident, to="resolved", actor=actor)
    for n, (level, component) in enumerate(((1, "major_outage"), (2, "partial_outage"), (3, "degraded_performance"))):
        service = public[n]
        incident = incident_services.incident_declare(
            title=f"{MARK} open {n}", severity=severities[level], actor=actor, services=[service]
        )
        for status in ("investigating", "identified"):
            _publish(incident, actor, status=status, title=f"{service.name}: {component.replace('_', ' ')}",
                     body=f"We are working on **{service.name}**.", components=[(service, component)])  # fmt: skip
    active = comms_services.maintenance_schedule(
        name=f"{MARK} database upgrade", body="Upgrading the **primary database**.", services=public[3:5],
        scheduled_for=now, scheduled_until=now + timedelta(hours=4),
    )  # fmt: skip
    comms_services.maintenance_transition(maintenance=active, to=ScheduledMaintenance.Status.IN_PROGRESS)
    comms_services.maintenance_schedule(
        name=f"{MARK} network work", body="Moving the **load balancers**.", services=public[5:6],
        scheduled_for=now + timedelta(days=3), scheduled_until=now + timedelta(days=3, hours=2),
    )  # fmt: skip
    print(f"{PROG}: added 33 public incidents and 2 maintenances")


# ---- measuring -----------------------------------------------------------------------------------------


def fetch(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def precheck(base):
    """Every document answers 200 with an ETag and Cache-Control, and 304 to its own ETag."""
    etags = {}
    for name, path in DOCUMENTS.items():
        status, headers, body = fetch(base + path)
        if status != 200 or "ETag" not in headers or "public" not in headers.get("Cache-Control", ""):
            sys.exit(f"{PROG}: {path} answered {status} {headers}: {body[:200]!r}")
        etags[name] = headers["ETag"]
        status, _headers, body = fetch(base + path, {"If-None-Match": headers["ETag"]})
        if status != 304 or body:
            sys.exit(f"{PROG}: {path} did not answer 304 to its ETag (got {status})")
        status, zipped, body = fetch(base + path, {"Accept-Encoding": "gzip"})
        if status != 200 or zipped.get("Content-Encoding") != "gzip":
            sys.exit(f"{PROG}: {path} did not answer gzip to Accept-Encoding: gzip (got {status} {zipped})")
    status, _headers, _body = fetch(base + "/bench/baseline/")
    if status != 200:
        sys.exit(f"{PROG}: the baseline answered {status}")
    summary = json.loads(fetch(base + DOCUMENTS["summary"])[2])
    return etags, {"unresolved": len(summary["incidents"]), "components": len(summary["components"]),
                   "maintenances": len(summary["scheduled_maintenances"]), "indicator": summary["status"]["indicator"]}  # fmt: skip


def sizes(base):
    """Bytes of each document: the publisher's updates make them grow (one more update a second)."""
    return {name: len(fetch(base + path)[2]) for name, path in DOCUMENTS.items()}


def warm_queries():
    """Queries of a request once its document is cached (the test client, in this process, same cache)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client, counts = Client(HTTP_HOST="127.0.0.1"), {}  # a host ALLOWED_HOSTS has (else 400s, 0 queries)
    for name, path in DOCUMENTS.items():
        client.get(path)
        with CaptureQueriesContext(connection) as queries:
            status = client.get(path).status_code
        if status != 200:
            sys.exit(f"{PROG}: {path} answered {status} to the test client")
        counts[name] = len(queries)
    return counts


class Publisher(threading.Thread):
    """Publishes an update every second on the first open incident (the harshest case: one incident
    gathers every update), while a second thread fetches summary.json and /status/ over HTTP in turn, as
    customers do, and times, for each update, how long from its commit until it shows on each (/status/
    shows an incident's latest updates, so each new one). The commit's time is taken by the first
    on-commit callback, so what runs after it (the re-render of the documents being read) counts in
    the delay."""

    SEEN_WITHIN = 10  # seconds; an update not shown by then counts as never seen
    WATCHED = ("summary", "index")

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base, self.stop, self.published = base, threading.Event(), 0
        self.lags = {name: [] for name in self.WATCHED}  # per document: seconds from commit to shown
        self.lags_all = []  # per update: until it showed on every watched document
        self.stored = []  # per update: from its commit until its re-rendered documents were in the cache
        # marker -> (time of its commit, documents that have not shown it yet), until seen on all
        self.pending, self.lock = {}, threading.Lock()

    def run(self):
        from django.db import connection, transaction

        from comms.models import UpdateComponent
        from incidents.models import Incident

        actor = writer()
        incident = Incident.objects.filter(title=f"{MARK} open 0").get()
        component = UpdateComponent.objects.filter(update__incident=incident).select_related("service").first()
        watcher = threading.Thread(target=self.watch, daemon=True)
        watcher.start()
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                self.published += 1
                marker = f"{PROGRESS} {self.published} at {time.time():.0f}"
                committed = []
                with transaction.atomic():
                    transaction.on_commit(functools.partial(self.committed, marker, committed))
                    _publish(incident, actor, status="identified", title=component.service.name + ": major outage",
                             body=marker, components=[(component.service, "major_outage")])  # fmt: skip
                # The on-commit callbacks have run: the documents being read are re-rendered and stored, so
                # every request the server answers from now on shows the update.
                self.stored.append(time.monotonic() - committed[0])
                self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
        finally:
            connection.close()
            watcher.join(self.SEEN_WITHIN + 5)

    def committed(self, marker, at):
        at.append(time.monotonic())
        with self.lock:
            self.pending[marker] = (at[0], set(self.WATCHED))

    def watch(self):
        turn = 0
        while not self.stop.is_set() or self.pending:
            name = self.WATCHED[turn % len(self.WATCHED)]
            turn += 1
            body = fetch(self.base + DOCUMENTS[name])[2]
            now = time.monotonic()
            with self.lock:
                for marker, (committed, waiting) in list(self.pending.items()):
                    if name in waiting and marker.encode() in body:
                        waiting.discard(name)
                        self.lags[name].append(now - committed)
                        if not waiting:
                            self.lags_all.append(now - committed)
                    if not waiting or now - committed > self.SEEN_WITHIN:
                        del self.pending[marker]
            time.sleep(0.01)


def wrk_target(args, name, etags):
    url = args.base_url + ("/bench/baseline/" if name == "baseline" else DOCUMENTS[EXTRA.get(name, name)])
    headers = {"summary_304": [f"If-None-Match: {etags['summary']}"], "index_gzip": ["Accept-Encoding: gzip"]}
    headers = headers.get(name, [])
    return {"url": url, "script": ROOT / "bench" / "wrk_report.lua", "headers": headers}


def rounds(args, names, etags, phase):
    """args.runs quiet rounds (noisy ones repeated, args.retries extra at most) of wrk over `names`."""
    options = {"prog": PROG, "threads": args.threads, "connections": args.connections}
    quiet, noisy = [], []
    while len(quiet) < args.runs and len(quiet) + len(noisy) < args.runs + args.retries:
        common.wait_for_quiet(args.max_load, timeout=args.quiet_wait, prog=PROG)
        load_before = common.load_now()
        results = {}
        for name in names:
            results[name] = common.wrk(**wrk_target(args, name, etags), duration=args.duration, **options)
            results[name].pop("raw")
            ratio = results[name]["rps"] / results["baseline"]["rps"]
            print(f"{phase} round {len(quiet) + len(noisy) + 1} {name}: {results[name]['rps']:.0f} req/s "
                  f"({ratio:.2f}x), p50 {common.ms(results[name]['p50_us'])}", flush=True)  # fmt: skip
        load_after = common.load_now()
        round_ = {"results": results, "load_before": load_before, "load_after": load_after,
                  "noisy": max(load_before, load_after) > args.max_load}  # fmt: skip
        (noisy if round_["noisy"] else quiet).append(round_)
    return (quiet, len(noisy)) if quiet else (noisy, 0)


def _lag_figures(lags):
    lags = sorted(lags)
    return {
        "seen": len(lags),
        "p50_s": statistics.median(lags) if lags else None,
        "max_s": lags[-1] if lags else None,
        "within_1s": sum(1 for lag in lags if lag <= 1.0),
    }


def measure(args):
    etags, shape = precheck(args.base_url)
    queries = warm_queries()
    names = ["baseline", *DOCUMENTS, *EXTRA]
    options = {"prog": PROG, "threads": args.threads, "connections": args.connections}
    for name in names:
        common.wrk(**wrk_target(args, name, etags), duration=args.warmup, **options)
    still, still_dropped = rounds(args, names, etags, "still")
    sizes_before = sizes(args.base_url)
    publisher = Publisher(args.base_url)
    publisher.start()
    try:
        busy, busy_dropped = rounds(args, [n for n in names if n not in EXTRA], etags, "publishing")
    finally:
        publisher.stop.set()
        publisher.join(30)
    freshness = {
        "published": publisher.published,
        **_lag_figures(publisher.lags_all),
        "documents": {name: _lag_figures(lags) for name, lags in publisher.lags.items()},
        "stored": _lag_figures(publisher.stored),
    }
    return {"shape": shape, "queries": queries, "still": still, "publishing": busy,
            "sizes": {"before": sizes_before, "after": sizes(args.base_url)},
            "dropped": still_dropped + busy_dropped, "freshness": freshness}  # fmt: skip


# ---- the docs section ------------------------------------------------------------------------------------


def _table(rounds_):
    names = list(rounds_[0]["results"])
    header = "| endpoint | " + " | ".join(f"round {i + 1}: req/s (× baseline), p50, p99" for i in range(len(rounds_))) + " |"
    lines = [header, "|---|" + "---|" * len(rounds_)]
    for name in names:
        cells = []
        for round_ in rounds_:
            result, base = round_["results"][name], round_["results"]["baseline"]
            errors = f", {result['non_2xx_3xx']} non-2xx/3xx" if result["non_2xx_3xx"] else ""
            cells.append(f"{result['rps']:.0f} ({result['rps'] / base['rps']:.2f}×), "
                         f"{common.ms(result['p50_us'])}, {common.ms(result['p99_us'])}{errors}")  # fmt: skip
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    loads = ", ".join(
        f"round {i + 1}: {r['load_before']:.2f} → {r['load_after']:.2f}{' (noisy)' if r['noisy'] else ''}"
        for i, r in enumerate(rounds_)
    )
    return lines + ["", f"Load (1-minute average, before → after each round): {loads}."]


def _worst_ratio(rounds_):
    return min(
        r["results"][name]["rps"] / r["results"]["baseline"]["rps"]
        for r in rounds_
        for name in DOCUMENTS
        if name in r["results"]
    )


def render(meta, data, args):
    from comms.status.documents import FRONT_PAGE_UPDATES

    fresh, shape, queries = data["freshness"], data["shape"], data["queries"]
    still_worst, busy_worst = _worst_ratio(data["still"]), _worst_ratio(data["publishing"])
    lines = [
        SECTION,
        "",
        "How to reproduce: `bench/status/run.sh` from the repository root (PostgreSQL, Redis and wrk; the "
        "database `incidents_status_bench` is created, filled and given the public state of an outage). Raw "
        "output: `bench/results/status-*.json`.",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}; wrk, gunicorn, PostgreSQL and Redis share these cores (and the machine "
        "is shared with other work: compare the ratios, measured in the same round).",
        f"- Server: `{meta['gunicorn']}`, DEBUG off, the cache on Redis (`CACHE_URL`) as in production. Load: "
        f"`{meta['wrk']}` per endpoint and round, interleaved across endpoints after a {meta['warmup']} warm-up.",
        f"- Data: 200,000 generated incidents; on the page {shape['unresolved']} unresolved public incidents, "
        f"{shape['components']} components and groups, {shape['maintenances']} maintenances (one in progress), "
        f"30 incidents resolved in the last month (status indicator \"{shape['indicator']}\").",
        "- Baseline: the bare Django view returning 50 incidents with `.values()` as JSON "
        "(`bench/baseline_urls.py`), the same gunicorn, the same round.",
        "- How: each public document is rendered once per change of the public state and kept in the cache with "
        "its ETag, its gzipped copy and (HTML) its Content-Security-Policy (`comms/status/cache.py`); a request "
        "is one cache round trip and no work on the body. After a change the process that "
        "made it (here the publisher, on these cores) re-renders the documents being read, and readers serve the "
        "previous copy until the new one is in (`comms/status/refresh.py`): no request renders. Queries of a "
        "warm request: "
        + ", ".join(f"{LABELS[name]} {count}" for name, count in queries.items())
        + ".",
        f"- A round with a 1-minute load above {args.max_load:.1f} (before or after it) is noisy: it is repeated "
        f"and not quoted when a quiet round exists"
        + (f"; {data['dropped']} noisy round(s) were dropped." if data["dropped"] else "."),
        "",
        "### Nothing changing",
        "",
        *_table(data["still"]),
        "",
        "### While an update is published every second",
        "",
        *_table(data["publishing"]),
        "",
        "Size of each document before → after these rounds (every publish adds an update to one unresolved "
        "incident; the JSON documents show all of an incident's updates, as Statuspage's do, `/status/` its "
        f"latest {FRONT_PAGE_UPDATES} and a link to its page with all of them): "
        + ", ".join(
            f"{LABELS[name]} {data['sizes']['before'][name] / 1000:.0f} → {data['sizes']['after'][name] / 1000:.0f} kB"
            for name in DOCUMENTS
        )
        + ".",
        "",
        f"Freshness: {fresh['published']} updates published through the services during these rounds; "
        + (
            f"summary.json and `/status/`, fetched over HTTP in turn, showed each on both within a median "
            f"{fresh['p50_s'] * 1000:.0f} ms and at most {fresh['max_s'] * 1000:.0f} ms of its commit "
            f"({fresh['within_1s']} of {fresh['published']} within 1 s; "
            + "; ".join(
                f"{LABELS[name]} alone: median {lag['p50_s'] * 1000:.0f} ms, at most {lag['max_s'] * 1000:.0f} ms"
                for name, lag in fresh["documents"].items()
                if lag["seen"]
            )
            + "). These times include the wait of each poll behind wrk's 64 connections (the p50 latency of "
            "the round). On the server, the documents being read were re-rendered and stored a median "
            f"{fresh['stored']['p50_s'] * 1000:.0f} ms and at most {fresh['stored']['max_s'] * 1000:.0f} ms after "
            f"the commit ({fresh['stored']['within_1s']} of {fresh['stored']['seen']} within 1 s): every request "
            "answered after that shows the update."
            if fresh["seen"]
            else "none was seen on both summary.json and `/status/` within 10 s."
        ),
        "",
        f"Goal (issue 14): every document at ≥ {GOAL:.0f}× the baseline's throughput in the same round. Lowest "
        f"ratio of a document: {still_worst:.2f}× with nothing changing, {busy_worst:.2f}× while publishing "
        f"every second — {'met' if min(still_worst, busy_worst) >= GOAL else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: unwind (the publisher stops too)
    common.setup_django("bench.settings", PROG)
    if args.prepare:
        prepare()
        return
    meta = common.run_meta(args, machine())
    data = measure(args)
    (common.RESULTS / f"status-{meta['stamp']}.json").write_text(json.dumps({"meta": meta, **data}, indent=2))
    common.write_section(args.docs, SECTION, render(meta, data, args))
    print(f"{PROG}: wrote {SECTION!r} into {args.docs}")


if __name__ == "__main__":
    main()

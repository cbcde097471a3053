"""Fan-out benchmark (issues 5 and 14): one published update to N e-mail subscribers, sent by W Celery
worker processes on Redis and PostgreSQL to a real SMTP server. Called by bench/fanout/run.sh (it sets
the environment):

    .venv/bin/python bench/fanout/measure.py --subscribers 10000 --workers 2 --chunks 50

For each chunk size (deliveries per Celery task), --rounds times: a real SMTP server (aiosmtpd,
bench/fanout/smtp_sink.py, on a free 127.0.0.1 port) is started and W `celery worker --pool=solo`
processes with EMAIL_URL=smtp://127.0.0.1:PORT; one update is published (update_deliveries_create in a
transaction: the rows, then the fan-out task after commit), and the clock runs from the commit until
every delivery is marked sent. The server then says what it received: messages, distinct recipients,
recipients and Message-IDs seen twice, and the TCP connections they came on (one per chunk when the
connection is reused). `--transport file` writes the e-mails with Django's file backend instead.
A round on a busy machine (1-minute load above --max-load, before or after) is repeated, up to
--retries times, and only quiet rounds are quoted when there are any. Queries per delivery:
CaptureQueriesContext around the send service for chunks of 10, 50 and 200 deliveries (in this
process, e-mail to memory), and around the publish.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)
from bench.measure import machine  # noqa: E402

PROG = "bench/fanout/measure.py"
SECTION = "## Fan-out (issue 5)"
GOAL_SECONDS = 20  # issue 14: 10,000 subscribers, 2 workers, a real SMTP server
EMAIL_PREFIX = "bench-fanout-"
SEPARATOR = "\n" + "-" * 79 + "\n"


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--chunks",
        default="50",
        help="deliveries per task, each optionally :audience (a smaller audience for slow variants), e.g. 50,1:2000",
    )
    parser.add_argument("--transport", choices=("smtp", "file"), default="smtp")
    parser.add_argument("--rounds", type=int, default=2, help="quoted runs per chunk size")
    parser.add_argument("--max-load", type=float, default=float(os.cpu_count() or 2),
                        help="a round with a higher 1-minute load (before or after) is noisy and repeated")  # fmt: skip
    parser.add_argument("--retries", type=int, default=1, help="extra runs allowed to replace noisy ones")
    parser.add_argument("--quiet-wait", type=int, default=60, help="seconds to wait for a quieter machine first")
    parser.add_argument("--timeout", type=int, default=900, help="seconds to wait for one fan-out")
    parser.add_argument("--docs", default=str(common.DOCS))
    parser.add_argument("--command", default="bench/fanout/run.sh")
    return parser.parse_args()


def ensure_subscribers(n):
    from django.utils import timezone

    from comms.models import Subscriber

    have = Subscriber.objects.filter(email__startswith=EMAIL_PREFIX).count()
    if have < n:
        Subscriber.objects.bulk_create(
            (
                Subscriber(channel="email", email=f"{EMAIL_PREFIX}{i:06d}@example.com", confirmed_at=timezone.now())
                for i in range(n)
            ),
            batch_size=2000,
            ignore_conflicts=True,
        )
    Subscriber.objects.exclude(email__startswith=EMAIL_PREFIX).update(unsubscribed_at=timezone.now())
    extra = Subscriber.objects.filter(email__startswith=EMAIL_PREFIX).order_by("email")[n:].values_list("pk", flat=True)
    Subscriber.objects.filter(pk__in=list(extra)).delete()
    return Subscriber.objects.filter(email__startswith=EMAIL_PREFIX, unsubscribed_at__isnull=True).count()


def new_update():
    from django.utils import timezone

    from comms.models import Update
    from incidents import services as incident_services
    from incidents.models import Severity

    severity = Severity.objects.get(level=3)  # e-mail subscribers hear of it (seeded policy)
    incident = incident_services.incident_declare(title="Fan-out benchmark", severity=severity, actor=None)
    update = Update.objects.create(
        incident=incident,
        audience=Update.Audience.EXTERNAL,
        public_status=Update.PublicStatus.INVESTIGATING,
        title="Fan-out benchmark",
        body="We are investigating **elevated errors**.",
        body_html="<p>We are investigating <strong>elevated errors</strong>.</p>",
        status=Update.Status.PUBLISHED,
        published_at=timezone.now(),
    )
    return update


def start_workers(count, chunk, email_url):
    env = {
        **os.environ,
        "EMAIL_URL": email_url,
        "COMMS_DELIVERY_CHUNK_SIZE": str(chunk),
        "LOG_LEVEL": "WARNING",
    }
    workers = []
    for i in range(count):
        log = open(common.RESULTS / f"fanout-worker-{i}.log", "w")  # noqa: SIM115  closed with the process
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "incidents_site", "worker", "--pool=solo", "-l", "WARNING",
                 "-n", f"fanout-bench-{i}-{os.getpid()}@%h", "--without-mingle", "--without-gossip"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )
    from incidents_site.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        if sum(1 for reply in replies for name in reply if name.startswith("fanout-bench-")) >= count:
            return workers
    stop_workers(workers)
    sys.exit(f"{PROG}: the workers did not answer; see bench/results/fanout-worker-*.log")


def stop_workers(workers):
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()


def count_messages(mail_dir):
    recipients = []
    for path in Path(mail_dir).glob("*.log"):
        for message in path.read_text(errors="replace").split(SEPARATOR):
            match = re.search(r"^To: (.+)$", message, re.MULTILINE)
            if match:
                recipients.append(match[1].strip())
    return {"messages": len(recipients), "recipients": len(set(recipients))}


def cpu_seconds(pid):
    """User + system CPU time a process has used so far (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_backends():
    """The PostgreSQL server processes of the other connections to this database (the workers')."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


class SmtpSink:
    """bench/fanout/smtp_sink.py in its own process (its CPU is not the measuring process's)."""

    def __init__(self, name):
        self.ready = common.RESULTS / f"fanout-smtp-{name}.port"
        self.out = common.RESULTS / f"fanout-smtp-{name}.json"
        for path in (self.ready, self.out):
            path.unlink(missing_ok=True)
        self.log = open(common.RESULTS / f"fanout-smtp-{name}.log", "w")  # noqa: SIM115  closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "fanout" / "smtp_sink.py"), "--ready", str(self.ready),
             "--out", str(self.out), "--seconds", "1800"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not (self.ready.exists() and self.ready.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"{PROG}: the SMTP server did not start; see {self.log.name}")
            time.sleep(0.1)
        self.port = int(self.ready.read_text())

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        return json.loads(self.out.read_text()) if self.out.exists() else {}


def fan_out_once(args, chunk):
    from django.db import transaction
    from django.db.models import Max, Min
    from django.utils import timezone

    from comms import services
    from comms.models import Delivery
    from incidents_site.celery import app

    mail_dir = common.RESULTS / f"fanout-mail-{chunk}"
    sink = None
    if args.transport == "smtp":
        sink = SmtpSink(str(chunk))
        email_url = f"smtp://127.0.0.1:{sink.port}"
    else:
        shutil.rmtree(mail_dir, ignore_errors=True)
        mail_dir.mkdir(parents=True)
        email_url = f"filemail:///{mail_dir}"  # four slashes: an absolute path
    app.control.purge()
    load_before = common.load_now()
    workers = start_workers(args.workers, chunk, email_url)
    try:
        update = new_update()
        # CPU time from here on: what the fan-out itself costs, whatever else the machine runs.
        cpu_start = {
            "workers": sum(cpu_seconds(w.pid) for w in workers),
            "postgres": {pid: cpu_seconds(pid) for pid in database_backends()},
            "smtp": cpu_seconds(sink.process.pid) if sink else 0.0,
        }
        started = time.monotonic()
        with transaction.atomic():
            created = services.update_deliveries_create(update=update)
        committed = time.monotonic()
        committed_at = timezone.now()
        deliveries = Delivery.objects.filter(update=update)
        sent = 0
        backend_cpu = dict(cpu_start["postgres"])  # the workers' connections come and go: sampled as we wait
        while time.monotonic() - committed < args.timeout:
            for pid in database_backends():  # a process that just ended reads 0: keep its last figure
                backend_cpu[pid] = max(backend_cpu.get(pid, 0.0), cpu_seconds(pid))
            sent = deliveries.filter(state=Delivery.State.SENT).count()
            if sent + deliveries.filter(state=Delivery.State.FAILED).count() >= created:
                break
            time.sleep(0.2)
        done = time.monotonic()
        load_after = common.load_now()
        span = deliveries.aggregate(first=Min("sent_at"), last=Max("sent_at"))
        cpu = {
            "workers": sum(cpu_seconds(w.pid) for w in workers) - cpu_start["workers"],
            "postgres": sum(cpu - cpu_start["postgres"].get(pid, 0.0) for pid, cpu in backend_cpu.items()),
            "smtp": (cpu_seconds(sink.process.pid) - cpu_start["smtp"]) if sink else 0.0,
        }
    finally:
        stop_workers(workers)
        received = sink.stop() if sink else {}
    if not sink:
        received = count_messages(mail_dir)
        shutil.rmtree(mail_dir, ignore_errors=True)
    return {
        "chunk": chunk,
        "transport": args.transport,
        "deliveries": created,
        "publish_s": committed - started,
        "all_sent_s": done - committed,
        "first_sent_s": (span["first"] - committed_at).total_seconds() if span["first"] else None,
        "db_span_s": (span["last"] - span["first"]).total_seconds() if span["first"] else None,
        "sent": sent,
        "failed": deliveries.filter(state=Delivery.State.FAILED).count(),
        "received": received,
        "cpu_s": cpu,
        "load_before": load_before,
        "load_after": load_after,
        "noisy": max(load_before, load_after) > args.max_load,
        "progress": dict(services.update_delivery_progress(update)),
    }


def rounds_for(args, chunk):
    """args.rounds runs of one chunk size; a noisy run is repeated, args.retries extra runs at most.
    Returns (the runs to quote, how many noisy runs were dropped)."""
    quiet, noisy = [], []
    while len(quiet) < args.rounds and len(quiet) + len(noisy) < args.rounds + args.retries:
        common.wait_for_quiet(args.max_load, timeout=args.quiet_wait, prog=PROG)
        run = fan_out_once(args, chunk)
        print(json.dumps(run), flush=True)
        (noisy if run["noisy"] else quiet).append(run)
    return (quiet, len(noisy)) if quiet else (noisy, 0)  # never quiet: quoted, marked noisy


def queries_per_delivery():
    """Queries of the send service for chunks of several sizes, and of the publish (rows created)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext, override_settings

    from comms import services
    from comms.models import Delivery

    rows = []
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        from django.core import mail

        mail.outbox = []
        update = new_update()
        with CaptureQueriesContext(connection) as publish:
            with transaction.atomic():
                created = services.update_deliveries_create(update=update)
        ids = list(Delivery.objects.filter(update=update).order_by("id").values_list("pk", flat=True))
        start = 0
        for size in (10, 50, 200):
            chunk = ids[start : start + size]
            start += size
            with CaptureQueriesContext(connection) as send:
                services.deliveries_send(delivery_ids=chunk)
            rows.append((size, len(send)))
        Delivery.objects.filter(update=update, state=Delivery.State.PENDING).update(state=Delivery.State.FAILED)
    return {"publish_rows": created, "publish_queries": len(publish), "send": rows}


def _cpu(cpu):
    total = sum(cpu.values())
    return f"{cpu['workers']:.1f} + {cpu['postgres']:.1f} + {cpu['smtp']:.1f} = {total:.1f} s"


def render(meta, runs, discarded, queries, args):
    source = ("a real SMTP server on this machine (aiosmtpd, `bench/fanout/smtp_sink.py`, started by the "
              "benchmark on a free 127.0.0.1 port), one connection per chunk reused for all its messages"
              if args.transport == "smtp" else "Django's file backend (`EMAIL_URL=filemail://…`)")  # fmt: skip
    lines = [
        SECTION,
        "",
        "How to reproduce: `bench/fanout/run.sh` from the repository root (PostgreSQL and Redis running; "
        "`CELERY_BROKER_URL` defaults to `redis://127.0.0.1:6379/7`, `DATABASE_URL` to the database "
        "`incidents_fanout_bench`, created and migrated). Raw output: `bench/results/fanout-*.json`.",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}; the workers, the SMTP server, PostgreSQL and Redis share these cores "
        "(and the machine is shared with other work: the load is given per run).",
        "- One external update published to every confirmed e-mail subscriber (the audience is in the table); "
        f"{args.workers} worker processes (`celery worker --pool=solo`, acks late, prefetch 1); e-mail sent to "
        f"{source}.",
        "- The clock runs from the publishing transaction's commit until every delivery is marked sent; "
        "\"first sent\" is the first `sent_at` after the commit. \"Received\" and \"twice\" are what the "
        "mail server counted (messages, distinct recipients, recipients or Message-IDs it saw more than once).",
        f"- A run with a 1-minute load above {args.max_load:.1f} (before or after it) is noisy: it is repeated "
        f"(up to {args.retries} more runs) and not quoted when a quiet run exists"
        + (f"; {discarded} noisy run(s) were discarded." if discarded else "."),
        "- CPU: the user + system time the worker processes, their PostgreSQL server processes and the SMTP "
        "server used from the publish to the last delivery (/proc): what the fan-out costs whatever else runs. "
        "On two otherwise idle cores it cannot take less than half the total.",
        f"- Goal (issue 14): 10,000 subscribers, 2 workers, a real SMTP server, all sent in ≤ {GOAL_SECONDS} s.",
        "",
        "| deliveries per task | deliveries | load before → after | publish (rows + commit) | first sent | "
        "all sent | deliveries/s | CPU: workers + PostgreSQL + SMTP server | received | distinct recipients | "
        "twice | SMTP connections | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rate = run["sent"] / run["all_sent_s"] if run["all_sent_s"] else 0
        first = f"{run['first_sent_s']:.2f} s" if run["first_sent_s"] is not None else "–"
        got = run["received"]
        twice = got.get("recipients_more_than_once", 0) + got.get("message_ids_more_than_once", 0)
        connections = (
            f"{got['connections']:,} ({got['messages_per_connection_min']}–{got['messages_per_connection_max']} "
            "messages each)" if "connections" in got else "–"
        )  # fmt: skip
        noisy = " (noisy)" if run["noisy"] else ""
        lines.append(
            f"| {run['chunk']} | {run['deliveries']:,} | {run['load_before']:.2f} → {run['load_after']:.2f}{noisy} | "
            f"{run['publish_s']:.2f} s | {first} | {run['all_sent_s']:.1f} s | {rate:.0f} | {_cpu(run['cpu_s'])} | "
            f"{got.get('messages', 0):,} | {got.get('recipients', 0):,} | {twice} | {connections} | {run['failed']} |"
        )
    send = queries["send"]
    lines += [
        "",
        "Queries (CaptureQueriesContext, in-process): publishing the update to "
        f"{queries['publish_rows']:,} recipients took {queries['publish_queries']} queries (the recipients in one "
        "SELECT, the rows in batches of 1,000). Sending a chunk: "
        + ", ".join(f"{size} deliveries → {count} queries ({count / size:.2f} per delivery)" for size, count in send)
        + ". That is one claim UPDATE and one SELECT per chunk, plus one UPDATE (sent) per delivery: constant per "
        "delivery, whatever the audience's size. The fan-out task adds one SELECT per update and one UPDATE "
        "(enqueued) per chunk.",
    ]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    # Stopped (timeout, Ctrl-C): unwind, so the workers and the SMTP server are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    common.setup_django("incidents_site.settings", PROG)
    meta = common.run_meta(argparse_like(args), machine())
    runs, discarded = [], 0
    for spec in (c.strip() for c in args.chunks.split(",") if c.strip()):
        chunk, _sep, audience = spec.partition(":")
        chunk, audience = int(chunk), int(audience or args.subscribers)
        print(f"{ensure_subscribers(audience)} subscribers, {chunk} deliveries per task", flush=True)
        quoted, dropped = rounds_for(args, chunk)
        runs += quoted
        discarded += dropped
    queries = queries_per_delivery()
    print(json.dumps(queries), flush=True)
    (common.RESULTS / f"fanout-{meta['stamp']}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "discarded": discarded, "queries": queries}, indent=2)
    )
    common.write_section(args.docs, SECTION, render(meta, runs, discarded, queries, args))


def argparse_like(args):
    """run_meta wants the wrk options of the HTTP harnesses; this one has none."""
    args.runs, args.warmup, args.gunicorn = args.rounds, "-", ""
    args.threads, args.connections, args.duration = 0, 0, "-"
    return args


if __name__ == "__main__":
    main()

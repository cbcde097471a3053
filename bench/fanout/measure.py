"""Fan-out benchmark (issue 5): one published update to N e-mail subscribers, sent by W Celery worker
processes on Redis and PostgreSQL. Called by bench/fanout/run.sh (it sets the environment):

    .venv/bin/python bench/fanout/measure.py --subscribers 10000 --workers 2 --chunks 50,1

For each chunk size (deliveries per Celery task): W `celery worker --pool=solo` processes are started
with EMAIL_URL=filemail:// (messages written to bench/results/fanout-mail-*), one update is published
(update_deliveries_create in a transaction: the rows, then the fan-out task after commit), and the
clock runs from the commit until every delivery is marked sent. Then the e-mail files are counted
(exactly one per recipient). Queries per delivery: CaptureQueriesContext around the send service for
chunks of 10, 50 and 200 deliveries (in this process, e-mail to memory), and around the publish.
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
EMAIL_PREFIX = "bench-fanout-"
SEPARATOR = "\n" + "-" * 79 + "\n"


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--chunks",
        default="50,1:2000",
        help="deliveries per task, each optionally :audience (a smaller audience for slow variants)",
    )
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


def start_workers(count, chunk, mail_dir):
    env = {
        **os.environ,
        "EMAIL_URL": f"filemail:///{mail_dir}",  # four slashes: an absolute path
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
    return len(recipients), len(set(recipients))


def fan_out_once(args, chunk):
    from django.db import transaction
    from django.db.models import Max, Min

    from comms import services
    from comms.models import Delivery
    from incidents_site.celery import app

    mail_dir = common.RESULTS / f"fanout-mail-{chunk}"
    shutil.rmtree(mail_dir, ignore_errors=True)
    mail_dir.mkdir(parents=True)
    app.control.purge()
    workers = start_workers(args.workers, chunk, mail_dir)
    try:
        update = new_update()
        started = time.monotonic()
        with transaction.atomic():
            created = services.update_deliveries_create(update=update)
        committed = time.monotonic()
        from django.utils import timezone

        committed_at = timezone.now()
        deliveries = Delivery.objects.filter(update=update)
        sent = 0
        while time.monotonic() - committed < args.timeout:
            sent = deliveries.filter(state=Delivery.State.SENT).count()
            if sent + deliveries.filter(state=Delivery.State.FAILED).count() >= created:
                break
            time.sleep(0.2)
        done = time.monotonic()
        span = deliveries.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    finally:
        stop_workers(workers)
    messages, recipients = count_messages(mail_dir)
    shutil.rmtree(mail_dir, ignore_errors=True)
    return {
        "chunk": chunk,
        "deliveries": created,
        "publish_s": committed - started,
        "all_sent_s": done - committed,
        "first_sent_s": (span["first"] - committed_at).total_seconds() if span["first"] else None,
        "db_span_s": (span["last"] - span["first"]).total_seconds() if span["first"] else None,
        "sent": sent,
        "failed": deliveries.filter(state=Delivery.State.FAILED).count(),
        "messages": messages,
        "recipients": recipients,
        "progress": dict(services.update_delivery_progress(update)),
    }


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


def render(meta, runs, queries, args):
    lines = [
        SECTION,
        "",
        "How to reproduce: `bench/fanout/run.sh` from the repository root (PostgreSQL and Redis running; "
        "`CELERY_BROKER_URL` defaults to `redis://127.0.0.1:6379/7`, `DATABASE_URL` to the database "
        "`incidents_fanout_bench`, created and migrated). Raw output: `bench/results/fanout-*.json`.",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}; the workers, PostgreSQL and Redis share these cores (and the machine is "
        "shared with other work: compare ratios, not absolute figures).",
        "- One external update published to every confirmed e-mail subscriber (the audience is in the table); "
        f"{args.workers} worker processes (`celery worker --pool=solo`, acks late, prefetch 1); e-mail written "
        "by Django's file backend (`EMAIL_URL=filemail://…`), so the figures are the product's own cost, "
        "not an SMTP server's.",
        "- The clock runs from the publishing transaction's commit until every delivery is marked sent; "
        "\"first sent\" is the first `sent_at` after the commit. Messages are counted in the written files.",
        "",
        "| deliveries per task | deliveries | publish (rows + commit) | first sent | all sent | deliveries/s | "
        "e-mails written | distinct recipients | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rate = run["sent"] / run["all_sent_s"] if run["all_sent_s"] else 0
        first = f"{run['first_sent_s']:.2f} s" if run["first_sent_s"] is not None else "–"
        lines.append(
            f"| {run['chunk']} | {run['deliveries']:,} | {run['publish_s']:.2f} s | {first} | "
            f"{run['all_sent_s']:.1f} s | {rate:.0f} | {run['messages']:,} | {run['recipients']:,} | {run['failed']} |"
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
    common.setup_django("incidents_site.settings", PROG)
    meta = common.run_meta(
        argparse_like(args), machine()
    )
    runs = []
    for spec in (c.strip() for c in args.chunks.split(",") if c.strip()):
        chunk, _sep, audience = spec.partition(":")
        chunk, audience = int(chunk), int(audience or args.subscribers)
        print(f"{ensure_subscribers(audience)} subscribers, {chunk} deliveries per task", flush=True)
        run = fan_out_once(args, chunk)
        print(json.dumps(run), flush=True)
        runs.append(run)
    queries = queries_per_delivery()
    print(json.dumps(queries), flush=True)
    (common.RESULTS / f"fanout-{meta['stamp']}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "queries": queries}, indent=2)
    )
    common.write_section(args.docs, SECTION, render(meta, runs, queries, args))


def argparse_like(args):
    """run_meta wants the wrk options of the HTTP harnesses; this one has none."""
    args.runs, args.warmup, args.gunicorn = 1, "-", ""
    args.threads, args.connections, args.duration = 0, 0, "-"
    return args


if __name__ == "__main__":
    main()

"""Metrics and dashboard from the daily roll-ups (issue 14, goal 2), against the bare DRF list, same run.

Called by bench/metrics/rollup_run.sh once gunicorn is up on a database (it sets the environment):

    .venv/bin/python bench/metrics/rollup_measure.py --base-url http://127.0.0.1:18710 --label 200k
    .venv/bin/python bench/metrics/rollup_measure.py --render   # the docs section from the labelled results

Measured with `wrk -t2 -c8 --latency`, interleaved, after a warm-up, for a 90-day period:
- /bench/baseline-drf/ (the bare DRF list of BENCHMARKS.md),
- GET /api/v1/metrics/?since=…&until=… (90 full UTC days up to the end of today, API key),
- /admin/incidents/dashboard/?period=90 (session cookie),
as bench-metrics-viewer (Viewers group, not allowed to see every restricted incident: the restricted ones
they may see are read live). Then the whole history, GET /api/v1/metrics/, timed serially (5 requests).
Results: bench/results/rollups-<label>.json; --render writes docs/benchmarks.md, section "## Metrics"
(in place of bench/metrics/run.sh's older "## Metrics (issue 6)").
"""

import json
import statistics
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402

PROG = "bench/metrics/rollup_measure.py"
SECTION = "## Metrics"
OLD_SECTION = "## Metrics (issue 6)"  # bench/metrics/run.sh's, replaced by this one
USERNAME = "bench-metrics-viewer"


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:18710")
    parser.add_argument("--label", help="200k or 2m: the data set measured")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--skip-whole-history", action="store_true", help="do not time the whole history")
    parser.add_argument(
        "--whole-history-only", action="store_true", help="only time the whole history, into the label's results"
    )
    common.add_run_options(parser, command="bench/metrics/rollup_run.sh")
    return parser.parse_args()


def prepare():
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from incidents.api.keys import api_key_create
    from incidents.models import Incident

    user, _ = get_user_model().objects.get_or_create(
        username=USERNAME, defaults={"is_staff": True, "email": f"{USERNAME}@example.com"}
    )
    user.groups.set([Group.objects.get(name="Viewers")])
    key = api_key_create(name="bench rollups", user=user)[1]
    session = Client()
    session.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}"
    return key, cookie, Incident.objects.count()


def main():
    args = parse_args()
    if args.render:
        return render(args)
    common.setup_django("bench.settings", PROG)
    key, cookie, incidents = prepare()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    period = {"since": (today - timedelta(days=89)).isoformat(), "until": (today + timedelta(days=1)).isoformat()}
    targets = {
        "bare DRF list": ("/bench/baseline-drf/", []),
        "GET /api/v1/metrics/ (90 days)": (f"/api/v1/metrics/?{urlencode(period)}", [f"Authorization: Bearer {key}"]),
        "/admin/incidents/dashboard/?period=90": ("/admin/incidents/dashboard/?period=90", [f"Cookie: {cookie}"]),
    }
    for name, (path, headers) in targets.items():  # every answer is a 200 before measuring
        request = urllib.request.Request(args.base_url + path, headers=dict(h.split(": ", 1) for h in headers))
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200, (name, response.status)
    if args.whole_history_only:
        return whole_history_only(args, key)
    load_before = common.load_now()
    results = common.interleaved(
        args,
        list(targets),
        prog=PROG,
        target=lambda name, run: {
            "url": args.base_url + targets[name][0],
            "script": ROOT / "bench" / "wrk_report.lua",
            "headers": targets[name][1],
        },
        line=lambda run, name, r: f"run {run + 1}: {name:40} {r['rps']:8.1f} req/s  p50 {common.ms(r['p50_us'])}",
    )
    whole = []
    request = urllib.request.Request(args.base_url + "/api/v1/metrics/", headers={"Authorization": f"Bearer {key}"})
    for _ in range(0 if args.skip_whole_history else 5):
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
        whole.append(time.monotonic() - started)
    record = {
        "label": args.label,
        "incidents": incidents,
        "in_scope_whole_history": body["metrics"]["incidents"]["count"] if whole else None,
        "load": [load_before, common.load_now()],
        "wrk": common.wrk_command_line(args),
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "commit": common.git_revision(),
        "p50_us": {name: [r["p50_us"] for r in rs] for name, rs in results.items()},
        "rps": {name: [r["rps"] for r in rs] for name, rs in results.items()},
        "whole_history_s": whole,
    }
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / f"rollups-{args.label}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "rps"}, indent=2))


def whole_history_only(args, key):
    """Time the whole history (5 requests, one at a time) and add it to the label's earlier results."""
    path = common.RESULTS / f"rollups-{args.label}.json"
    record = json.loads(path.read_text())
    request = urllib.request.Request(args.base_url + "/api/v1/metrics/", headers={"Authorization": f"Bearer {key}"})
    record["whole_history_s"], record["whole_history_load"] = [], common.load_now()
    for _ in range(5):
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
        record["whole_history_s"].append(time.monotonic() - started)
    record["in_scope_whole_history"] = body["metrics"]["incidents"]["count"]
    path.write_text(json.dumps(record, indent=2))
    print(record["whole_history_s"])


def _records():
    """The labelled results there are: 200k, then 2m (a data set not measured is left out)."""
    records = []
    for label in ("200k", "2m"):
        path = common.RESULTS / f"rollups-{label}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
    if not records:
        raise SystemExit(f"{PROG}: no results in {common.RESULTS} (rollups-200k.json, rollups-2m.json)")
    return records


def render(args):
    records = _records()
    first = records[0]
    lines = [
        SECTION,
        "",
        f"`bench/metrics/rollup_run.sh` ({first['date']}, commit {first['commit']}): gunicorn with 2 sync "
        f"workers, `{first['wrk']}`, two interleaved rounds after a warm-up, the same run for each data set; "
        "the user is a Viewer (restricted incidents they may see are read live). Period: the 90 full UTC days up to "
        "the end of today. p50 ratio: the endpoint's p50 over the bare DRF list's p50 in the same round (target ≤ 5×).",
        "",
        "| data set | load (1 min, before/after) | endpoint | p50 round 1 / 2 | ratio to bare DRF |",
        "|---|---|---|---|---|",
    ]
    p50, ratio = {}, {}
    for record in records:
        base = record["p50_us"]["bare DRF list"]
        for name, values in record["p50_us"].items():
            ratios = " / ".join(f"{v / b:.1f}×" for v, b in zip(values, base, strict=True))
            lines.append(
                f"| {record['incidents']:,} incidents | {record['load'][0]:.2f} / {record['load'][1]:.2f} | {name} | "
                f"{' / '.join(common.ms(v) for v in values)} | {'—' if name == 'bare DRF list' else ratios} |"
            )
            p50[(record["label"], name)] = statistics.median(values)
            ratio[(record["label"], name)] = statistics.median(v / b for v, b in zip(values, base, strict=True))
    names = [name for name in first["p50_us"] if name != "bare DRF list"]
    labels = [record["label"] for record in records]
    lines.append("")
    if "2m" in labels and "200k" in labels:
        lines += [
            "Growth with history, the same 90 days at 2,000,000 over 200,000 (target ≤ 1.5×): the ratio to the bare "
            "list at 2,000,000 over the ratio at 200,000 (each the median of its rounds), which takes out the load "
            "that differed between the two runs; in brackets the raw p50 growth.",
            "",
        ]
        for name in names:
            lines.append(
                f"- {name}: {ratio[('2m', name)] / ratio[('200k', name)]:.2f}× "
                f"(raw {p50[('2m', name)] / p50[('200k', name)]:.2f}×)"
            )
        lines.append("")
    else:
        lines += ["Growth with history: not measured in this run (no 2,000,000-incident results).", ""]
    verdicts = [
        f"{name} at {label}: {ratio[(label, name)]:.1f}× ({'within' if ratio[(label, name)] <= 5 else 'over'} 5×)"
        for label in labels
        for name in names
    ]
    loads = [load for record in records for load in record["load"]]
    lines.append(
        "Median ratio to the bare list: " + "; ".join(verdicts) + f". 1-minute load of the shared 2-core machine "
        f"during the runs: {min(loads):.1f}–{max(loads):.1f}."
    )
    for record in records:
        if record["whole_history_s"]:
            lines += [
                "",
                f"Whole history at {record['incidents']:,} incidents ({record['in_scope_whole_history']:,} in "
                f"scope), GET /api/v1/metrics/ one request at a time: "
                f"{', '.join(f'{s:.2f} s' for s in record['whole_history_s'])} (target at 2,000,000: < 2 s; "
                f"load {record.get('whole_history_load', record['load'][1]):.2f}). The first request of a worker "
                "reads and sums every day's rows; the next ones read the days' versions and find the sums "
                "incidents.rollups memoized under them (any change of a day gives it a new version).",
            ]
        else:
            lines += ["", f"Whole history at {record['incidents']:,} incidents: not measured in this run."]
    docs = Path(args.docs)
    if docs.exists() and OLD_SECTION in docs.read_text():
        common.write_section(docs, OLD_SECTION, "\n".join(lines) + "\n")
    else:
        common.write_section(docs, SECTION, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

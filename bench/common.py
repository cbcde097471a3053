"""What bench/measure.py and bench/ingest/measure.py share: their common options, Django setup on
PostgreSQL only, wrk runs interleaved across endpoints and the reading of their output, the notes on the
run (date, commit, CPU) and the rewriting of one section of docs/benchmarks.md.

`prog` arguments are the calling script's path, used in its error messages.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_PREAMBLE = (
    "# Benchmarks\n\nMethod and reference figures: `/work/shared/reference/BENCHMARKS.md`. Each section is "
    "written by the script named in it; re-running the script replaces only its own section.\n"
)
WRK_TIMEOUT = "30s"


def argument_parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run_options(parser, command):
    """The options both harnesses take (their run.sh passes them), after the harness's own."""
    parser.add_argument("--duration", default="15s")
    parser.add_argument("--warmup", default="5s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--command", default=command, help="the command line recorded in the docs")
    parser.add_argument("--gunicorn", default="", help="the gunicorn command line recorded in the docs")


def setup_django(settings, prog):
    """django.setup() with `settings` unless DJANGO_SETTINGS_MODULE is set; refuses anything but PostgreSQL."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings)
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit(f"{prog}: the benchmark runs on PostgreSQL only.")
    return connection


def wrk_command_line(args):
    """The wrk command line as the docs show it (without script, headers and URL)."""
    return f"wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency --timeout {WRK_TIMEOUT}"


def wrk(url, *, prog, script, threads, connections, duration, headers=(), script_args=()):
    """One wrk run; `script` must print wrk's summary as a `WRK_JSON {…}` line (see bench/wrk_report.lua).

    Returns that summary plus non_2xx_3xx, rps and the raw output.
    """
    command = ["/usr/bin/wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency"]
    command += ["--timeout", WRK_TIMEOUT, "-s", str(script)]
    for header in headers:
        command += ["-H", header]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    match = re.search(r"^WRK_JSON (.*)$", output, re.MULTILINE)
    if not match:
        raise SystemExit(f"{prog}: could not read wrk's output:\n{output}")
    result = json.loads(match.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx_3xx"] = int(non2xx.group(1)) if non2xx else 0
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["raw"] = output
    return result


def interleaved(args, names, *, prog, target, line):
    """A warm-up run (args.warmup) per endpoint, then args.runs rounds (args.duration) across all of them, so
    that drift of a shared machine hits them alike; threads and connections from args.

    target(name, run) gives the wrk arguments of one run as a dict: url, script and optionally headers and
    script_args (run is None for the warm-up, else 0, 1, …); line(run, name, result) the line to print
    after each run. Returns {name: [result of each round]}."""
    options = {"prog": prog, "threads": args.threads, "connections": args.connections}
    for name in names:
        wrk(**target(name, None), duration=args.warmup, **options)
    results = {name: [] for name in names}
    for run in range(args.runs):
        for name in names:
            result = wrk(**target(name, run), duration=args.duration, **options)
            results[name].append(result)
            print(line(run, name, result), flush=True)
    return results


def ms(microseconds):
    value = microseconds / 1000
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def now():
    """(date for the docs, stamp for the raw results' file name) of this moment."""
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC"), moment.strftime("%Y%m%dT%H%M%SZ")


def git_revision():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    return head.strip() + (" with uncommitted changes" if dirty.strip() else "")


def run_meta(args, machine):
    """What every harness records about a run: when, what, where, and how it loaded the server."""
    date, stamp = now()
    return {
        "date": date,
        "stamp": stamp,
        "command": args.command,
        "revision": git_revision(),
        "machine": machine,
        "gunicorn": args.gunicorn,
        "runs": args.runs,
        "warmup": args.warmup,
        "wrk": wrk_command_line(args),
    }


def measured_line(meta):
    """The docs' line on when, with what and at which commit a section was measured."""
    return f"Measured {meta['date']} with `{meta['command']}` (commit {meta['revision']})."


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_section(path, section, text):
    """Replace the section headed `section` (up to the next `## ` heading) of the docs file, or append it."""
    path = Path(path)
    current = path.read_text() if path.exists() else DOCS_PREAMBLE
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", current, count=1).rstrip("\n") + "\n"
    else:
        updated = current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


# ---- the machine's load: every figure is quoted with it, and a run on a busy machine is repeated ------


def load_now():
    """The 1-minute load average (what `uptime` shows first)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def wait_for_quiet(max_load, *, timeout, prog, poll=5.0):
    """Wait (at most `timeout` seconds) until the 1-minute load is at or below max_load; returns the load
    then. A machine that stays busy is reported, and the caller marks its figures as noisy."""
    import time

    deadline = time.monotonic() + timeout
    load = load_now()
    while load > max_load and time.monotonic() < deadline:
        print(f"{prog}: load {load:.2f} > {max_load:.2f}; waiting for a quieter machine", flush=True)
        time.sleep(poll)
        load = load_now()
    return load

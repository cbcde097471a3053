#!/usr/bin/env bash
# Benchmark of the admin list and incident page on 200,000 incidents; results go to docs/benchmarks.md.
#
#   bench/run.sh                      # from anywhere; takes about 4 minutes (+1 minute the first time)
#
# What it does, in order:
#   1. creates and migrates the bench database (DATABASE_URL, default
#      postgres://postgres@127.0.0.1:5432/incidents_bench) and fills it with bench/generate.py if it
#      has no incidents (BENCH_INCIDENTS=200000, BENCH_EVENTS=10 per incident);
#   2. collects static files and starts gunicorn: 2 sync workers on 127.0.0.1:$BENCH_PORT (8765),
#      DEBUG off, bench.settings (the product's settings plus a bare /bench/baseline/ endpoint);
#   3. runs bench/measure.py: logs in by creating a session for the superuser `bench-admin`, checks each
#      URL answers 200, counts queries, warms up, then `wrk -t2 -c8 -d15s --latency --timeout 30s`
#      twice per endpoint: the bare DRF list (the baseline of the ratios, bench/baseline_urls.py), the bare
#      `.values()` view, the admin incident list, the incident page of an incident with 5,000 timeline events
#      (made once by measure.py) and its follow-up panels, a typical closed SEV1 page, the open-incidents list;
#   4. replaces the section "## Admin list and incident page (issue 2)" of docs/benchmarks.md and stops
#      gunicorn. Raw output: bench/results/ (ignored by git).
#
# Settings: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_RUNS (2), BENCH_PORT (8765), BENCH_DOCS (the
# file to write the section into, docs/benchmarks.md); REGENERATE=1 to rebuild the data. Needs
# PostgreSQL, wrk (/usr/bin/wrk) and the project's .venv. Shared steps: bench/common.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment incidents_bench bench.settings WARNING

if [ "${REGENERATE:-0}" = 1 ]; then
  generate_data --reset
else
  generate_data --if-empty
fi

echo "== static files"
"$PY" manage.py collectstatic --noinput -v0

start_gunicorn 8765 gunicorn

run_measure bench/measure.py

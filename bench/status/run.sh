#!/usr/bin/env bash
# Benchmark of the public status page under a spike (issue 14): /status/ and the Statuspage v2
# documents against a bare Django view returning 50 rows with .values(), at wrk -c64, in the same run;
# then the same while an update is published every second; results go to docs/benchmarks.md.
#
#   bench/status/run.sh           # from anywhere; about 6 minutes (+1 the first time)
#
# What it does, in order:
#   1. creates and migrates the bench database (DATABASE_URL, default
#      postgres://postgres@127.0.0.1:5432/incidents_status_bench), fills it with bench/generate.py if it
#      has no incidents (200,000), and adds the public state of an outage (bench/status/measure.py
#      --prepare: public components in groups, three unresolved public incidents, a month of resolved
#      ones, a maintenance in progress and one upcoming; idempotent, and the updates an earlier run
#      published are taken back, so every run starts from the same page);
#   2. starts gunicorn: 2 sync workers on 127.0.0.1:$BENCH_PORT (8768), DEBUG off, bench.settings (the
#      product plus /bench/baseline/), the cache on Redis as in production (CACHE_URL, default
#      redis://127.0.0.1:6379/15);
#   3. runs bench/status/measure.py: pre-checks (200, ETag, 304 on If-None-Match), queries per warm
#      request, then rounds of `wrk -t2 -c64 -d15s --latency --timeout 30s` interleaved over the baseline
#      and the five documents (and summary.json revalidated with If-None-Match, /status/ asked gzipped),
#      first on a still page, then while an update is published every second (each publish's delay until
#      summary.json and /status/ show it, and until its documents are re-rendered and stored, is
#      measured); a round on a busy machine is repeated;
#   4. replaces the section "## Status page under a spike (issue 14)" of docs/benchmarks.md and stops
#      gunicorn. Raw output: bench/results/status-*.json.
#
# Settings: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_RUNS (2 rounds per phase), BENCH_PORT (8768),
# BENCH_MAX_LOAD (the core count), CACHE_URL, BENCH_DOCS. Needs PostgreSQL, Redis, wrk and the .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/status/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment incidents_status_bench bench.settings WARNING
export CACHE_URL="${CACHE_URL:-redis://127.0.0.1:6379/15}"
export SITE_URL="http://127.0.0.1:${BENCH_PORT:-8768}"
# The publisher's fan-out tasks go nowhere (no subscribers here; no worker runs during this benchmark).
export CELERY_BROKER_URL="${BENCH_STATUS_BROKER_URL:-memory://}"

generate_data --if-empty   # also creates and migrates the database
"$PY" manage.py migrate --noinput -v0
"$PY" bench/status/measure.py --prepare

start_gunicorn 8768 gunicorn-status

run_measure bench/status/measure.py --connections 64 --max-load "${BENCH_MAX_LOAD:-$(nproc)}"

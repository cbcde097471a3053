#!/usr/bin/env bash
# Benchmark of the metrics (issue 6): the metrics endpoint and the dashboard page side by side with the raw
# aggregate SQL they need, in the same run; results go to docs/benchmarks.md, section "## Metrics (issue 6)".
#
#   bench/metrics/run.sh              # from anywhere; about 5 minutes once the data exists
#
# What it does, in order:
#   1. migrates the bench database (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/bench_metrics),
#      fills it with bench/generate.py if it has no incidents (200,000; about 15 minutes on a busy 2-core
#      machine), and marks the restricted share in place (bench/generate.py --mark-restricted, idempotent);
#   2. starts gunicorn: 2 sync workers on 127.0.0.1:$BENCH_PORT (8768), DEBUG off, bench.metrics.settings
#      (the product plus /bench/metrics/raw/ and /bench/metrics/raw-dashboard/), API throttle raised;
#   3. runs bench/metrics/measure.py: seeds customer reports once, checks that the endpoint's figures equal
#      the raw SQL's, counts queries, EXPLAINs the main aggregate, then `wrk -t1 -c2 -d30s --latency
#      --timeout 30s` twice per URL after a 10 s warm-up, interleaved across the six URLs (one connection
#      per gunicorn worker: these requests take seconds);
#   4. replaces the section of docs/benchmarks.md and stops gunicorn. Raw output: bench/results/metrics-*.json.
#
# Settings: BENCH_DURATION (30s), BENCH_WARMUP (10s), BENCH_RUNS (2), BENCH_PORT (8768), BENCH_DOCS.
# Needs PostgreSQL, wrk (/usr/bin/wrk) and the project's .venv. Shared steps: bench/common.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/metrics/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment bench_metrics bench.metrics.settings WARNING
export API_THROTTLE_RATE="${API_THROTTLE_RATE:-100000000/min}"

generate_data --if-empty   # also creates and migrates the database
"$PY" manage.py migrate --noinput -v0
"$PY" bench/generate.py --mark-restricted --restricted-share "${BENCH_RESTRICTED_SHARE:-0.02}"

echo "== static files"
"$PY" manage.py collectstatic --noinput -v0

start_gunicorn 8768 gunicorn-metrics

export BENCH_DURATION="${BENCH_DURATION:-30s}" BENCH_WARMUP="${BENCH_WARMUP:-10s}"
run_measure bench/metrics/measure.py --threads 1 --connections 2

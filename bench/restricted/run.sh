#!/usr/bin/env bash
# Benchmark of the restricted-incident filter (issue 7): the API and admin incident lists for users
# without and with "view all restricted incidents", in the same run; results go to docs/benchmarks.md.
#
#   bench/restricted/run.sh           # from anywhere; about 4 minutes
#
# What it does, in order:
#   1. migrates the bench database (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/incidents_bench),
#      fills it with bench/generate.py if it has no incidents, then marks the restricted share in place with
#      `bench/generate.py --mark-restricted` (BENCH_RESTRICTED_SHARE, 0.02; an UPDATE plus ANALYZE, idempotent);
#   2. starts gunicorn: 2 sync workers on 127.0.0.1:$BENCH_PORT (8767), DEBUG off, bench.settings, with the
#      API throttle raised (API_THROTTLE_RATE=100000000/min) so that wrk measures the list and not 429s;
#   3. runs bench/restricted/measure.py: users (a) bench-restricted-outsider (a few roles, no permission),
#      (a′) bench-user-050 (a busy generated responder, no permission), (b) bench-restricted-global (the
#      same group plus the permission); pre-checks, query counts and warm EXPLAIN (ANALYZE, BUFFERS) of the
#      main list query, then `wrk -t2 -c8 -d15s --latency --timeout 30s` twice per URL after a warm-up,
#      interleaved (API list ?page_size=50 and admin list, for each user);
#   4. replaces the section "## Restricted incidents: list cost for a user without the global permission
#      (issue 7)" of docs/benchmarks.md and stops gunicorn. Raw output: bench/results/restricted-*.json.
#
# Settings: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_RUNS (2), BENCH_PORT (8767), BENCH_DOCS,
# BENCH_RESTRICTED_SHARE (0.02). Needs PostgreSQL, wrk (/usr/bin/wrk) and the project's .venv.
# Shared steps: bench/common.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/restricted/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment incidents_bench bench.settings WARNING
export API_THROTTLE_RATE="${API_THROTTLE_RATE:-100000000/min}"

generate_data --if-empty   # also creates and migrates the database
"$PY" manage.py migrate --noinput -v0
"$PY" bench/generate.py --mark-restricted --restricted-share "${BENCH_RESTRICTED_SHARE:-0.02}"

echo "== static files"
"$PY" manage.py collectstatic --noinput -v0

start_gunicorn 8767 gunicorn-restricted

run_measure bench/restricted/measure.py

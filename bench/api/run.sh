#!/usr/bin/env bash
# Benchmark of the REST API incident list (issue 14, goal 1) against the bare DRF list of
# ../shared/reference/BENCHMARKS.md, in the same run; results go to docs/benchmarks.md.
#
#   bash bench/api/run.sh            # from anywhere; about 8 minutes (BENCH_DURATION=10s: 6)
#
# 1. migrates the bench database (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/incidents_bench)
#    and fills it with bench/generate.py if it has no incidents;
# 2. starts gunicorn (2 sync workers, 127.0.0.1:$BENCH_PORT, DEBUG off, bench.settings, which adds the bare
#    baselines of bench/baseline_urls.py) with the API throttle raised so wrk measures the list, not 429s;
# 3. runs bench/api/measure.py: query counts at page_size 1, 50 and 100 for each filter, then
#    `wrk -t2 -c8 -d15s --latency --timeout 30s` twice per URL after a warm-up, interleaved: the bare DRF
#    list, /api/v1/incidents/?page_size=50 with a responder's API key (no filter, open=true, severity=1,
#    service=…), the same for a user who sees every restricted incident, and a 304 answer to If-None-Match;
# 4. replaces the section "## REST API incident list (issue 14)" of docs/benchmarks.md and stops gunicorn.
#
# Settings: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_RUNS (2), BENCH_PORT (18390), BENCH_DOCS.
# Needs PostgreSQL, wrk (apt-get install wrk) and the project's .venv. Shared steps: bench/common.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/api/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment incidents_bench bench.settings WARNING
export API_THROTTLE_RATE="${API_THROTTLE_RATE:-100000000/min}"

generate_data --if-empty   # also creates and migrates the database
"$PY" manage.py migrate --noinput -v0

start_gunicorn 18390 gunicorn-api

run_measure bench/api/measure.py

#!/usr/bin/env bash
# Benchmark of alert ingestion against a bare insert endpoint; results go to docs/benchmarks.md.
#
#   bench/ingest/run.sh              # from anywhere; about 3 minutes (+1 minute the first time)
#
# What it does, in order:
#   1. fills the bench database (DATABASE_URL, default
#      postgres://postgres@127.0.0.1:5432/incidents_bench_ingest) with bench/generate.py if it has no
#      incidents (BENCH_INCIDENTS=200000), which also creates and migrates it; removes the alert rows
#      and integrations of earlier runs; creates an Alertmanager integration and takes its key;
#   2. starts gunicorn: 2 sync workers on 127.0.0.1:$BENCH_PORT (8766), DEBUG off, bench.ingest.settings
#      (the product's settings plus the bare endpoint /bench/ingest/bare/);
#   3. runs bench/ingest/measure.py: checks both endpoints answer 200, counts queries, warms up, then
#      `wrk -t2 -c8 -d15s --latency --timeout 30s -s bench/ingest/post.lua` twice per endpoint (bare,
#      repeat, churn), interleaved;
#   4. replaces the section "## Alert ingestion (issue 3)" of docs/benchmarks.md and stops gunicorn.
#      Raw output: bench/results/ingest-*.json (ignored by git).
#
# Settings: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_RUNS (2), BENCH_PORT (8766), BENCH_DOCS (the
# file to write the section into, docs/benchmarks.md). Needs PostgreSQL,
# wrk (/usr/bin/wrk) and the project's .venv. Shared steps: bench/common.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/ingest/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment incidents_bench_ingest bench.ingest.settings ERROR  # 4xx warnings would flood the log
export DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost"

generate_data --if-empty
"$PY" manage.py migrate --noinput -v0
"$PY" manage.py shell -c "
from django.db import connection
from incidents.models import Incident, Integration
Incident.objects.filter(alert_groups__integration__name__startswith='bench ').delete()
with connection.cursor() as cursor:
    cursor.execute('TRUNCATE incidents_alert, incidents_alertgroup, incidents_alertpayload')
Integration.objects.filter(name__startswith='bench ').delete()
"
KEY="$("$PY" manage.py create_integration alertmanager "bench $(date -u +%Y%m%dT%H%M%S)" 2>/dev/null)"

start_gunicorn 8766 gunicorn-ingest

run_measure bench/ingest/measure.py --key "$KEY"

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
# wrk (/usr/bin/wrk) and the project's .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/incidents_bench_ingest}"
export DJANGO_SETTINGS_MODULE=bench.ingest.settings
export DJANGO_DEBUG=false
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-bench-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(40))')}"
export DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost"
export DJANGO_SECURE_SSL_REDIRECT=false DJANGO_SESSION_COOKIE_SECURE=false DJANGO_CSRF_COOKIE_SECURE=false
export LOG_LEVEL="${LOG_LEVEL:-ERROR}"  # 4xx warnings would flood the log
export DJANGO_STATIC_ROOT="$RESULTS/staticfiles"
mkdir -p "$DJANGO_STATIC_ROOT"
PORT="${BENCH_PORT:-8766}"

case "$DATABASE_URL" in
  postgres://*|postgresql://*|pgsql://*) ;;
  *) echo "bench/ingest/run.sh: DATABASE_URL must point at PostgreSQL, not $DATABASE_URL" >&2; exit 2 ;;
esac

echo "== data ($DATABASE_URL)"
"$PY" bench/generate.py --if-empty --incidents "${BENCH_INCIDENTS:-200000}" --events-per-incident "${BENCH_EVENTS:-10}"
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

echo "== gunicorn on 127.0.0.1:$PORT"
if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "bench/ingest/run.sh: port $PORT is already in use; set BENCH_PORT" >&2
  exit 2
fi
GUNICORN_ARGS=(incidents_site.wsgi:application --workers 2 --worker-class sync --bind "127.0.0.1:$PORT"
  --timeout 120 --pid "$RESULTS/gunicorn-ingest.pid" --error-logfile "$RESULTS/gunicorn-ingest.log")
"$ROOT/.venv/bin/gunicorn" "${GUNICORN_ARGS[@]}" &
GUNICORN_PID=$!
stop_gunicorn() {
  if kill -0 "$GUNICORN_PID" 2>/dev/null; then
    kill -TERM "$GUNICORN_PID"
    wait "$GUNICORN_PID" 2>/dev/null || true
  fi
}
trap stop_gunicorn EXIT
for _ in $(seq 1 60); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$GUNICORN_PID" 2>/dev/null; then
    echo "bench/ingest/run.sh: gunicorn exited; see $RESULTS/gunicorn-ingest.log" >&2
    exit 1
  fi
  sleep 0.5
done

echo "== measuring"
"$PY" bench/ingest/measure.py --base-url "http://127.0.0.1:$PORT" --key "$KEY" \
  --duration "${BENCH_DURATION:-15s}" --warmup "${BENCH_WARMUP:-5s}" --runs "${BENCH_RUNS:-2}" \
  --command "bench/ingest/run.sh" --gunicorn "gunicorn ${GUNICORN_ARGS[*]:0:7}" \
  --docs "${BENCH_DOCS:-$ROOT/docs/benchmarks.md}"

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
#      twice per endpoint (baseline, admin incident list, admin incident page, admin open-incidents list);
#   4. replaces the section "## Admin list and incident page (issue 2)" of docs/benchmarks.md and stops
#      gunicorn. Raw output: bench/results/ (ignored by git).
#
# Settings: BENCH_DURATION (15s), BENCH_WARMUP (5s), BENCH_RUNS (2), BENCH_PORT (8765); REGENERATE=1 to
# rebuild the data. Needs PostgreSQL, wrk (/usr/bin/wrk) and the project's .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/incidents_bench}"
export DJANGO_SETTINGS_MODULE=bench.settings
export DJANGO_DEBUG=false
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-bench-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(40))')}"
export DJANGO_SECURE_SSL_REDIRECT=false DJANGO_SESSION_COOKIE_SECURE=false DJANGO_CSRF_COOKIE_SECURE=false
export DJANGO_STATIC_ROOT="$RESULTS/staticfiles"
export LOG_LEVEL="${LOG_LEVEL:-WARNING}"
PORT="${BENCH_PORT:-8765}"
DURATION="${BENCH_DURATION:-15s}"

case "$DATABASE_URL" in
  postgres://*|postgresql://*|pgsql://*) ;;
  *) echo "bench/run.sh: DATABASE_URL must point at PostgreSQL, not $DATABASE_URL" >&2; exit 2 ;;
esac

echo "== data ($DATABASE_URL)"
if [ "${REGENERATE:-0}" = 1 ]; then
  GENERATE_MODE=--reset
else
  GENERATE_MODE=--if-empty
fi
"$PY" bench/generate.py "$GENERATE_MODE" --incidents "${BENCH_INCIDENTS:-200000}" \
  --events-per-incident "${BENCH_EVENTS:-10}"

echo "== static files"
"$PY" manage.py collectstatic --noinput -v0

echo "== gunicorn on 127.0.0.1:$PORT"
if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "bench/run.sh: port $PORT is already in use; set BENCH_PORT" >&2
  exit 2
fi
GUNICORN_ARGS=(incidents_site.wsgi:application --workers 2 --worker-class sync --bind "127.0.0.1:$PORT"
  --timeout 120 --pid "$RESULTS/gunicorn.pid" --error-logfile "$RESULTS/gunicorn.log")
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
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$GUNICORN_PID" 2>/dev/null; then
    echo "bench/run.sh: gunicorn exited; see $RESULTS/gunicorn.log" >&2
    exit 1
  fi
  sleep 0.5
done

echo "== measuring"
"$PY" bench/measure.py --base-url "http://127.0.0.1:$PORT" --duration "$DURATION" \
  --warmup "${BENCH_WARMUP:-5s}" --runs "${BENCH_RUNS:-2}" --command "bench/run.sh" \
  --gunicorn "gunicorn ${GUNICORN_ARGS[*]:0:7}"

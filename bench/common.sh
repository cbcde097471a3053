# Shared steps of the benchmark scripts bench/run.sh and bench/ingest/run.sh; sourced, not run.
#
# The sourcing script sets ROOT (the repository root) and BENCH_NAME (its own path, for messages and
# the docs), then calls, in order:
#   bench_environment DATABASE SETTINGS LOG_LEVEL   exports the Django environment (DATABASE_URL defaults
#                                                   to postgres://postgres@127.0.0.1:5432/DATABASE) and
#                                                   refuses a database other than PostgreSQL
#   generate_data MODE                              bench/generate.py MODE (--if-empty or --reset) with
#                                                   BENCH_INCIDENTS (200000), BENCH_EVENTS (10 per incident)
#   start_gunicorn DEFAULT_PORT LOG_NAME            2 sync workers on 127.0.0.1:$PORT (BENCH_PORT), pid and
#                                                   log in bench/results/LOG_NAME.{pid,log}, stopped on exit;
#                                                   returns once /healthz answers
#   run_measure SCRIPT [ARGS…]                      SCRIPT --base-url … with BENCH_DURATION (15s),
#                                                   BENCH_WARMUP (5s), BENCH_RUNS (2) and BENCH_DOCS (the
#                                                   file the section goes into, docs/benchmarks.md)
# It sets PY (the project's python) and RESULTS (bench/results/, created).

PY="$ROOT/.venv/bin/python"
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"

bench_environment() {
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$1}"
  export DJANGO_SETTINGS_MODULE="$2"
  export DJANGO_DEBUG=false
  export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-bench-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(40))')}"
  export DJANGO_SECURE_SSL_REDIRECT=false DJANGO_SESSION_COOKIE_SECURE=false DJANGO_CSRF_COOKIE_SECURE=false
  export DJANGO_STATIC_ROOT="$RESULTS/staticfiles"
  mkdir -p "$DJANGO_STATIC_ROOT"
  export LOG_LEVEL="${LOG_LEVEL:-$3}"
  case "$DATABASE_URL" in
    postgres://*|postgresql://*|pgsql://*) ;;
    *) echo "$BENCH_NAME: DATABASE_URL must point at PostgreSQL, not $DATABASE_URL" >&2; exit 2 ;;
  esac
}

generate_data() {
  echo "== data ($DATABASE_URL)"
  "$PY" bench/generate.py "$1" --incidents "${BENCH_INCIDENTS:-200000}" \
    --events-per-incident "${BENCH_EVENTS:-10}"
}

start_gunicorn() {
  PORT="${BENCH_PORT:-$1}"
  local log="$RESULTS/$2.log"
  echo "== gunicorn on 127.0.0.1:$PORT"
  if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "$BENCH_NAME: port $PORT is already in use; set BENCH_PORT" >&2
    exit 2
  fi
  GUNICORN_ARGS=(incidents_site.wsgi:application --workers 2 --worker-class sync --bind "127.0.0.1:$PORT"
    --timeout 120 --pid "$RESULTS/$2.pid" --error-logfile "$log")
  "$ROOT/.venv/bin/gunicorn" "${GUNICORN_ARGS[@]}" &
  GUNICORN_PID=$!
  trap stop_gunicorn EXIT
  for _ in $(seq 1 60); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null; then
      break
    fi
    if ! kill -0 "$GUNICORN_PID" 2>/dev/null; then
      echo "$BENCH_NAME: gunicorn exited; see $log" >&2
      exit 1
    fi
    sleep 0.5
  done
}

stop_gunicorn() {
  if kill -0 "$GUNICORN_PID" 2>/dev/null; then
    kill -TERM "$GUNICORN_PID"
    wait "$GUNICORN_PID" 2>/dev/null || true
  fi
}

run_measure() {
  echo "== measuring"
  "$PY" "$1" --base-url "http://127.0.0.1:$PORT" --duration "${BENCH_DURATION:-15s}" \
    --warmup "${BENCH_WARMUP:-5s}" --runs "${BENCH_RUNS:-2}" --command "$BENCH_NAME" \
    --gunicorn "gunicorn ${GUNICORN_ARGS[*]:0:7}" --docs "${BENCH_DOCS:-$ROOT/docs/benchmarks.md}" "${@:2}"
}

#!/usr/bin/env bash
# Benchmark of the subscriber fan-out (issue 5): one published update to 10,000 e-mail subscribers,
# sent by two Celery worker processes on Redis and PostgreSQL; results go to docs/benchmarks.md.
#
#   bench/fanout/run.sh           # from anywhere; a few minutes
#
# What it does: creates and migrates the bench database (DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/incidents_fanout_bench), then runs bench/fanout/measure.py: it
# creates the subscribers, and for each chunk size (deliveries per Celery task) starts
# BENCH_FANOUT_WORKERS `celery worker --pool=solo` processes writing e-mails with EMAIL_URL=filemail://
# into bench/results/, publishes one update, and times until every delivery is sent; then counts
# queries per delivery in-process. Replaces the section "## Fan-out (issue 5)" of docs/benchmarks.md.
#
# Settings: CELERY_BROKER_URL (redis://127.0.0.1:6379/7), BENCH_FANOUT_SUBSCRIBERS (10000),
# BENCH_FANOUT_WORKERS (2), BENCH_FANOUT_CHUNKS ("50,1:2000": 50 per task to all of them, then one per
# task to 2,000), BENCH_DOCS. Needs PostgreSQL, Redis and the project's .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/fanout/run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

bench_environment incidents_fanout_bench incidents_site.settings WARNING
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/7}"
case "$CELERY_BROKER_URL" in
  redis://*|rediss://*) ;;
  *) echo "$BENCH_NAME: CELERY_BROKER_URL must point at Redis, not $CELERY_BROKER_URL" >&2; exit 2 ;;
esac

echo "== database ($DATABASE_URL)"
"$PY" - <<'PY'
import os, psycopg
from urllib.parse import urlsplit
url = urlsplit(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
with psycopg.connect(os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
        conn.execute(f'CREATE DATABASE "{name}"')
PY
"$PY" manage.py migrate --noinput -v0

echo "== measuring"
"$PY" bench/fanout/measure.py \
  --subscribers "${BENCH_FANOUT_SUBSCRIBERS:-10000}" \
  --workers "${BENCH_FANOUT_WORKERS:-2}" \
  --chunks "${BENCH_FANOUT_CHUNKS:-50,1:2000}" \
  --command "$BENCH_NAME" \
  --docs "${BENCH_DOCS:-$ROOT/docs/benchmarks.md}"

#!/usr/bin/env bash
# Benchmark of the subscriber fan-out (issues 5 and 14): one published update to 10,000 e-mail
# subscribers, sent by two Celery worker processes on Redis and PostgreSQL to a real SMTP server;
# results go to docs/benchmarks.md.
#
#   bench/fanout/run.sh           # from anywhere; a few minutes
#
# What it does: creates and migrates the bench database (DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/incidents_fanout_bench), then runs bench/fanout/measure.py: it
# creates the subscribers, and for each chunk size (deliveries per Celery task) starts a real SMTP
# server (aiosmtpd, bench/fanout/smtp_sink.py, on a free 127.0.0.1 port) and BENCH_FANOUT_WORKERS
# `celery worker --pool=solo` processes sending to it, publishes one update, and times until every
# delivery is sent; the server counts what it received (duplicates, connections). Then it counts
# queries per delivery in-process. A run on a busy machine is repeated. Replaces the section
# "## Fan-out (issue 5)" of docs/benchmarks.md.
#
# Settings: CELERY_BROKER_URL (redis://127.0.0.1:6379/7), BENCH_FANOUT_SUBSCRIBERS (10000),
# BENCH_FANOUT_WORKERS (2), BENCH_FANOUT_CHUNKS ("50"; e.g. "50,1:2000" adds one per task to 2,000),
# BENCH_FANOUT_TRANSPORT (smtp, or file for Django's file backend), BENCH_FANOUT_ROUNDS (2),
# BENCH_MAX_LOAD (the core count: a run above it is noisy and repeated), BENCH_DOCS. Needs PostgreSQL,
# Redis, aiosmtpd (requirements-dev.txt) and the project's .venv.
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
  --chunks "${BENCH_FANOUT_CHUNKS:-50}" \
  --transport "${BENCH_FANOUT_TRANSPORT:-smtp}" \
  --rounds "${BENCH_FANOUT_ROUNDS:-2}" \
  --max-load "${BENCH_MAX_LOAD:-$(nproc)}" \
  --command "$BENCH_NAME" \
  --docs "${BENCH_DOCS:-$ROOT/docs/benchmarks.md}"

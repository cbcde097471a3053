#!/usr/bin/env bash
# Benchmark of the metrics and the dashboard from the daily roll-ups (issue 14, goal 2): a 90-day period at
# 200,000 and at 2,000,000 incidents against the bare DRF list in the same run, and the whole history.
#
#   bench/metrics/rollup_run.sh        # DATABASES="incidents_bench incidents_bench_2m" by default
#
# For each database: `manage.py metrics_rollup_rebuild` when the roll-up is not built or does not hold every
# incident, then ANALYZE of the roll-up table (bench/generate.py now rebuilds the roll-up after its COPY itself; the
# check is for databases generated before that, where migration 0014 had marked an empty roll-up built); gunicorn (2 sync workers, bench.settings: the product
# plus /bench/baseline-drf/) on 127.0.0.1:$BENCH_PORT (18710), then bench/metrics/rollup_measure.py.
# Finally the docs section is rendered from both results (bench/results/rollups-*.json).
# Make the 2,000,000 one with: DATABASE_URL=…/incidents_bench_2m .venv/bin/python bench/generate.py --incidents 2000000
# Only the 200,000 one: DATABASES=incidents_bench BENCH_LABELS=200k bench/metrics/rollup_run.sh. The docs section
# shows this run's data sets only: earlier results are removed first (BENCH_KEEP_RESULTS=1 keeps them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH_NAME=bench/metrics/rollup_run.sh
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

export API_THROTTLE_RATE="${API_THROTTLE_RATE:-100000000/min}"
BENCH_PORT="${BENCH_PORT:-18710}"
read -r -a LABELS <<< "${BENCH_LABELS:-200k 2m}"
[ -n "${BENCH_KEEP_RESULTS:-}" ] || rm -f "$RESULTS"/rollups-200k.json "$RESULTS"/rollups-2m.json
i=0
for DB in ${DATABASES:-incidents_bench incidents_bench_2m}; do
  label="${LABELS[$i]}"; i=$((i + 1))
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
  bench_environment "$DB" bench.settings WARNING
  # Rebuilt when not built, or when it does not hold every incident: a database generated before bench/generate.py
  # rebuilt the roll-up after its COPY has an empty roll-up marked built (by migration 0014 on the empty database).
  "$PY" -c "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'bench.settings'); django.setup()
from django.db.models import Sum
from incidents.models import Incident
from incidents.rollups import MetricsRollup, rollup_built
counted = Incident.objects.exclude(status='dismissed').filter(duplicate_of__isnull=True).count()
rolled = MetricsRollup.objects.filter(severity_id=0, service_id=0).aggregate(n=Sum('incidents'))['n'] or 0
print(f'roll-up: {rolled:,} of {counted:,} incidents')
raise SystemExit(0 if rollup_built() and rolled == counted else 1)" \
    || { "$PY" manage.py metrics_rollup_rebuild && "$PY" -c "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'bench.settings'); django.setup()
from django.db import connection
connection.cursor().execute('ANALYZE incidents_metricsrollup')  # fresh statistics for the planner"; }
  "$PY" manage.py collectstatic --noinput -v0
  start_gunicorn "$BENCH_PORT" "gunicorn-rollups-$label"
  "$PY" bench/metrics/rollup_measure.py --base-url "http://127.0.0.1:$PORT" --label "$label" \
    --duration "${BENCH_DURATION:-15s}" --warmup "${BENCH_WARMUP:-5s}" --runs "${BENCH_RUNS:-2}" \
    ${BENCH_SKIP_WHOLE_HISTORY:+--skip-whole-history} ${BENCH_WHOLE_HISTORY_ONLY:+--whole-history-only}
  stop_gunicorn
  trap - EXIT
  unset DATABASE_URL
done
if [ -z "${BENCH_NO_RENDER:-}" ]; then
  "$PY" bench/metrics/rollup_measure.py --render --docs "${BENCH_DOCS:-$ROOT/docs/benchmarks.md}"
fi

#!/usr/bin/env bash
# Every benchmark, one after another (what `make bench` runs); each rewrites its own section of
# docs/benchmarks.md and states the machine's load in it.
#
#   bench/all.sh                  # bench/run.sh (the admin), then every bench/*/run.sh in name order
#   bench/all.sh status fanout    # only these (names of folders under bench/; "admin" is bench/run.sh)
#
# A benchmark that fails does not stop the others; the summary at the end names it and the exit status
# is non-zero. The benchmarks run one at a time (they would measure each other otherwise), each with
# its own database and port defaults; their settings (BENCH_DURATION, BENCH_RUNS, BENCH_DOCS, …) pass
# through. A harness added under bench/<name>/run.sh is picked up without changing this file.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts=()
if [ "$#" -eq 0 ]; then
  scripts+=(bench/run.sh)
  for script in bench/*/run.sh; do
    scripts+=("$script")
  done
else
  for name in "$@"; do
    if [ "$name" = admin ]; then
      scripts+=(bench/run.sh)
    elif [ -f "bench/$name/run.sh" ]; then
      scripts+=("bench/$name/run.sh")
    else
      echo "bench/all.sh: no benchmark named $name (expected bench/$name/run.sh)" >&2
      exit 2
    fi
  done
fi

failed=()
started=$(date +%s)
for script in "${scripts[@]}"; do
  echo
  echo "=================== $script  ($(date -u +%H:%M:%S) UTC, $(uptime | sed 's/.*load average/load average/'))"
  if bash "$script"; then
    echo "=================== $script: done"
  else
    echo "=================== $script: FAILED (exit $?)"
    failed+=("$script")
  fi
done

echo
echo "bench/all.sh: ${#scripts[@]} benchmark(s) in $(( ($(date +%s) - started) / 60 )) min; results in docs/benchmarks.md"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "bench/all.sh: failed: ${failed[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Every benchmark, one after another (what `make bench` runs); each rewrites its own section of
# docs/benchmarks.md and states the machine's load in it.
#
#   bench/all.sh                  # bench/run.sh (the admin), then every bench/*/run.sh and
#                                 # bench/*/*_run.sh (e.g. bench/metrics/rollup_run.sh), folder by folder
#   bench/all.sh status fanout    # only these (names of folders under bench/; "admin" is bench/run.sh)
#
# A benchmark that fails does not stop the others; the summary at the end names it and the exit status
# is non-zero. The benchmarks run one at a time (they would measure each other otherwise), each with
# its own database and port defaults; their settings (BENCH_DURATION, BENCH_RUNS, BENCH_DOCS, …) pass
# through. A harness added as bench/<name>/run.sh or bench/<name>/<what>_run.sh is picked up without
# changing this file.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

harnesses_of() {  # the scripts of one folder under bench/: run.sh first, then any *_run.sh
  local found=()
  [ -f "bench/$1/run.sh" ] && found+=("bench/$1/run.sh")
  for script in "bench/$1"/*_run.sh; do
    [ -f "$script" ] && found+=("$script")
  done
  printf '%s\n' "${found[@]}"
}

scripts=()
if [ "$#" -eq 0 ]; then
  scripts+=(bench/run.sh)
  for folder in bench/*/; do
    while IFS= read -r script; do
      [ -n "$script" ] && scripts+=("$script")
    done < <(harnesses_of "$(basename "$folder")")
  done
else
  for name in "$@"; do
    if [ "$name" = admin ]; then
      scripts+=(bench/run.sh)
      continue
    fi
    found=$(harnesses_of "$name")
    if [ -z "$found" ]; then
      echo "bench/all.sh: no benchmark named $name (expected bench/$name/run.sh or bench/$name/*_run.sh)" >&2
      exit 2
    fi
    while IFS= read -r script; do scripts+=("$script"); done <<< "$found"
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

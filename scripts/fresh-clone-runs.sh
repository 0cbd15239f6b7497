#!/usr/bin/env bash
# Run what CI runs (.ci/run: services, setup, `make test`) on N fresh clones of this
# repository's HEAD, one after another, and stop at the first failure.
#   scripts/fresh-clone-runs.sh [N]      N defaults to 5
# Each run's log is kept in $OUT (default /tmp/inferd-fresh-runs); a summary line per run is
# printed: run number, exit code, seconds, and pytest's last line.
set -uo pipefail
runs=${1:-5}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
head=$(git -C "$repo" rev-parse --short HEAD)
out=${OUT:-/tmp/inferd-fresh-runs}
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  dir=$(mktemp -d /tmp/inferd-clone.XXXXXX)
  git clone -q "$repo" "$dir/inferd"
  at=$(git -C "$dir/inferd" rev-parse --short HEAD)  # what this run tests (HEAD may move)
  start=$(date +%s)
  (cd "$dir/inferd" && bash .ci/run) > "$out/run$i.log" 2>&1
  code=$?
  took=$(( $(date +%s) - start ))
  summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$out/run$i.log" | tail -1)
  echo "run $i of $runs at $at: exit $code in ${took}s: ${summary:-no pytest summary}"
  rm -rf "$dir"
  if [ "$code" -ne 0 ]; then
    echo "run $i failed; its log: $out/run$i.log"
    exit "$code"
  fi
done
echo "all $runs runs passed (HEAD was $head when they began)"

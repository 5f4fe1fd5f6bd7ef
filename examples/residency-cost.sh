#!/bin/bash
# What data residency costs in wait time on the two-site factory
# (builtin:two-sites-fr-de: Paris and Frankfurt, 4,096 H100 each).
# Philly-profile jobs (5,000, seed 1) each get a home site, where their
# inputs reside (`site:` in the workload's `types`, or an `inputs` column
# `NAME@paris`): every job is pinned to it. Two draws:
#   - balanced: homes drawn half and half;
#   - skewed: half of Frankfurt's jobs moved to Paris (75% of the data in
#     Paris).
# Each is simulated with its residency and without (`--residency-cost`);
# the report counts the jobs residency delayed (started ≥ 60 s later)
# and the wait it added.
# usage: bash examples/residency-cost.sh [BIN]
set -euo pipefail
G=${1:-target/release/gigafab}
F=builtin:two-sites-fr-de
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
for load in 2.5 3.5; do
  "$G" workload synth --profile philly --jobs 5000 --load "$load" --factory "$F" \
    --home-sites paris,frankfurt --out "$W/bal.csv" > /dev/null 2>&1
  # every other Frankfurt job (by line) moves to Paris
  awk -F, 'BEGIN{OFS=","} NR>1 && $5=="site:frankfurt" && NR%2==0 {$5="site:paris"} {print}' \
    "$W/bal.csv" > "$W/skew.csv"
  for w in bal skew; do
    printf '%-28s' "load $load, $w ($(grep -c site:paris "$W/$w.csv") in Paris):"
    "$G" sim --quiet --factory "$F" --workload "$W/$w.csv" --residency-cost -o json |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["residency"]; print("%5d of %d delayed, avg wait %.2f h (%.2f h without residency), %7.1f h added" % (r["delayed"], r["jobs"], r["avg_wait_s"]/3600, r["avg_wait_free_s"]/3600, r["extra_wait_h"]))'
  done
done

#!/bin/bash
# Average JCT of `las` and `hetero` (defaults) against Gavel's own
# simulator on the same jobs: Gavel's LAS (`max_min_fairness`) and its
# heterogeneity-aware LAS (`max_min_fairness_perf`), on gavel-108 (36 K80,
# 36 P100, 36 V100), Gavel's throughputs, failures off.
#
# Workloads, drawn with gigafab's port of Gavel's generator:
#   A, B, C: 1-GPU jobs at 4, 6 and 8 jobs/hour, 1,600 jobs, jobs
#            1,000-1,500 measured (each drawn job made 1-GPU with its V100
#            run time kept: its steps scaled by the 1-GPU over the k-GPU
#            V100 throughput);
#   D:       1/2/4/8-GPU jobs at 3 jobs/hour, 1,100 jobs, 500-1,000 measured.
# Seeds: 0 and 1 were used while developing the policies; 10-13 were held
# apart and only measured (pass SEEDS="..." to choose).
# Gavel's figures come from data/gavel/reference-jct.csv: Gavel's simulator
# run on these very files (examples/gavel/run_gavel.py; see the CSV's
# header). Each line ends with its bound: the average JCT if every measured
# job started at its submission, alone, on its fastest type.
# usage: bash examples/gavel-compare.sh [BIN]
set -euo pipefail
G=${1:-target/release/gigafab}
T=data/gavel/simulation_throughputs.json
REF=data/gavel/reference-jct.csv
SEEDS=${SEEDS:-"0 1 10 11 12 13"}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
sim() { # file, measured range, policy, field
  "$G" sim --factory builtin:gavel-108 --workload "$1" --throughputs builtin:gavel-throughputs \
    --policy "$3" --failure-rate 0 --quiet -o json --measure-jobs "$2" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d[sys.argv[1]]/3600))' "$4"
}
ref() { # workload, seed, policy
  awk -F, -v w="$1" -v s="$2" -v p="$3" '$1==w && $2==s && $3==p {printf "%.2f\n", $4; f=1} END {if (!f) print "-"}' "$REF"
}
one_gpu() { # in, out
  python3 - "$T" "$1" "$2" <<'PY'
import csv, json, sys
d = json.load(open(sys.argv[1]))["v100"]
rows = list(csv.reader(open(sys.argv[2])))
h = rows[0]; gi, si, ji = h.index("gpus"), h.index("steps"), h.index("job_type")
for row in rows[1:]:
    g, jt = int(row[gi]), row[ji]
    t1 = d[f"('{jt}', 1)"]["null"]
    tk = d.get(f"('{jt}', {g})", {}).get("null")
    if tk is None:
        gg = max(x for x in (1, 2, 4, 8) if x <= g and f"('{jt}', {x})" in d)
        tk = d[f"('{jt}', {gg})"]["null"] * g / gg
    row[si] = str(float(row[si]) / tk * t1); row[gi] = "1"
csv.writer(open(sys.argv[3], "w", newline="")).writerows(rows)
PY
}
echo "| workload | seed | bound | Gavel LAS | las | Gavel het.-aware LAS | hetero |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for seed in $SEEDS; do
  for w in A:4 B:6 C:8 D:3; do
    name=${w%%:*}; rate=${w##*:}
    if [ "$name" = D ]; then
      "$G" workload synth --profile gavel --jobs 1100 --rate 3 --seed "$seed" --out "$W/w.csv" >/dev/null 2>&1
      m=500..1000
    else
      "$G" workload synth --profile gavel --jobs 1600 --rate "$rate" --seed "$seed" --out "$W/raw.csv" >/dev/null 2>&1
      one_gpu "$W/raw.csv" "$W/w.csv"
      m=1000..1500
    fi
    echo "| $name ($rate/h) | $seed | $(sim "$W/w.csv" $m las avg_jct_bound_s) | $(ref "$name" "$seed" max_min_fairness) | $(sim "$W/w.csv" $m las avg_jct_s) | $(ref "$name" "$seed" max_min_fairness_perf) | $(sim "$W/w.csv" $m hetero avg_jct_s) |"
  done
done
# Gavel's own traces (all jobs, failures on), with and without the
# starvation bound
for t in data/gavel/msr_seed0/*.trace; do
  for p in las hetero; do
    a=$("$G" sim --factory builtin:gavel-108 --workload "$t" --workload-format gavel --throughputs builtin:gavel-throughputs --policy $p --quiet -o json | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["avg_jct_s"]/3600))')
    b=$("$G" sim --factory builtin:gavel-108 --workload "$t" --workload-format gavel --throughputs builtin:gavel-throughputs --policy $p --quiet -o json --no-promote | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["avg_jct_s"]/3600))')
    echo "trace $(basename "$t" .trace) $p: $a h | --no-promote: $b h"
  done
done

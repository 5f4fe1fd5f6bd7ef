#!/usr/bin/env bash
# The health experiment of docs/health.md: a 16,384-accelerator training
# job (48 days of work, Meta's Llama 3 failure rate and mix) plus a
# background of small preemptible jobs, on a cluster with 64 spare nodes;
# the effective training time (ETTR) of the training job, reactive and with
# proactive draining on failure precursors, against the predictor's recall
# and precision and the checkpoint interval. Run from the repository root.
set -euo pipefail
G=${G:-target/release/gigafab}
F=examples/factories/llama3-cluster.toml
T=${TMPDIR:-/tmp}/gigafab-health
SEEDS=${SEEDS:-"1 2 3"}
mkdir -p "$T"
cargo build --release -q -p gigafab

# the workload: the training job first, then 5,000 small jobs (1-8
# accelerators, mean 2 h) over 54 days; Python's random, seed 7
gen() { # checkpoint_s out
  python3 - "$1" "$2" <<'PY'
import random, sys
ckpt, out = float(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
rows = ["id,submit_s,gpus,duration_s,tenant,category,priority,preemptible,checkpoint_s",
        f"llama,0,16384,{48 * 86400},meta,industry,10,false,{ckpt:.0f}"]
for i in range(5000):
    g = rnd.choice([1, 1, 2, 4, 8])
    rows.append(f"bg{i},{rnd.uniform(60, 54 * 86400):.0f},{g},{rnd.expovariate(1 / 7200):.0f},lab,academia,0,true,")
open(out, "w").write("\n".join(rows) + "\n")
PY
}
run() { # workload out seed flags...
  local w=$1 out=$2 seed=$3; shift 3
  [ -s "$out" ] || $G sim --factory $F --workload "$w" --policy fairshare --seed "$seed" \
      --max-requeues 1000000 --restore-overhead 600 --quiet --output json "$@" > "$out"
}
for ck in 900 1800 3600; do
  [ -s "$T/w$ck.csv" ] || gen $ck "$T/w$ck.csv"
  for seed in $SEEDS; do
    run "$T/w$ck.csv" "$T/$ck-reactive-$seed.json" $seed
    for rec in 0.25 0.5 0.75 1.0; do
      for prec in 0.5 0.8 1.0; do
        run "$T/w$ck.csv" "$T/$ck-$rec-$prec-$seed.json" $seed \
            --precursor-recall $rec --precursor-precision $prec
      done
    done
    # pre-flight checks of 5 minutes catching half the latent faults, alone
    # and with a predictor
    run "$T/w$ck.csv" "$T/$ck-pf-$seed.json" $seed --precursor-recall 0 \
        --preflight-minutes 5 --preflight-recall 0.5
    run "$T/w$ck.csv" "$T/$ck-pf-0.75-$seed.json" $seed --precursor-recall 0.75 \
        --precursor-precision 0.8 --preflight-minutes 5 --preflight-recall 0.5
  done
done
python3 - "$T" "$SEEDS" <<'PY'
import json, sys
t, seeds = sys.argv[1], sys.argv[2].split()
def avg(name, key):
    xs = [json.load(open(f"{t}/{name}-{s}.json"))[key] for s in seeds]
    return sum(xs) / len(xs)
print("| checkpoint | run | ETTR | failures hitting a run | drains true / false | GPU-hours lost to failures |")
print("|---:|---|---:|---:|---:|---:|")
for ck in ["900", "1800", "3600"]:
    rows = [("reactive", f"{ck}-reactive")] + [
        (f"recall {r}, precision {p}", f"{ck}-{r}-{p}")
        for r in ["0.25", "0.5", "0.75", "1.0"] for p in ["0.5", "0.8", "1.0"]] + [
        ("pre-flight 5 min (catches 50%)", f"{ck}-pf"),
        ("pre-flight + recall 0.75, precision 0.8", f"{ck}-pf-0.75")]
    for label, name in rows:
        print(f"| {int(ck) // 60} min | {label} | {100 * avg(name, 'large_gang_ettr'):.1f}% "
              f"| {avg(name, 'failure_job_hits'):.0f} | {avg(name, 'true_drains'):.0f} / {avg(name, 'false_drains'):.0f} "
              f"| {avg(name, 'gpu_hours_lost'):,.0f} |")
PY

#!/usr/bin/env bash
# End-to-end overhead of `gigafab serve --executor slurm` against `sbatch`
# directly (BENCHMARKS.md, "Control plane, second shape"): N one-second
# 1-GPU jobs on the single-node Slurm of .ci/slurm.sh, submitted at once;
# the time from the first submission until the last job has ended. The two
# ways alternate ROUNDS times (the machine's speed drifts); the medians are
# printed last. Run from the repository root, with that Slurm started
# (bash .ci/slurm.sh).
set -euo pipefail
G=${G:-$PWD/target/release/gigafab}
N=${N:-200}
ROUNDS=${ROUNDS:-3}
eval "$(bash .ci/slurm.sh env)"
wait_empty() { while [ -n "$(squeue -h -o %i)" ]; do sleep 0.1; done; }
T=$(mktemp -d "${TMPDIR:-/tmp}/gigafab-overhead.XXXX")
SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf "$T"' EXIT
cd "$T"
"$G" fleet import-slurm --out "$T/f.toml" >/dev/null 2>&1

direct() {
  wait_empty
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq "$N"); do
    sbatch --parsable -p gpu --gres=gpu:1 -o /dev/null --wrap 'sleep 1' >/dev/null
  done
  wait_empty
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

through_gigafab() {
  wait_empty
  local d=$T/data-$1 url t0 t1 n
  export GIGAFAB_BOOTSTRAP_TOKEN=gf_overhead_token_0123456789abcdef
  "$G" serve --single-user --listen 127.0.0.1:0 --executor slurm --telemetry off \
    --data-dir "$d" --factory "$T/f.toml" 2> "$T/err-$1.log" &
  SP=$!
  for _ in $(seq 100); do grep -q "listening on" "$T/err-$1.log" && break; sleep 0.1; done
  url=$(grep -o "listening on [^ ]*" "$T/err-$1.log" | head -1 | cut -d' ' -f3)
  t0=$(date +%s.%N)
  for _ in $(seq "$N"); do
    curl -sf -H "Authorization: Bearer $GIGAFAB_BOOTSTRAP_TOKEN" -H 'content-type: application/json' \
      -d '{"allocation":1,"gpus":1,"command":["sleep","1"],"time_limit_s":120}' "$url/api/v1/jobs" >/dev/null
  done
  while true; do
    n=$(curl -sf -H "Authorization: Bearer $GIGAFAB_BOOTSTRAP_TOKEN" \
          "$url/api/v1/jobs?state=completed&limit=1000" \
        | python3 -c "import json,sys; print(len(json.load(sys.stdin)['items']))")
    [ "$n" -ge "$N" ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  kill $SP; wait $SP 2>/dev/null || true; SP=
  echo "$t1 - $t0" | bc
}

ds=(); gs=()
for r in $(seq "$ROUNDS"); do
  d=$(direct); g=$(through_gigafab "$r")
  echo "round $r: direct sbatch $d s, gigafab serve --executor slurm $g s ($N jobs)"
  ds+=("$d"); gs+=("$g")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
md=$(median "${ds[@]}"); mg=$(median "${gs[@]}")
echo "median: direct $md s, gigafab $mg s, overhead $(echo "scale=1; 100 * ($mg - $md) / $md" | bc) %"

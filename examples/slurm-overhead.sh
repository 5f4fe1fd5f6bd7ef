#!/usr/bin/env bash
# End-to-end overhead of `gigafab serve --executor slurm` against `sbatch`
# directly (BENCHMARKS.md, "Control plane, second shape"): N one-second
# 1-GPU jobs on the single-node Slurm of .ci/slurm.sh, submitted at once;
# the time until the last has ended. Run from the repository root, with
# that Slurm started (bash .ci/slurm.sh).
set -euo pipefail
G=${G:-$PWD/target/release/gigafab}
N=${N:-200}
eval "$(bash .ci/slurm.sh env)"
wait_empty() { while [ -n "$(squeue -h -o %i)" ]; do sleep 0.1; done; }
wait_empty
T=$(mktemp -d "${TMPDIR:-/tmp}/gigafab-overhead.XXXX")
trap 'kill $SP 2>/dev/null || true; rm -rf "$T"' EXIT
cd "$T"
t0=$(date +%s.%N)
for i in $(seq "$N"); do
  sbatch --parsable -p gpu --gres=gpu:1 -o /dev/null --wrap 'sleep 1' >/dev/null
done
wait_empty
t1=$(date +%s.%N)
echo "direct sbatch, $N jobs: $(echo "$t1 - $t0" | bc) s"

"$G" fleet import-slurm --out "$T/f.toml" >/dev/null
export GIGAFAB_BOOTSTRAP_TOKEN=gf_overhead_token_0123456789abcdef
"$G" serve --single-user --listen 127.0.0.1:0 --executor slurm --telemetry off \
  --data-dir "$T/data" --factory "$T/f.toml" 2> "$T/err.log" &
SP=$!
for _ in $(seq 100); do grep -q "listening on" "$T/err.log" && break; sleep 0.1; done
URL=$(grep -o "listening on [^ ]*" "$T/err.log" | head -1 | cut -d' ' -f3)
t0=$(date +%s.%N)
for i in $(seq "$N"); do
  curl -sf -H "Authorization: Bearer $GIGAFAB_BOOTSTRAP_TOKEN" -H 'content-type: application/json' \
    -d '{"allocation":1,"gpus":1,"command":["sleep","1"],"time_limit_s":120}' "$URL/api/v1/jobs" >/dev/null
done
while true; do
  n=$(curl -sf -H "Authorization: Bearer $GIGAFAB_BOOTSTRAP_TOKEN" \
        "$URL/api/v1/jobs?state=completed&limit=1000" \
      | python3 -c "import json,sys; print(len(json.load(sys.stdin)['items']))")
  [ "$n" -ge "$N" ] && break
  sleep 0.1
done
t1=$(date +%s.%N)
echo "gigafab serve --executor slurm, $N jobs: $(echo "$t1 - $t0" | bc) s"

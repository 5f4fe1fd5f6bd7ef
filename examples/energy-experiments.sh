#!/usr/bin/env bash
# The energy figures of BENCHMARKS.md ("Energy, power and carbon"):
# carbon-aware vs carbon-agnostic scheduling on two sites (France's and
# Germany's 2023 grids), and a power budget at 80% of peak demand with and
# without power capping. Run from the repository root.
set -euo pipefail
G=${G:-target/release/gigafab}
F=examples/factories/two-sites-fr-de.toml
T=${TMPDIR:-/tmp}/gigafab-energy
mkdir -p "$T"
cargo build --release -q -p gigafab

echo "== carbon: 20,000 Philly jobs at 60% offered load, 30% flexible (24 h slack);"
echo "   inflexible jobs pinned to a home site, flexible ones may move"
$G workload synth --profile philly --jobs 20000 --load 0.6 --factory $F \
   --flexible 0.3 --slack-hours 24 --home-sites paris,frankfurt --seed 1 --out "$T/flex.csv"
for mode in agnostic aware; do
  flag=""; [ $mode = aware ] && flag=--carbon-aware
  $G sim --factory $F --workload "$T/flex.csv" --policy fairshare --failure-rate 0 --quiet \
     $flag --output json > "$T/carbon-$mode.json"
done
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
a = json.load(open(f"{t}/carbon-agnostic.json")); b = json.load(open(f"{t}/carbon-aware.json"))
pct = lambda x, y: 100.0 * (y / x - 1.0)
print(f"jobs' carbon     {a['jobs_carbon_t']:.1f} -> {b['jobs_carbon_t']:.1f} tCO2e ({pct(a['jobs_carbon_t'], b['jobs_carbon_t']):+.1f}%)")
print(f"facility carbon  {a['carbon_t']:.1f} -> {b['carbon_t']:.1f} tCO2e ({pct(a['carbon_t'], b['carbon_t']):+.1f}%)")
print(f"deadline misses  {a['deadline_misses']} -> {b['deadline_misses']} (of {b['flexible_jobs']} flexible jobs)")
print(f"avg JCT inflexible {a['avg_jct_inflexible_s']/3600:.2f} -> {b['avg_jct_inflexible_s']/3600:.2f} h ({pct(a['avg_jct_inflexible_s'], b['avg_jct_inflexible_s']):+.1f}%)")
print(f"avg JCT flexible   {a['avg_jct_flexible_s']/3600:.2f} -> {b['avg_jct_flexible_s']/3600:.2f} h")
print(f"energy           {a['energy_mwh']:.0f} MWh (jobs {a['jobs_energy_mwh']:.0f} MWh) both ways; deferrals {b['carbon_deferrals']}")
PY

echo "== power: 20,000 Philly jobs at 90% offered load; budgets at 80% of each site's peak demand"
$G workload synth --profile philly --jobs 20000 --load 0.9 --factory $F --seed 2 --out "$T/power.csv"
$G sim --factory $F --workload "$T/power.csv" --policy fairshare --failure-rate 0 --quiet \
   --power-budget paris=1000 --power-budget frankfurt=1000 --output json > "$T/free.json"
read -r BP BF < <(python3 -c "import json; s=json.load(open('$T/free.json'))['sites']; print(0.8*s['paris']['peak_power_mw'], 0.8*s['frankfurt']['peak_power_mw'])")
for mode in plain capping; do
  flag=""; [ $mode = capping ] && flag=--power-capping
  $G sim --factory $F --workload "$T/power.csv" --policy fairshare --failure-rate 0 --quiet \
     --power-budget paris=$BP --power-budget frankfurt=$BF $flag --output json > "$T/power-$mode.json"
done
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
for name in ["free", "power-plain", "power-capping"]:
    r = json.load(open(f"{t}/{name}.json"))
    sites = ", ".join(f"{k} peak {v['peak_power_mw']:.2f}/{v['power_budget_mw']:.2f} MW" for k, v in sorted(r['sites'].items()))
    print(f"{name:14} util {100*r['utilization']:.1f}%  avg JCT {r['avg_jct_s']/3600:.1f} h  avg wait {r['avg_wait_s']/3600:.1f} h  "
          f"capped runs {r['capped_runs']}  jobs' energy {r['jobs_energy_mwh']:.0f} MWh  ({sites})")
PY

#!/usr/bin/env python3
"""Run Gavel's own simulator (stanford-futuredata/gavel, scheduler/) on a
gigafab workload CSV, mirroring scripts/drivers/simulate_scheduler_with_trace.py:
how data/gavel/reference-jct.csv was measured (examples/gavel-compare.sh
prints it beside `las` and `hetero`). Gavel is not part of gigafab: point
GAVEL_DIR at a checkout of it (default: ./gavel next to this file), in a
virtual environment with numpy, scipy, cvxpy and pandas.

usage: python run_gavel.py CSV POLICY --measure START END
           [--cluster 36:36:36] [--round 360] [--seed 0] [--solver ECOS]
           [--throughputs FILE] [--json out.json]

CSV columns: id,submit_s,gpus,duration_s,tenant,category,preemptible,
checkpoint_s,job_type,steps. Row i (0-based) becomes Gavel job i.
Gavel's log goes to stderr; the summary (one JSON object) to stdout and --json.
"""
import argparse
import csv
import json
import os
import sys
import time
import types

HERE = os.path.dirname(os.path.realpath(__file__))
GAVEL = os.path.join(os.environ.get('GAVEL_DIR', os.path.join(HERE, 'gavel')),
                     'scheduler')

# Stubs for imports needed only by physical (non-simulated) runs or by online
# throughput estimation (profiling_percentage < 1); neither is used here.
# Gavel's own files are left untouched.
for name in ('runtime', 'runtime.rpc', 'runtime.rpc.scheduler_server',
             'runtime.rpc.scheduler_client', 'matrix_completion'):
    sys.modules[name] = types.ModuleType(name)
sys.modules['runtime'].rpc = sys.modules['runtime.rpc']
sys.modules['runtime.rpc'].scheduler_server = \
    sys.modules['runtime.rpc.scheduler_server']
sys.modules['runtime.rpc'].scheduler_client = \
    sys.modules['runtime.rpc.scheduler_client']
sys.path.insert(0, GAVEL)

from job import Job                      # noqa: E402
from job_id_pair import JobIdPair        # noqa: E402
from job_table import JobTable           # noqa: E402
import scheduler                         # noqa: E402
import utils                             # noqa: E402


def read_csv(path):
    templates = {t.model: t for t in JobTable}
    jobs, arrival_times = [], []
    with open(path) as f:
        for i, row in enumerate(csv.DictReader(f)):
            t = templates[row['job_type']]
            # As utils.parse_trace builds a Job from a Gavel trace line (whose
            # command / working directory / steps argument / data-dir flag
            # come from the JobTable template, as utils.generate_job does).
            jobs.append(Job(job_id=None,
                            job_type=t.model,
                            command=t.command,
                            working_directory=t.working_directory,
                            needs_data_dir=t.needs_data_dir,
                            num_steps_arg=t.num_steps_arg,
                            total_steps=int(round(float(row['steps']))),
                            duration=None,
                            scale_factor=int(row['gpus']),
                            priority_weight=1.0,
                            SLO=None))
            arrival_times.append(float(row['submit_s']))
    return jobs, arrival_times


def main():
    p = argparse.ArgumentParser()
    p.add_argument('csv')
    p.add_argument('policy')
    p.add_argument('--measure', nargs=2, type=int, required=True,
                   metavar=('START', 'END'), help='half-open row range')
    p.add_argument('--cluster', default='36:36:36', help='v100:p100:k80')
    p.add_argument('--num_gpus_per_server', default='1:1:1')
    p.add_argument('--round', type=int, default=360)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--solver', default='ECOS')
    p.add_argument('--throughputs',
                   default=os.path.join(HERE, '..', '..', 'data', 'gavel',
                                        'simulation_throughputs.json'))
    p.add_argument('--extend', action='store_true',
                   help='add the (job type, gang size) pairs Gavel\'s table '
                        'lacks, k times the 1-GPU rate, as gigafab '
                        'extrapolates (gigafab\'s port draws multi-GPU jobs '
                        'of every type; Gavel\'s generator does not)')
    p.add_argument('--json')
    a = p.parse_args()

    if a.extend:
        import tempfile
        with open(a.throughputs) as f:
            table = json.load(f)
        for per_type in table.values():
            for key in list(per_type):
                model, k = key.strip('()').rsplit(', ', 1)
                if k != '1':
                    continue
                for g in (2, 4, 8):
                    gk = '(%s, %d)' % (model, g)
                    if gk not in per_type:
                        per_type[gk] = {'null': per_type[key]['null'] * g}
        tmp = tempfile.NamedTemporaryFile('w', suffix='.json', delete=False)
        json.dump(table, tmp)
        tmp.close()
        a.throughputs = tmp.name

    jobs, arrival_times = read_csv(a.csv)
    for i in range(1, len(arrival_times)):
        assert arrival_times[i] >= arrival_times[i - 1], 'unsorted arrivals'
    start, end = a.measure
    assert 0 <= start < end <= len(jobs)

    policy = utils.get_policy(a.policy, solver=a.solver, seed=a.seed)
    sched = scheduler.Scheduler(policy, throughputs_file=a.throughputs,
                                simulate=True, seed=a.seed,
                                time_per_iteration=a.round)
    v, pp, k = (int(x) for x in a.cluster.split(':'))
    cluster_spec = {'v100': v, 'p100': pp, 'k80': k}
    gv, gp, gk = (int(x) for x in a.num_gpus_per_server.split(':'))
    num_gpus_per_server = {'v100': gv, 'p100': gp, 'k80': gk}
    jobs_to_complete = set(JobIdPair(i, None) for i in range(start, end))

    t0 = time.time()
    sched.simulate(cluster_spec, arrival_times, jobs,
                   num_gpus_per_server=num_gpus_per_server,
                   jobs_to_complete=jobs_to_complete)
    wall = time.time() - t0

    # Gavel assigns ids in arrival (= CSV row) order: check it.
    for i, job in enumerate(jobs):
        if job._job_id is not None:
            assert job._job_id == JobIdPair(i, None), (i, job._job_id)
            assert sched._per_job_start_timestamps[job._job_id] == \
                arrival_times[i]
    gavel_avg = sched.get_average_jct(jobs_to_complete, verbose=True)
    jcts = [sched._job_completion_times.get(j) for j in sorted(jobs_to_complete)]
    missing = sum(1 for x in jcts if x is None)
    done = [x for x in jcts if x is not None]
    mine = sum(done) / len(done)
    assert abs(mine - gavel_avg) < 1e-6 * max(1.0, mine)
    out = {
        'csv': a.csv, 'policy': a.policy, 'measure': [start, end],
        'cluster': a.cluster, 'round_s': a.round, 'seed': a.seed,
        'solver': a.solver, 'num_jobs': len(jobs),
        'jobs_added': sched._job_id_counter,
        'measured_done': len(done), 'measured_missing': missing,
        'avg_jct_s': mine, 'avg_jct_h': mine / 3600.0,
        'sim_end_h': sched._current_timestamp / 3600.0,
        'utilization': sched.get_cluster_utilization(),
        'wall_s': wall,
    }
    print(json.dumps(out))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()

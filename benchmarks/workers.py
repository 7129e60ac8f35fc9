"""Trial throughput of one study scored by 1..N worker processes on this machine.

Runs the same search with ``autoprune search SPEC --workers K`` for each K (a fresh run
directory each, the study in SQLite there), and reads from the study how many trials
completed per minute between the first trial's start and the last one's end. Each worker
gets cores / K PyTorch threads. The trials are made slow enough (a ResNet-10 candidate
fine-tuned on digits for several epochs) that the workers' start-up is small beside them.

    python benchmarks/workers.py [--workers 1 2] [--trials 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import optuna

from autoprune.metrics import format_table

SPEC = """
model: {name: resnet10, options: {width: 16}, train: {epochs: 4, batch_size: 64}}
data: {name: digits, batch_size: 64}
scheme: {filter_prune: {}}
objective: {minimize: macs}
eps: 0.05
search:
  trials: TRIALS
  evaluation: {calibrate: false, finetune_epochs: 4, bn_batches: 4}
  max_attempts: 1
  refine: 0
recovery: {finetune: {epochs: 0.2}}
output: {report: false}
"""


def run(workers: int, trials: int, root: str) -> dict:
    out = os.path.join(root, f"run-{workers}")
    spec = os.path.join(root, "spec.yaml")
    with open(spec, "w") as f:
        f.write(SPEC.replace("TRIALS", str(trials)))
    if workers > 1:  # the baseline trained once, by the first run
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(os.path.join(root, "run-1")):
            if name.startswith("baseline-"):
                src = os.path.join(root, "run-1", name)
                with open(src, "rb") as a, open(os.path.join(out, name), "wb") as b:
                    b.write(a.read())
    cmd = [sys.executable, "-m", "autoprune", "search", spec, "--out", out, "--quiet"]
    t = time.perf_counter()
    subprocess.run([*cmd, "--workers", str(workers)], check=False, capture_output=True)
    wall = time.perf_counter() - t
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{out}/study.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    minutes = (end - start).total_seconds() / 60
    return {
        "workers": workers,
        "threads each": max(1, (os.cpu_count() or 1) // workers),
        "complete": len(done),
        "pruned (surplus)": sum(t.state.name == "PRUNED" for t in study.trials),
        "scored by": len({t.user_attrs.get("worker") for t in done}),
        "search min": minutes,
        "trials/min": len(done) / minutes,
        "wall s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="autoprune-workers-")
    rows = []
    for k in sorted(set([1, *args.workers])):
        rows.append(run(k, args.trials, root))
        print(rows[-1], flush=True)
    one = rows[0]["trials/min"]
    for r in rows:
        r["vs 1 worker"] = r["trials/min"] / one
        r["target 0.9*N"] = 0.9 * r["workers"]
    print(
        f"\n{os.cpu_count()} cores; trials/min between the first trial's start and the last's end"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()

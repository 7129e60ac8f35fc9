"""Trial throughput of one study scored by 1..N worker processes on this machine.

Runs the same search with ``autoprune search SPEC --workers K`` for each K (a fresh run
directory each, the study in SQLite there), and reads from the study how many trials
completed per minute between the first trial's start and the last one's end. Each worker
gets cores / K PyTorch threads; ``--one-thread`` adds one worker on a single thread, the
per-process baseline that N single-thread workers are N times of when they scale.

Short trials (digits, the default: a ResNet-10 candidate fine-tuned for 4 epochs, about
2 s) show the workers' start-up; trials of a minute (``--data fashion-mnist``: half an
epoch of Fashion-MNIST each) show the throughput a long search gets.

    python benchmarks/workers.py [--workers 1 2] [--trials 30]
    python benchmarks/workers.py --data fashion-mnist --data-root ../shared/data/fashion-mnist \
        --trials 8 --finetune-epochs 0.5 --one-thread
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
model: {name: resnet10, options: {width: 16}, train: {epochs: EPOCHS, batch_size: 64}}
data: DATA
scheme: {filter_prune: {}}
objective: {minimize: macs}
eps: 0.05
search:
  trials: TRIALS
  evaluation: {calibrate: false, finetune_epochs: FINETUNE, bn_batches: 4}
  max_attempts: 1
  refine: 0
recovery: {finetune: {epochs: 0.05}}
output: {report: false}
"""

DATA = {
    "digits": ("{name: digits, batch_size: 64}", 4),
    "fashion-mnist": (
        "{name: npz, root: ROOT, options: {train: train.npz, test: test.npz, "
        "val_fraction: 0.1}, batch_size: 128}",
        1,
    ),
}


def write_spec(root: str, args: argparse.Namespace) -> str:
    data, epochs = DATA[args.data]
    text = SPEC.replace("DATA", data.replace("ROOT", os.path.abspath(args.data_root or ".")))
    text = text.replace("EPOCHS", str(epochs)).replace("TRIALS", str(args.trials))
    text = text.replace("FINETUNE", str(args.finetune_epochs))
    spec = os.path.join(root, "spec.yaml")
    with open(spec, "w") as f:
        f.write(text)
    return spec


def run(workers: int, spec: str, root: str, threads: int | None = None) -> dict:
    out = os.path.join(root, f"run-{workers}-{threads or 'all'}")
    first = os.path.join(root, "run-1-all")
    if out != first:  # the baseline trained once, by the first run
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(first):
            if name.startswith("baseline-"):
                src = os.path.join(first, name)
                with open(src, "rb") as a, open(os.path.join(out, name), "wb") as b:
                    b.write(a.read())
    cmd = [sys.executable, "-m", "autoprune", "search", spec, "--out", out, "--quiet"]
    cmd += ["--workers", str(workers)] + (["--threads", str(threads)] if threads else [])
    t = time.perf_counter()
    subprocess.run(cmd, check=False, capture_output=True)
    wall = time.perf_counter() - t
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{out}/study.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    minutes = (end - start).total_seconds() / 60
    return {
        "workers": workers,
        "threads each": threads or max(1, (os.cpu_count() or 1) // workers),
        "complete": len(done),
        "pruned (surplus)": sum(t.state.name == "PRUNED" for t in study.trials),
        "scored by": len({t.user_attrs.get("worker") for t in done}),
        "search min": minutes,
        "s/trial/worker": 60 * workers / (len(done) / minutes),
        "trials/min": len(done) / minutes,
        "wall s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--data-root", help="the Fashion-MNIST npz files' directory")
    parser.add_argument(
        "--finetune-epochs", type=float, default=4, help="each candidate's fine-tuning"
    )
    parser.add_argument(
        "--one-thread", action="store_true", help="also run one worker on one thread"
    )
    args = parser.parse_args()
    if args.data == "fashion-mnist" and not args.data_root:
        parser.error("--data fashion-mnist needs --data-root DIR (train.npz, test.npz)")
    root = tempfile.mkdtemp(prefix="autoprune-workers-")
    spec = write_spec(root, args)
    rows = [run(1, spec, root)]
    print(rows[-1], flush=True)
    if args.one_thread:
        rows.append(run(1, spec, root, threads=1))
        print(rows[-1], flush=True)
    for k in sorted(set(args.workers) - {1}):
        rows.append(run(k, spec, root))
        print(rows[-1], flush=True)
    one = rows[0]["trials/min"]
    single = rows[1]["trials/min"] if args.one_thread else None
    for r in rows:
        r["vs 1 worker"] = r["trials/min"] / one
        if single is not None:
            r["vs 1 worker, 1 thread"] = r["trials/min"] / single
        r["target 0.9*N"] = 0.9 * r["workers"]
    print(
        f"\n{os.cpu_count()} cores, {args.data}, {args.finetune_epochs:g} epoch(s) of "
        "fine-tuning a trial; trials/min between the first trial's start and the last's end"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()

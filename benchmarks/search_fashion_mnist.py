"""autoprune's search against uniform and global-magnitude baselines on Fashion-MNIST.

Model: a width-16 ResNet-10-style net trained for 3 epochs (cached). Tasks at eps=0.01:

1. ``throughput``: ``filter_prune``, maximise throughput (batch 64, interleaved with the
   original);
2. ``size``: ``prune``, minimise stored size (sparse format, fp16 values, BatchNorm as
   scale+shift);
3. ``size_quantized``: the same with every pruned layer's weights then shared by k-means
   (``quantize``, ``--bits`` bits, the classifier too); every method's model is quantized
   the same way after its fine-tuning, and judged on the quantized model.

Methods, each given the same fine-tuning budget (``--recovery-epochs`` epochs of masked
SGD at ``--recovery-lr``, cosine decay) and judged the same way (validation accuracy within
eps after it):

* **autoprune**: ``Compressor`` (calibrated TPE search; the search stops at ``--timeout``);
  its recovery ramps the sparsity up over the first ``--gradual`` of the fine-tuning
  (``FineTune(gradual=...)``) instead of pruning at once;
* **uniform**: one sparsity for every layer, found by bisection, each step recovered;
* **global**: Torch-Pruning global magnitude channel pruning (task 1) or
  ``torch.nn.utils.prune.global_unstructured`` (tasks 2, 3), ratio found by bisection, each
  step recovered;
* **uniform_gradual** (task 1) and **global_gradual** (tasks 2, 3): the uniform plan and
  the global ranking recovered with autoprune's gradual fine-tuning, to show how much of
  autoprune's lead is its recovery rather than its search.

Every final model is then measured the same way, throughput interleaved with the original.

    python benchmarks/search_fashion_mnist.py [--data-root DIR] [--task TASK ...] [--bits B]
        [--methods autoprune uniform global uniform_gradual global_gradual]
        [--recovery-lr LR] [--gradual G]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import time
import warnings

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

import autoprune as ap
from autoprune import metrics
from autoprune import objectives as O

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.01
SIZE = O.inference_size_fp16


def load(args):
    root = args.data_root
    data = ap.data.npz(
        os.path.join(root, "train.npz"), os.path.join(root, "test.npz"), val_fraction=0.1, seed=0
    )
    loaders = data.loaders(batch_size=128, seed=0)
    os.makedirs(args.cache_dir, exist_ok=True)
    path = os.path.join(args.cache_dir, "fmnist_resnet10_w16_e3.pt")
    model = ap.create_model("resnet10", 10, data.input_shape, width=16)
    if os.path.isfile(path):
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        t = time.perf_counter()
        print("training the ResNet-10 (3 epochs) ...", flush=True)
        ap.train(model, loaders.train, epochs=3, lr=0.05, seed=0, progress=True)
        torch.save(model.state_dict(), path)
        print(f"trained in {time.perf_counter() - t:.0f} s", flush=True)
    return data, loaders, model.eval()


def finetune(model, loaders, epochs, lr, after=None):
    """The recovery the baselines get: BN recalibration, then masked fine-tuning; with
    ``after`` (a Quantize), the weights are then quantized and BatchNorm recalibrated, as
    autoprune's FineTune does."""
    ap.recalibrate_bn(model, loaders.train, 20)
    ap.train(model, loaders.train, epochs=epochs, lr=lr, seed=0)
    if after is not None:
        finalize_torch_prune(model)  # torch's pruning hooks would undo the quantization
        after.apply(model)
        ap.recalibrate_bn(model, loaders.train, 20)
    return model


def bisect(recover, lo, hi, steps, base, loaders, log):
    """Largest ratio in [lo, hi] whose recovered model keeps eps; returns (model, ratio, n)."""
    best = None
    for k in range(steps):
        mid = round((lo + hi) / 2, 5)
        model = recover(mid)
        drop = base - ap.evaluate(model, loaders.val).accuracy
        ok = drop <= EPS
        log(
            f"  bisection {k + 1}/{steps}: ratio {mid:.4f} drop {drop:+.4f} "
            f"{'holds' if ok else 'breaks'}"
        )
        if ok:
            lo, best = mid, (model, mid)
        else:
            hi = mid
    if best is None:
        return None, 0.0, steps
    return best[0], best[1], steps


# -- task 1 -------------------------------------------------------------------------------


def uniform_filters(original, x, s):
    model = copy.deepcopy(original)
    ap.filter_prune(model, s, x, physical=True)
    return model


def global_filters(original, x, r):
    model = copy.deepcopy(original)
    if r <= 0:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            model,
            x,
            importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=r,
            global_pruning=True,
            ignored_layers=[model.fc],
        )
        pruner.step()
    return model


# -- task 2 -------------------------------------------------------------------------------


def prunable(model):
    return [
        (m, "weight")
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "fc"
    ]


def uniform_weights(original, x, s):
    model = copy.deepcopy(original)
    ap.prune(model, s, example_input=x)
    return model


def global_weights(original, x, a):
    model = copy.deepcopy(original)
    torch_prune.global_unstructured(
        prunable(model), pruning_method=torch_prune.L1Unstructured, amount=a
    )
    return model


def finalize_torch_prune(model):
    for m, name in prunable(model):
        if torch_prune.is_pruned(m):
            torch_prune.remove(m, name)
    return model


# -----------------------------------------------------------------------------------------


def run_autoprune(task, args, data, original, scheme, objective, log):
    """autoprune's row: a Compressor run under the task's timeout."""
    log(f"[{task}] autoprune search ...")
    t = time.perf_counter()
    c = ap.Compressor(
        original,
        objective,
        EPS,
        scheme=scheme,
        data=data,
        recovery=ap.FineTune(
            epochs=args.recovery_epochs, lr=args.recovery_lr, gradual=args.gradual
        ),
        n_trials=args.trials,
        timeout=args.timeout,
        seed=0,
        progress=not args.quiet,
    )
    result = c.run()
    wall = time.perf_counter() - t
    for note in result.notes:
        log(f"  note: {note}")
    for step in result.settings.refinement:
        log(
            f"  refinement: level {step.level:.4f} drop {step.drop:+.4f} "
            f"{'holds' if step.holds else 'breaks'}"
        )
    return {
        "model": result.model,
        "trials": len(result.trials),
        "seconds": wall,
        "search_seconds": result.phases.get("search"),
        "feasible": result.feasible,
        "notes": result.notes,
    }


def measure_rows(task, rows, original, loaders, x, base):
    """Every final model measured the same way, side by side with the original."""
    table = []
    for name, row in rows.items():
        model = row["model"] if row["model"] is not None else original
        if task == "throughput":
            value = metrics.compare_speed(
                original, model, x, batch_size=64, rounds=40, warmup=10, inner=3
            ).speedup
            label = "speedup"
        else:
            value = metrics.dense_size(original) / SIZE(model, x)
            label = "size reduction"
        table.append(
            {
                "method": name,
                label: value,
                "test_acc": ap.evaluate(model, loaders.test).accuracy,
                "val_drop": base - ap.evaluate(model, loaders.val).accuracy,
                "macs": metrics.count_macs(model, x) / metrics.count_macs(original, x),
                "nonzero": metrics.count_params(model).nonzero
                / metrics.count_params(original).total,
                "evaluations": row["trials"],
                "minutes": row["seconds"] / 60,
                **({"ratio": row["ratio"]} if "ratio" in row else {}),
            }
        )
    return table


def run_task(task, args, data, loaders, original, x, log):
    base = ap.evaluate(original, loaders.val).accuracy
    rows = {}
    epochs, lr = args.recovery_epochs, args.recovery_lr
    after = None
    if task == "throughput":
        scheme, objective = ap.FilterPrune(), O.Maximize(O.throughput)
        uniform, glob, lo, hi = uniform_filters, global_filters, 0.0, 0.9
    else:
        scheme, objective = ap.Prune(), O.Minimize(SIZE)
        uniform, glob, lo, hi = uniform_weights, global_weights, 0.5, 0.995
        if task == "size_quantized":
            after = ap.Quantize(args.bits, include_output=True)  # the classifier too
            scheme = ap.Compose([scheme, after])

    if "autoprune" in args.methods:
        rows["autoprune"] = run_autoprune(task, args, data, original, scheme, objective, log)

    def plain(make):
        return lambda r: finetune(make(original, x, r), loaders, epochs, lr, after)

    def gradual(make):  # a baseline's plan, recovered with autoprune's gradual ramp
        def recover(r):
            ramped = make(r)
            ramped = ap.Compose([ramped, after]) if after is not None else ramped
            recovery = ap.FineTune(epochs=epochs, lr=lr, gradual=args.gradual)
            return recovery.recover(original, ramped, loaders, x)

        return recover

    baselines = {
        "uniform": ("uniform", plain(uniform)),
        "global": ("global magnitude", plain(glob)),
    }
    if task == "throughput":
        baselines["uniform_gradual"] = ("uniform, gradual recovery", gradual(ap.FilterPrune))
    else:  # global_unstructured's ranking
        baselines["global_gradual"] = (
            "global magnitude, gradual recovery",
            gradual(lambda r: ap.Prune(r, scope="global")),
        )
    for name, (title, recover) in baselines.items():
        if name not in args.methods:
            continue
        log(f"[{task}] {title} by bisection ...")
        t = time.perf_counter()
        model, ratio, n = bisect(recover, lo, hi, args.bisection_steps, base, loaders, log)
        if name == "global" and model is not None and task != "throughput":
            model = finalize_torch_prune(model)
        rows[name] = {
            "model": model,
            "ratio": ratio,
            "trials": n,
            "seconds": time.perf_counter() - t,
        }

    return measure_rows(task, rows, original, loaders, x, base)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root", default=os.path.join(ROOT, "..", "shared", "data", "fashion-mnist")
    )
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, ".cache"))
    parser.add_argument(
        "--task",
        nargs="+",
        choices=["throughput", "size", "size_quantized"],
        default=["throughput", "size", "size_quantized"],
    )
    parser.add_argument("--bits", type=int, default=4, help="index bits for size_quantized")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["autoprune", "uniform", "global", "uniform_gradual", "global_gradual"],
        default=["autoprune", "uniform", "global", "uniform_gradual", "global_gradual"],
        help="uniform_gradual runs in task 1 only, global_gradual in tasks 2 and 3",
    )
    parser.add_argument("--trials", type=int, default=200, help="search trials (upper bound)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=780,
        help="seconds for autoprune's whole search, calibration included",
    )
    parser.add_argument("--recovery-epochs", type=float, default=3)
    parser.add_argument(
        "--recovery-lr", type=float, default=0.1, help="fine-tuning learning rate, every method"
    )
    parser.add_argument(
        "--gradual",
        type=float,
        default=0.3,
        help="share of the fine-tuning autoprune (and the *_gradual rows) ramp sparsity over",
    )
    parser.add_argument("--bisection-steps", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the tables as JSON here")
    parser.add_argument(
        "--log",
        default=os.path.join(ROOT, ".cache", "search_fashion_mnist.log"),
        help="autoprune's own log (every trial, calibration, recovery) goes here",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    handler = logging.FileHandler(args.log, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("autoprune").addHandler(handler)
    logging.getLogger("autoprune").setLevel(logging.INFO)
    data, loaders, original = load(args)
    x = data.example_input()

    def log(msg):
        print(msg, flush=True)

    base = ap.evaluate(original, loaders.val).accuracy
    log(
        f"original: val {base:.4f}, test {ap.evaluate(original, loaders.test).accuracy:.4f}, "
        f"{metrics.dense_size(original)} bytes dense fp32; {torch.get_num_threads()} threads, "
        f"{platform.machine()}, torch {torch.__version__}"
    )
    results = {}
    for task in args.task:
        table = run_task(task, args, data, loaders, original, x, log)
        results[task] = table
        print(f"\n{task} (eps={EPS})")
        print(metrics.format_table(table))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

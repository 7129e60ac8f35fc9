"""autoprune on a GPU: channel rounding on resnet50 in fp16, and a whole run on CUDA vs the CPU.

Part 1, channel rounding: torchvision resnet50 at 224x224, batch 256, float16,
channels-last, filter-pruned at each ratio with each ``round_to`` (and the default), timed
interleaved against the original and against a dense model of the same shape
(``benchmarks/channel_rounding.py``). Targets: never slower than the original with the
default ``round_to``; pruned / dense-of-same-shape >= 0.97.

Part 2, a whole ``Compressor`` run: the Fashion-MNIST ResNet-10 (width 16, 3 epochs,
cached as ``benchmarks/search_fashion_mnist.py`` caches it), ``filter_prune`` with its
default ``round_to``, maximise throughput at batch 1024 in float16 channels-last,
eps 0.01, on CUDA and then the same run on the CPU, with each phase's seconds side by
side. Targets: the CUDA result is physical and holds eps (in float32 and float16).

It runs only where CUDA is present (``--allow-cpu`` runs it on the CPU, to try the script).

    python benchmarks/gpu.py [--data-root DIR] [--timeout S] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel_rounding import rows_for  # noqa: E402

import autoprune as ap  # noqa: E402
from autoprune import metrics  # noqa: E402
from autoprune import objectives as O  # noqa: E402
from autoprune._backends import describe_device, resolve_device  # noqa: E402
from autoprune.deployment import Deployment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.01


def channel_rounding(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Part 1: the resnet50 table (``round_to`` 0 in a row means the default, 'auto')."""
    part = argparse.Namespace(
        model=args.model,
        size=args.size,
        batch=args.batch,
        ratios=args.ratios,
        round_to=args.round_to,
        rounds=args.rounds,
        warmup=5,
        threads=None,
    )
    return rows_for(part, device, Deployment("float16", channels_last=True))


def fashion_mnist(args: argparse.Namespace):
    data = ap.data.npz(
        os.path.join(args.data_root, "train.npz"),
        os.path.join(args.data_root, "test.npz"),
        val_fraction=0.1,
        seed=0,
    )
    model = ap.create_model("resnet10", 10, data.input_shape, width=16)
    path = os.path.join(args.cache_dir, "fmnist_resnet10_w16_e3.pt")
    if os.path.isfile(path):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        print("training the ResNet-10 (3 epochs) ...", flush=True)
        ap.train(model, data.loaders(batch_size=128, seed=0).train, epochs=3, lr=0.05, seed=0)
        os.makedirs(args.cache_dir, exist_ok=True)
        torch.save(model.state_dict(), path)
    return data, model.eval()


def whole_run(args: argparse.Namespace, data, model, device: str) -> dict:
    """Part 2: one Compressor run on ``device``; what the table shows of it."""
    objective = O.Maximize(O.Throughput(1024, dtype="float16", channels_last=True))
    t = time.perf_counter()
    result = ap.Compressor(
        model,
        objective,
        EPS,
        scheme=ap.FilterPrune(),
        data=data,
        recovery=ap.FineTune(epochs=args.recovery_epochs),
        n_trials=args.trials,
        timeout=args.timeout,
        device=device,
        seed=0,
        progress=False,
    ).run()
    wall = time.perf_counter() - t
    for note in result.notes:
        print(f"  [{device}] note: {note}", flush=True)
    before, after = result.before, result.after
    row = {
        "device": device,
        "feasible": result.feasible,
        "physical": result.plan.physical,
        "val drop": before["val_accuracy"] - after["val_accuracy"],
        "fp16 val drop": before["val_accuracy"] - after.get("deployed_val_accuracy", float("nan")),
        "macs": after["macs"] / before["macs"],
        "throughput": result.objectives["throughput"],
        "trials": len(result.trials),
    }
    row |= {f"{k} s": round(v, 1) for k, v in result.phases.items()}
    row["wall s"] = round(wall, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root", default=os.path.join(ROOT, "..", "shared", "data", "fashion-mnist")
    )
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, ".cache"))
    parser.add_argument(
        "--part", nargs="+", choices=["rounding", "run"], default=["rounding", "run"]
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument(
        "--round-to", nargs="+", default=["1", "8", "32", "auto"], help="'auto': the default"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=150, help="seconds per whole run")
    parser.add_argument("--recovery-epochs", type=float, default=1)
    parser.add_argument("--skip-cpu-run", action="store_true")
    parser.add_argument("--allow-cpu", action="store_true", help="try the script on the CPU")
    parser.add_argument("--out", help="write the tables as JSON here")
    args = parser.parse_args()
    args.round_to = [s if s == "auto" else int(s) for s in args.round_to]
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu.py: no CUDA device here; it measures a GPU (--allow-cpu to try it)")
        raise SystemExit(2)
    device = resolve_device("auto")
    print(f"{describe_device(device)}, torch {torch.__version__}", flush=True)
    tables: dict[str, list[dict]] = {}
    if "rounding" in args.part:
        tables["rounding"] = channel_rounding(args, device)
        print(metrics.format_table(tables["rounding"]), flush=True)
    if "run" in args.part:
        data, model = fashion_mnist(args)
        devices = [str(device)] + ([] if args.skip_cpu_run or device.type == "cpu" else ["cpu"])
        tables["run"] = [whole_run(args, data, model, d) for d in devices]
        print(metrics.format_table(tables["run"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": describe_device(device), **tables}, f, indent=1)


if __name__ == "__main__":
    main()

"""Speed of filter-pruned models as the channel counts fall, and rounded to multiples.

For each pruning ratio and ``round_to``, L1 filter pruning removes channels physically
(every coupled group keeping a multiple of ``round_to``), and the pruned model is timed
interleaved (A B A B ..., median of the per-round ratios) against

(a) the original model: the speed-up pruning buys (below 1.0: pruning made it slower);
(b) a dense model of exactly the pruned shapes, built from scratch: how far the pruned
    model is from running as fast as if it had been designed that small.

Every model is timed in the deployment form asked for (dtype, channels-last, compiled),
on the device asked for (CUDA timings between CUDA events). This is what the default of
``round_to`` is chosen from (docs/measurements.md); ``auto`` is that default as a search
timing the model on this device uses it.

    python benchmarks/channel_rounding.py --device cpu --model resnet50 --size 112 --batch 8
    python benchmarks/channel_rounding.py --device cuda --dtype float16 --channels-last \\
        --model resnet50 --size 224 --batch 256
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from physical_speedup import built_from_scratch  # noqa: E402

import autoprune as ap  # noqa: E402
from autoprune import metrics  # noqa: E402
from autoprune._backends import describe_device, resolve_device  # noqa: E402
from autoprune.deployment import Deployment  # noqa: E402
from autoprune.plan import get_plan  # noqa: E402


def aligned(model: torch.nn.Module, multiple: int) -> float:
    """The share of conv output-channel counts that are multiples of ``multiple``."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return sum(m.out_channels % multiple == 0 for m in convs) / len(convs)


def rows_for(args: argparse.Namespace, device: torch.device, form: Deployment) -> list[dict]:
    torch.manual_seed(0)
    build = getattr(torchvision.models, args.model)
    original = build(weights=None, num_classes=1000).eval().to(device)
    x = torch.randn(1, 3, args.size, args.size, device=device)
    base_macs = metrics.count_macs(original, x)
    timing = {
        "batch_size": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "deployment": form,
    }
    rows = []
    for ratio in args.ratios:
        for step in args.round_to:
            pruned = copy.deepcopy(original)
            # "auto": what a search timing the model on this device uses
            scheme = ap.FilterPrune(ratio, physical=True, round_to=step)
            scheme.for_run(device, timed=True).apply(pruned, x)
            plan = get_plan(pruned)
            if not plan.physical:
                raise SystemExit(f"{args.model} at {ratio}, round_to {step}: stayed masked")
            scratch = built_from_scratch(pruned).to(device)
            vs_orig = metrics.compare_speed(original, pruned, x, **timing)
            vs_dense = metrics.compare_speed(scratch, pruned, x, **timing)
            row = {
                "ratio": ratio,
                "round_to": step,
                "macs": metrics.count_macs(pruned, x) / base_macs,
                "x8 convs": aligned(pruned, 8),
                "orig img/s": round(vs_orig.reference.images_per_s, 1),
                "pruned img/s": round(vs_orig.candidate.images_per_s, 1),
                "vs original": vs_orig.speedup,
                "vs dense same shape": vs_dense.speedup,
            }
            rows.append(row)
            print(
                f"ratio {ratio} round_to {step}: {row['vs original']:.3f}x original, "
                f"{row['vs dense same shape']:.3f} of dense",
                flush=True,
            )
            del pruned, scratch
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="a torchvision model (resnet50)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument(
        "--round-to", nargs="+", default=["1", "8", "32", "auto"], help="integers, or 'auto'"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    args.round_to = [s if s == "auto" else int(s) for s in args.round_to]
    device = resolve_device(args.device)
    form = Deployment(args.dtype, args.channels_last, args.compile)
    rows = rows_for(args, device, form)
    worst = min(r["vs original"] for r in rows)
    print()
    print(
        f"{args.model} at {args.size}x{args.size}, batch {args.batch}, {form.describe()}, on "
        f"{describe_device(device)}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; {args.rounds} interleaved rounds. macs: pruned over original; "
        "x8 convs: share of convs whose output channels are a multiple of 8; vs original, "
        "vs dense same shape: median ratio of throughputs, pruned over the other"
    )
    print(metrics.format_table(rows))
    by_step = {s: min(r["vs original"] for r in rows if r["round_to"] == s) for s in args.round_to}
    print(
        "slowest against the original, per round_to: "
        + ", ".join(f"{s}: {v:.3f}x" for s, v in by_step.items())
        + f"; overall {worst:.3f}x"
        + ("" if math.isfinite(worst) else " (no rows)")
    )


if __name__ == "__main__":
    main()

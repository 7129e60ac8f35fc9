"""Throughput after physical filter pruning, against the original and against a dense
model of the same shape built from scratch.

For each model and sparsity, L1 filter pruning removes the channels physically. The
pruned model is then timed interleaved (A B A B ..., median of per-round ratios) against

(a) the original model: the speed-up pruning buys, and
(b) a model of exactly the pruned shapes whose layers are freshly constructed (new
    Conv2d/Linear/BatchNorm modules, new contiguous tensors): a pruned model should run as
    fast as if it had been designed that small (target: ratio >= 0.97).

    python benchmarks/physical_speedup.py [--threads 2] [--rounds 15]
"""

from __future__ import annotations

import argparse
import copy
import platform

import torch
from torch import nn

import autoprune as ap
from autoprune import metrics


def built_from_scratch(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Conv/Linear/BatchNorm layers are newly constructed."""
    fresh = copy.deepcopy(model)
    for name, m in list(fresh.named_modules()):
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(
                m.in_channels,
                m.out_channels,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                m.groups,
                m.bias is not None,
                m.padding_mode,
            )
        elif isinstance(m, nn.Linear):
            new = nn.Linear(m.in_features, m.out_features, m.bias is not None)
        elif isinstance(m, nn.BatchNorm2d):
            new = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(fresh.get_submodule(parent_name) if parent_name else fresh, child, new)
    return fresh.eval()


CASES = [
    # model, builder kwargs, input shape, batch size, forward passes per timing
    ("resnet10", {"width": 16}, (1, 28, 28), 64, 5),
    ("resnet18", {}, (3, 224, 224), 16, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75])
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name, kwargs, shape, batch, inner in CASES:
        original = ap.create_model(name, num_classes=10, input_shape=shape, **kwargs).eval()
        x = torch.randn(1, *shape)
        base_macs = metrics.count_macs(original, x)
        base_params = metrics.count_params(original).total
        for s in args.sparsities:
            pruned = copy.deepcopy(original)
            plan = ap.filter_prune(pruned, s, x, physical=True)
            assert plan.physical, plan.notes
            scratch = built_from_scratch(pruned)
            timing = {
                "batch_size": batch,
                "threads": args.threads,
                "rounds": args.rounds,
                "inner": inner,
                "warmup": 10,
            }
            vs_orig = metrics.compare_speed(original, pruned, x, **timing)
            vs_scratch = metrics.compare_speed(scratch, pruned, x, **timing)
            # the noise floor: the same comparison between two identical models
            noise = metrics.compare_speed(scratch, built_from_scratch(pruned), x, **timing)
            rows.append(
                {
                    "model": name,
                    "input": "x".join(map(str, shape[1:])),
                    "batch": batch,
                    "sparsity": s,
                    "macs": metrics.count_macs(pruned, x) / base_macs,
                    "params": metrics.count_params(pruned).total / base_params,
                    "orig img/s": round(vs_orig.reference.images_per_s, 1),
                    "pruned img/s": round(vs_orig.candidate.images_per_s, 1),
                    "scratch img/s": round(vs_scratch.reference.images_per_s, 1),
                    "vs original": vs_orig.speedup,
                    "vs scratch": vs_scratch.speedup,
                    "A/A noise": noise.speedup,
                }
            )
            print(
                f"{name} s={s}: {vs_orig.speedup:.2f}x original, "
                f"{vs_scratch.speedup:.3f} of scratch",
                flush=True,
            )
    print()
    print(
        f"CPU {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}, {args.rounds} interleaved rounds; "
        "macs/params: pruned over original; vs original/vs scratch: median ratio of "
        "throughputs, pruned over the other; A/A noise: the same measurement between two "
        "identical scratch models (ideal 1.000)"
    )
    print(metrics.format_table(rows))


if __name__ == "__main__":
    main()

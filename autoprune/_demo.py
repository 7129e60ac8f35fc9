"""``autoprune demo``: train a small model on digits and prune it with each operator once."""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from . import data as data_mod
from . import metrics, models, schemes, training
from .errors import AutopruneError, ConfigError


def demo(args: argparse.Namespace) -> int:

    if args.model not in ("resnet10", "small_cnn", "mlp"):
        raise ConfigError(f"--model: expected resnet10, small_cnn or mlp, got {args.model!r}")
    training.seed_everything(args.seed)
    data = data_mod.digits(seed=args.seed)
    loaders = data.loaders(batch_size=64, seed=args.seed)
    kwargs = {"hidden": (128, 64)} if args.model == "mlp" else {"width": args.width}
    model = models.create_model(args.model, data.num_classes, data.input_shape, **kwargs)
    x = data.example_input(1)

    def say(*a):
        if not args.quiet:
            print(*a, file=sys.stderr)

    say(
        f"training {args.model} on digits ({len(data.train)} train / {len(data.val)} val / "
        f"{len(data.test)} test) for {args.epochs} epochs"
    )
    training.train(
        model,
        loaders.train,
        epochs=args.epochs,
        lr=0.05,
        seed=args.seed,
        progress=not args.quiet,
        desc="baseline",
    )
    s = args.sparsity
    operators = {
        "prune": schemes.Prune(s),
        "filter_prune": schemes.FilterPrune(s, physical=True),
        "neuron_prune": schemes.NeuronPrune(s, physical=True),
        "block_prune": schemes.BlockPrune(s, block=(4, 4)),
        "prune+quantize": schemes.Compose([schemes.Prune(s), schemes.Quantize(bits=4)]),
    }
    rows = [_row("original", model, model, loaders, x, args.threads)]
    for name, op in operators.items():
        pruned = copy.deepcopy(model)
        try:
            plan = op.apply(pruned, x)
        except AutopruneError as exc:
            say(f"{name}: skipped ({exc})")
            continue
        training.recalibrate_bn(pruned, loaders.train)
        training.train(
            pruned,
            loaders.train,
            epochs=args.finetune_epochs,
            lr=0.01,
            seed=args.seed,
            progress=not args.quiet,
            desc=f"fine-tune {name}",
        )
        if op.reapply_after_training(pruned, x):  # quantize again what fine-tuning moved
            training.recalibrate_bn(pruned, loaders.train)
        rows.append(_row(name, pruned, model, loaders, x, args.threads, plan))
    print(
        f"autoprune demo: {args.model} on digits, sparsity {s:g}, "
        f"fine-tuned {args.finetune_epochs} epochs after pruning"
    )
    print(metrics.format_table(rows))
    print(
        "\nsparsity: achieved fraction of units removed (weights, channels, neurons or "
        "blocks); params: nonzero; size: sparse format, fp32 values; speedup: throughput "
        f"at batch 64 over the original, timed interleaved on {torch.get_num_threads()} "
        "threads (CPU)."
    )
    return 0


def _row(name, model, original, loaders, x, threads, plan=None) -> dict:
    acc = training.evaluate(model, loaders.test).accuracy
    summ = metrics.summarize(model, x)
    units = plan.rows() if plan is not None else []
    total = sum(r["total"] for r in units)
    removed = sum(r["removed"] for r in units)
    speed = 1.0
    if model is not original:
        speed = metrics.compare_speed(
            original, model, x, batch_size=64, threads=threads, rounds=7
        ).speedup
    return {
        "model": name,
        "sparsity": removed / total if total else 0.0,
        "physical": bool(plan is not None and plan.physical),
        "test_acc": acc,
        "params": summ.nonzero_params,
        "macs": summ.macs,
        "size_bytes": summ.sparse_bytes,
        "speedup": speed,
    }

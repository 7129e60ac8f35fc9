"""The ``autoprune`` command.

``autoprune demo`` trains a small model on the embedded digits data, prunes it with each
scheme operator, fine-tunes briefly and prints what each achieved. Errors a user can cause
print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence

import torch

from . import __version__
from .errors import AutopruneError, ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autoprune",
        description="Find how far a trained PyTorch model can be pruned within an accuracy "
        "budget, then prune it for real.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = sub.add_parser(
        "demo",
        help="train a small model on digits and prune it with each operator",
        description="Train a small model on scikit-learn's bundled digits, prune a copy with "
        "each scheme operator (prune, filter_prune, neuron_prune, block_prune), fine-tune "
        "each briefly, and print accuracy, parameters, MACs, size and speed before and after.",
    )
    demo.add_argument(
        "--model", default="small_cnn", help="small_cnn, resnet10 or mlp (default: small_cnn)"
    )
    demo.add_argument(
        "--width",
        type=_positive_int,
        default=16,
        help="channel width of the conv models (default: 16)",
    )
    demo.add_argument(
        "--sparsity",
        type=_fraction,
        default=0.5,
        help="sparsity for every operator, in [0, 1) (default: 0.5)",
    )
    demo.add_argument(
        "--epochs", type=_positive_int, default=20, help="baseline training epochs (default: 20)"
    )
    demo.add_argument(
        "--finetune-epochs",
        type=_positive_int,
        default=3,
        help="fine-tuning epochs after pruning (default: 3)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for timing (default: torch's default)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def demo(args: argparse.Namespace) -> int:
    from . import data as data_mod
    from . import metrics, models, schemes, training

    if args.model not in ("resnet10", "small_cnn", "mlp"):
        raise ConfigError(f"--model: expected resnet10, small_cnn or mlp, got {args.model!r}")
    training.seed_everything(args.seed)
    data = data_mod.digits(seed=args.seed)
    loaders = data.loaders(batch_size=64, seed=args.seed)
    kwargs = {"hidden": (128, 64)} if args.model == "mlp" else {"width": args.width}
    model = models.create_model(args.model, data.num_classes, data.input_shape, **kwargs)
    x = data.example_input(1)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
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
    from . import metrics, training

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "demo":
            return demo(args)
    except AutopruneError as exc:
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

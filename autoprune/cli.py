"""The ``autoprune`` command (``python -m autoprune`` is the same).

Commands: ``search``, ``sensitivity``, ``report``, ``validate``, ``export`` and ``demo``.
Errors a user can cause print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
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
        epilog="Start with: autoprune search examples/digits.yaml",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "search",
        help="search, recover and report: the whole job of a spec",
        description="Run the whole job of a YAML spec: data and model (a baseline is trained "
        "and cached if the spec asks), the Optuna search of per-layer sparsities under eps, "
        "recovery, careful measurement, and the report. Everything lands in the run "
        "directory; running again with the same directory and study resumes the search.",
    )
    p.add_argument("spec", help="the YAML spec (see docs/spec.md)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: the spec's output.dir)")
    p.add_argument("--trials", type=_positive_int, help="completed trials the study should hold")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="seconds for the whole search")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: SQLite in DIR)")
    p.add_argument("--study", metavar="NAME", help="study name (default: autoprune)")
    p.add_argument("--seed", type=_int, help="seed of the sampler, data order and training")
    p.add_argument("--data-root", metavar="DIR", help="where the spec's data files are")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-trial lines")

    p = sub.add_parser(
        "sensitivity",
        help="per-layer sensitivity analysis",
        description="Prune one layer (or coupled group) at a time over a grid of sparsities "
        "and record validation accuracy. Writes sensitivity.csv, sensitivity.json and "
        "sensitivity.png, and prints each layer's largest sparsity within eps. A spec's "
        "'search.bounds: sensitivity' (or the path of sensitivity.json) uses them as bounds.",
    )
    p.add_argument("spec")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the spec's output.dir)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser(
        "report",
        help="rebuild report.md and report.html from a run",
        description="Rebuild report.md and the self-contained report.html of "
        "a run directory from its stored results.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="also render report.html in headless Chromium to this PNG and check that the "
        "page and its plots are drawn (needs chromium on the PATH)",
    )

    p = sub.add_parser(
        "validate",
        help="check a spec and print the resolved configuration",
        description="Check a spec (every key, type, range, name and file) and "
        "print it with every default filled in. Nothing runs.",
    )
    p.add_argument("spec")
    p.add_argument("--data-root", metavar="DIR")

    p = sub.add_parser(
        "export",
        help="write the compressed model for deployment",
        description="Write a run's compressed model as a TorchScript module, "
        "a torch.export program (.pt2) or ONNX, and check that it gives the "
        "model's outputs.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=["pt2", "onnx", "torchscript"])
    p.add_argument("--out", metavar="FILE", help="output file (default: in RUN_DIR)")

    demo = sub.add_parser(
        "demo",
        help="train a small model on digits and prune it with each operator",
        description="Train a small model on scikit-learn's bundled digits, prune a copy with "
        "each scheme operator at one fixed sparsity, fine-tune each briefly, and print "
        "accuracy, parameters, MACs, size and speed before and after. No search.",
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


# -- commands ----------------------------------------------------------------------------


def _load_spec(args: argparse.Namespace, extra: dict | None = None):
    from . import spec

    overrides = dict(extra or {})
    if getattr(args, "data_root", None):
        overrides["data.root"] = os.path.abspath(args.data_root)
    return spec.load(args.spec, overrides)


def cmd_search(args: argparse.Namespace) -> int:
    from . import runner

    overrides = {}
    for flag, key in (
        ("trials", "search.trials"),
        ("timeout", "search.timeout"),
        ("storage", "search.storage"),
        ("study", "search.study"),
        ("seed", "search.seed"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    s = _load_spec(args, overrides)
    out_dir = args.out or s.resolved["output"]["dir"]
    result = runner.search(s, out_dir, quiet=args.quiet)
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nrun directory: {out_dir}")
    for name in ("report.html", "report.md", "result.json", "model.pt", "trials.csv", "run.log"):
        if os.path.exists(os.path.join(out_dir, name)):
            print(f"  {name}")
    return 0 if result.feasible else 1


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from . import encoding, runner, sensitivity
    from .report import plots

    s = _load_spec(args)
    out_dir = args.out or s.resolved["output"]["dir"]
    cfg = s.resolved["sensitivity"]
    with runner.RunLog(out_dir, args.quiet):
        data = runner.build_data(s)
        model = runner.build_model(s, data, out_dir, progress=not args.quiet)
        loaders = data.loaders(
            batch_size=s.resolved["data"]["batch_size"], seed=s.resolved["data"]["seed"]
        )
        result = sensitivity.analyze(
            model,
            runner.build_scheme(s),
            loaders,
            data.example_input(),
            levels=cfg["levels"],
            bn_batches=cfg["bn_batches"],
            finetune_steps=cfg["finetune_steps"],
            val_batches=cfg["val_batches"],
            progress=not args.quiet,
        )
    eps = s.resolved["eps"]
    result.save(os.path.join(out_dir, "sensitivity.json"))
    encoding.atomic_write(os.path.join(out_dir, "sensitivity.csv"), result.to_csv().encode())
    encoding.atomic_write(
        os.path.join(out_dir, "sensitivity.png"),
        plots.sensitivity(result.levels, result.accuracy, result.base, eps),
    )
    limits = result.max_sparsity(cfg["threshold"] if cfg["threshold"] is not None else eps)
    width = max(len(u) for u in limits)
    print(
        f"base accuracy {result.base:.4f}; largest sparsity within "
        f"{cfg['threshold'] if cfg['threshold'] is not None else eps:g} per unit:"
    )
    for unit, level in limits.items():
        print(f"  {unit:<{width}}  {level:g}")
    print(f"\nwrote {out_dir}/sensitivity.csv, sensitivity.json, sensitivity.png")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build

    md, page = build(args.run_dir)
    print(f"wrote {md}\nwrote {page}")
    if args.screenshot:
        from .report import render

        render.screenshot(page, args.screenshot)
        seen = render.check(args.screenshot)
        print(
            f"wrote {args.screenshot}: rendered by Chromium; {seen['ink']:.0%} of the page inked, "
            "the plots drawn"
        )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    s = _load_spec(args)
    print(f"# {args.spec}: valid; resolved configuration:")
    print(s.to_yaml(), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .result import CompressionResult

    result = CompressionResult.load(args.run_dir)
    model = result.model.eval()
    x = torch.randn(2, *result.settings["input_shape"])
    ext = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".ts.pt"}[args.format]
    out = args.out or os.path.join(args.run_dir, "model" + ext)
    with torch.no_grad():
        ref = model(x)
    if args.format == "torchscript":
        scripted = torch.jit.trace(copy.deepcopy(model), x)
        torch.jit.save(scripted, out)
        got = torch.jit.load(out)(x)
    elif args.format == "pt2":
        batch = {0: torch.export.Dim.AUTO}  # any batch size, not just the example's
        program = torch.export.export(copy.deepcopy(model), (x,), dynamic_shapes=(batch,))
        torch.export.save(program, out)
        got = torch.export.load(out).module()(x)
    else:
        missing = [p for p in ("onnx", "onnxscript") if importlib.util.find_spec(p) is None]
        if missing:
            raise ConfigError(
                f"--format onnx needs the package(s) {', '.join(missing)}: "
                f"pip install {' '.join(missing)}"
            )
        torch.onnx.export(
            copy.deepcopy(model),
            (x,),
            out,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim.AUTO},),
        )
        got = None
        if importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime

            sess = onnxruntime.InferenceSession(out)
            got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    if got is not None:
        got = got.detach()
        diff = float((got - ref).abs().max())
        if not torch.allclose(got, ref, rtol=1e-4, atol=1e-5):
            raise ConfigError(f"export: the {args.format} model's outputs differ (max {diff:.3g})")
        print(f"wrote {out} ({os.path.getsize(out)} bytes); outputs match (max |diff| {diff:.2g})")
    else:
        print(f"wrote {out} ({os.path.getsize(out)} bytes); install onnxruntime to check outputs")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {
        "search": cmd_search,
        "sensitivity": cmd_sensitivity,
        "report": cmd_report,
        "validate": cmd_validate,
        "export": cmd_export,
        "demo": demo,
    }
    try:
        return commands[args.command](args)
    except AutopruneError as exc:
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "autoprune: interrupted (a search resumes where it stopped when run again)",
            file=sys.stderr,
        )
        return 130


# -- demo --------------------------------------------------------------------------------


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
        if op.finalize(pruned, x):  # quantize again what fine-tuning moved
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""The ``autoprune`` command (``python -m autoprune`` is the same).

Commands: ``search``, ``finalize``, ``sensitivity``, ``report``, ``validate``, ``export``
and ``demo``.
Errors a user can cause print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch

from . import __version__, _demo
from .deployment import Deployment
from .errors import AutopruneError, ConfigError, FinalizedElsewhere


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

    _add_search(sub)
    _add_finalize(sub)
    _add_sensitivity(sub)
    _add_report(sub)
    _add_validate(sub)
    _add_export(sub)
    _add_demo(sub)
    return parser


def _add_search(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="seconds for the whole run, measurements included",
    )
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: SQLite in DIR)")
    p.add_argument("--study", metavar="NAME", help="study name (default: autoprune)")
    p.add_argument("--seed", type=_int, help="seed of the sampler, data order and training")
    p.add_argument("--data-root", metavar="DIR", help="where the spec's data files are")
    p.add_argument(
        "--device",
        metavar="DEVICE",
        help="auto (CUDA when present, the default), cpu, cuda or cuda:N; overrides the spec",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-trial lines")
    p.add_argument(
        "--force",
        action="store_true",
        help="run a finished run's last stages again (default: report that it is complete)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="K",
        help="score trials in K processes on this machine, the CPU threads shared out (default: 1)",
    )
    p.add_argument(
        "--worker",
        action="store_true",
        help="only score trials of the study that another autoprune search on the same "
        "--storage and --study prepares and finishes (docs/operations.md)",
    )
    p.add_argument("--threads", type=_positive_int, metavar="N", help="PyTorch CPU threads")


def _add_finalize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finalize",
        help="finish a search's study as it stands: recover, measure, save, report",
        description="Finalize the spec's study as it stands, with no more trials: recover its "
        "finalists, refine, measure and write the result and report into the run directory, "
        "as the end of a search does. For a study whose workers ran out of time, or whose "
        "finalizing process died. A study is finalized once at each trial count, whichever "
        "process claims it first; a second finalize says where the result is.",
    )
    p.add_argument("spec", help="the YAML spec the search ran")
    p.add_argument("--out", metavar="DIR", help="run directory (default: the spec's output.dir)")
    p.add_argument("--storage", metavar="URL", help="the study's Optuna storage URL")
    p.add_argument("--study", metavar="NAME", help="the study's name (default: autoprune)")
    p.add_argument("--data-root", metavar="DIR", help="where the spec's data files are")
    p.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="finalize again a study already finalized")


def _add_sensitivity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sensitivity",
        help="per-layer sensitivity analysis",
        description="Prune one layer (or coupled group) at a time over a grid of sparsities "
        "and record validation accuracy. Writes sensitivity.csv, sensitivity.json and "
        "sensitivity.png, and prints each layer's largest sparsity whose drop stays within "
        "sensitivity.threshold (default 4 x eps, in [0.02, 0.2]). A spec's "
        "'search.bounds: sensitivity' (or the path of sensitivity.json) uses them as bounds.",
    )
    p.add_argument("spec")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the spec's output.dir)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true")


def _add_report(sub: argparse._SubParsersAction) -> None:
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


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check a spec and print the resolved configuration",
        description="Check a spec (every key, type, range, name and file) and "
        "print it with every default filled in. Nothing runs.",
    )
    p.add_argument("spec")
    p.add_argument("--data-root", metavar="DIR")


def _add_export(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16", "run"],
        default="float32",
        help="the weights' and inputs' dtype; 'run': the one the run's objectives deployed "
        "the model in (default: float32)",
    )


def _add_demo(sub: argparse._SubParsersAction) -> None:
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


# -- commands ----------------------------------------------------------------------------


def _load_spec(args: argparse.Namespace, extra: dict | None = None):
    from . import spec

    overrides = dict(extra or {})
    if getattr(args, "data_root", None):
        overrides["data.root"] = os.path.abspath(args.data_root)
    return spec.load(args.spec, overrides)


def cmd_search(args: argparse.Namespace) -> int:
    from . import _runner as runner

    overrides = {}
    for flag, key in (
        ("trials", "search.trials"),
        ("timeout", "search.timeout"),
        ("storage", "search.storage"),
        ("study", "search.study"),
        ("seed", "search.seed"),
        ("device", "device"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    s = _load_spec(args, overrides)
    out_dir = args.out or s.resolved["output"]["dir"]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"argument --out: {out_dir} is a file; give a directory for the run")
    if args.threads:
        torch.set_num_threads(args.threads)
    from ._preflight import preflight

    preflight(s, out_dir)  # before any training: everything the spec names, tried once
    if args.worker:
        if args.workers > 1:
            raise ConfigError("argument --workers: a --worker is one process; drop one of them")
        done = runner.work(s, out_dir, quiet=args.quiet)
        print(f"worker: {done.completed} trial(s) completed here")
        if done.result is None:
            return 0
        print("worker: it finalized the study")
        return _print_result(done.result, out_dir)
    finished = None if args.force else _finished(out_dir, s.to_yaml())
    if finished is not None:
        print(f"{out_dir} is complete: it ran this spec to the end (--force runs it again)")
        result = finished
    else:
        result = runner.search(s, out_dir, quiet=args.quiet, workers=args.workers)
    return _print_result(result, out_dir)


def _print_result(result: Any, out_dir: str) -> int:
    """The summary, the notes and the files of a result; the exit status (1: not
    feasible)."""
    if result.directory is not None and os.path.abspath(result.directory) != os.path.abspath(
        out_dir
    ):
        print(f"the study was finalized into {result.directory}; its result:")
        out_dir = result.directory
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nrun directory: {out_dir}")
    for name in ("report.html", "report.md", "result.json", "model.pt", "trials.csv", "run.log"):
        if os.path.exists(os.path.join(out_dir, name)):
            print(f"  {name}")
    warning = result.masked_warning()
    if warning:
        print(f"\nWARNING: {warning}")
    return 0 if result.feasible else 1


def cmd_finalize(args: argparse.Namespace) -> int:
    from . import _runner as runner
    from ._preflight import preflight

    overrides = {
        key: getattr(args, flag)
        for flag, key in (("storage", "search.storage"), ("study", "search.study"))
        if getattr(args, flag) is not None
    }
    if args.device:
        overrides["device"] = args.device
    s = _load_spec(args, overrides)
    out_dir = args.out or s.resolved["output"]["dir"]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"argument --out: {out_dir} is a file; give a directory for the run")
    preflight(s, out_dir)
    result = runner.finalize(s, out_dir, quiet=args.quiet, force=args.force)
    if result.directory is not None:
        print(
            f"the study was already finalized at this trial count, into {result.directory} "
            "(--force finalizes it again)"
        )
    return _print_result(result, out_dir)


def _finished(out_dir: str, spec_yaml: str) -> Any:
    """The saved result of ``out_dir`` when it ran this very spec to the end, else None."""
    from .compress import CompressionResult

    spec_path = os.path.join(out_dir, "spec.yaml")
    if not os.path.isfile(os.path.join(out_dir, "result.json")) or not os.path.isfile(spec_path):
        return None
    with open(spec_path, encoding="utf-8") as f:
        if f.read() != spec_yaml:
            return None
    try:
        return CompressionResult.load(out_dir)
    except AutopruneError:
        return None  # damaged: run it again


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from . import _runner as runner
    from ._io import atomic_write
    from .compress import sensitivity
    from .report import plots
    from .spec import sensitivity_options

    s = _load_spec(args, {"device": args.device} if args.device else None)
    out_dir = args.out or s.resolved["output"]["dir"]
    options = sensitivity_options(s.resolved["sensitivity"])
    from ._lock import RunLock
    from ._preflight import preflight

    preflight(s, out_dir)
    with RunLock(out_dir), runner.RunLog(out_dir, args.quiet):
        data = runner.build_data(s)
        model = runner.build_model(s, data, out_dir, progress=not args.quiet)
        device = runner.build_device(s)
        d = s.resolved["data"]
        loaders = data.loaders(
            batch_size=d["batch_size"],
            eval_batch_size=d["eval_batch_size"],
            seed=d["seed"],
            pin_memory=device.type == "cuda",
        )
        result = sensitivity.analyze(
            model,
            runner.build_scheme(s),
            loaders,
            data.example_input().to(device),
            options,
            seed=s.resolved["search"]["seed"],
            progress=not args.quiet,
        )
    eps = s.resolved["eps"]
    result.save(os.path.join(out_dir, "sensitivity.json"))
    atomic_write(os.path.join(out_dir, "sensitivity.csv"), result.to_csv().encode())
    atomic_write(
        os.path.join(out_dir, "sensitivity.png"),
        plots.sensitivity(result.levels, result.accuracy, result.base, eps),
    )
    threshold = options.threshold_for(eps)
    limits = result.max_sparsity(threshold)
    width = max(len(u) for u in limits)
    print(f"base accuracy {result.base:.4f}; largest sparsity within {threshold:g} per unit:")
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
    from ._preflight import preflight

    s = _load_spec(args)
    checked = preflight(s)
    sizes = checked.data.sizes()
    print(
        f"# {args.spec}: valid; data {checked.data.name} ({sizes[0]} train, {sizes[1]} val, "
        f"{sizes[2]} test, input {tuple(checked.data.input_shape)}, "
        f"{checked.data.num_classes} classes); the model runs on it"
    )
    print("# resolved configuration:")
    print(s.to_yaml(), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .compress import CompressionResult

    result = CompressionResult.load(args.run_dir)
    form = Deployment(**result.settings.deployment)
    deployed = Deployment(form.dtype if args.dtype == "run" else args.dtype)
    model = deployed.model(result.model.eval())
    x = deployed.input(torch.randn(2, *result.settings["input_shape"]))
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
        if importlib.util.find_spec("onnxruntime") is not None and deployed.dtype != "bfloat16":
            import onnxruntime

            sess = onnxruntime.InferenceSession(out)
            got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    what = f"wrote {out} ({os.path.getsize(out)} bytes, {deployed.dtype})"
    if got is not None:
        got = got.detach().float()
        diff = float((got - ref.float()).abs().max())
        rtol, atol = TOLERANCES[deployed.dtype]
        if not torch.allclose(got, ref.float(), rtol=rtol, atol=atol):
            raise ConfigError(f"export: the {args.format} model's outputs differ (max {diff:.3g})")
        print(f"{what}; outputs match the model's (max |diff| {diff:.2g})")
    else:
        print(f"{what}; install onnxruntime to check outputs")
    return 0


# how closely an exported model must reproduce the eager model's outputs, per dtype
TOLERANCES = {"float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3), "bfloat16": (5e-2, 1e-2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {
        "search": cmd_search,
        "finalize": cmd_finalize,
        "sensitivity": cmd_sensitivity,
        "report": cmd_report,
        "validate": cmd_validate,
        "export": cmd_export,
        "demo": _demo.demo,
    }
    try:
        return commands[args.command](args)
    except FinalizedElsewhere as exc:  # not a fault: the result is on another machine
        print(f"autoprune: {exc}")
        return 0
    except AutopruneError as exc:
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        said = str(exc) or "interrupted (a search resumes where it stopped when run again)"
        print(f"autoprune: {said}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

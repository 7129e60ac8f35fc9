"""The benchmark suite: autoprune's search against uniform and global baselines, its own
ablation and a dense control, on four architectures of different shape.

Every row starts from the same converged base (``benchmarks/bases.py``, the committed
checkpoints, their sha256 checked), on Fashion-MNIST read from ``--data-root``, at
eps = 0.01 of validation accuracy, and every plan any row tries is recovered by the same
fine-tuning: ``FineTune(epochs=--recovery-epochs, lr=--recovery-lr, gradual=0)`` (pruned
at once, so that the rows differ only in their plans). Budgets are counted, not timed,
so a loaded machine changes how long a row takes but not what it does: each baseline
recovers ``--recoveries`` plans; autoprune's calibration, finalists and refinement
together recover at most as many.

Tasks (objective, scheme):

* ``throughput``: maximise images/s at batch 64 (timed interleaved with the original),
  ``filter_prune``;
* ``macs``: minimise MACs, ``filter_prune`` (deterministic: the search's merit shows
  without timing noise);
* ``size``: minimise stored size (sparse format, fp16 values, BatchNorm as scale and
  shift), ``prune``;
* ``size_q4``: the same with ``prune`` then 4-bit k-means weight sharing (``quantize``,
  the classifier too).

Rows:

* ``uniform``: one sparsity for every unit, bisected over ``--recoveries`` recoveries;
* ``global``: one global ranking, its ratio bisected the same way: Torch-Pruning's global
  magnitude pruning of the convolutions' channels (fully connected layers kept whole, as
  ``filter_prune`` keeps them), or one global weight-magnitude ranking
  (what ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` removes);
* ``autoprune``: ``Compressor`` with ``--trials`` proxy-scored trials, a 15-minute timeout
  and the recovery budget above;
* ``no_study``: the same ``Compressor`` without the study (``n_trials=0``: the calibrated
  uniform plans only, then refinement), given the same recoveries: what the study adds;
* ``dense``: the original fine-tuned by the same recovery, nothing pruned: how much of
  any "recovery" is more training.

Each row is cached as JSON under ``--cache`` (keyed by the settings, and for autoprune's
two rows by a digest of the package's sources too), so an interrupted suite resumes where
it stopped; ``--fresh`` runs every row again. ``--load N`` runs autoprune's two rows (the
timed ones) beside N processes that each keep a core busy: the load-robustness test,
cached apart from the quiet rows. ``--seed S`` runs autoprune's rows with another seed
(the baselines keep theirs): two quiet runs measure the spread the load test is judged
against. The summary line gives
the geometric mean of autoprune's objective ratio over the best baseline's, and over the
ablation's.

    python benchmarks/suite.py [--arch vgg ...] [--task macs ...] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import Subset

import autoprune as ap
from autoprune import metrics
from autoprune import objectives as O
from autoprune.schemes import Scheme

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bases import ARCHS, fashion_mnist, load_base  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EPS = 0.01
TASKS = ("throughput", "macs", "size", "size_q4")
ROWS = ("uniform", "global", "autoprune", "no_study", "dense")
SIZE = O.inference_size_fp16
SEARCHED = ("autoprune", "no_study")  # the rows that run the Compressor
SHARED = ("eps", "recoveries", "recovery_epochs", "recovery_lr", "limit", "throughput_batch")
SHARED += ("timing_rounds",)


@dataclass(frozen=True)
class Settings:
    """What a suite run does; the cache key of its rows."""

    eps: float = EPS
    recoveries: int = 8
    recovery_epochs: float = 1.0
    recovery_lr: float = 0.05
    trials: int = 60
    calibration_steps: int = 4
    max_attempts: int = 2
    timeout: float = 900.0
    limit: int | None = None  # training examples (quick runs)
    proxy_epochs: float = 0.25
    throughput_batch: int = 64
    timing_rounds: int = 40
    prior: str = "auto"  # autoprune's allocation prior
    threshold: str = "midpoint"  # autoprune's calibrated threshold rule
    space: str = "shape"  # autoprune's search space (no_study: the calibration's uniform plans)
    load: int = 0  # busy processes (one core each) while a searched row runs
    seed: int = 0  # the searched rows' seed (the baselines keep 0): their run-to-run spread

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            eps=0.05,  # 200 validation examples: a pruned plan can hold
            recoveries=3,
            recovery_epochs=0.1,
            trials=4,
            calibration_steps=2,
            max_attempts=1,
            timeout=120.0,
            limit=2000,
            proxy_epochs=0.0,
            throughput_batch=16,
            timing_rounds=5,
        )

    def key(self, row: str = "autoprune") -> str:
        """The cache key of ``row``: the baselines and the control depend only on the
        settings they use, so autoprune's own can change without running them again."""
        fields = asdict(self)
        if row not in SEARCHED:
            fields = {k: v for k, v in fields.items() if k in SHARED}
        else:  # the Compressor's rows: made by this version of the package
            if row == "no_study":  # no study: its space and trials do not matter
                fields = {k: v for k, v in fields.items() if k not in ("space", "trials")}
            fields["code"] = source_hash()
        for option in ("load", "seed"):  # rows without them keep the keys they had before
            if not fields.get(option):
                fields.pop(option, None)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    def recovery(self) -> ap.FineTune:
        return ap.FineTune(epochs=self.recovery_epochs, lr=self.recovery_lr, gradual=0)


def source_hash() -> str:
    """A digest of the autoprune package's Python sources (the searched rows' cache key
    holds it, so a change to the package runs them again)."""
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(ap.__file__))
    for folder, dirs, files in sorted(os.walk(package)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, package).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def busy(processes: int) -> Iterator[list[subprocess.Popen]]:
    """``processes`` other processes, each keeping one core busy, while the block runs:
    the load under which a timed search must still hold its result."""
    spin = [sys.executable, "-c", "while True: pass"]
    others = [subprocess.Popen(spin) for _ in range(processes)]
    try:
        yield others
    finally:
        for p in others:
            p.kill()
            p.wait()


@dataclass
class Row:
    """One measured row of the suite."""

    arch: str
    task: str
    row: str
    value: float  # the task's objective as a ratio over the original (higher is better)
    val_drop: float
    test_acc: float
    feasible: bool
    macs: float  # the model's MACs over the original's
    size: float  # the original's stored size over the model's
    recoveries: int
    trials: int
    minutes: float
    ratio: float | None = None  # the baselines' bisected sparsity or ratio
    spearman: float | None = None  # autoprune's proxy agreement
    note: str = ""


class Counted(ap.FineTune):
    """The suite's recovery, counting how many plans it recovers."""

    count = 0

    def recover(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        Counted.count += 1
        return super().recover(*args, **kwargs)


def counted(settings: Settings) -> Counted:
    r = settings.recovery()
    return Counted(epochs=r.epochs, lr=r.lr, gradual=r.gradual)


# -- what each task compresses and how it is judged ---------------------------------------


def task_objective(task: str, settings: Settings) -> O.Objective:
    if task == "throughput":
        return O.Maximize(
            O.Throughput(
                batch_size=settings.throughput_batch,
                careful_rounds=settings.timing_rounds,
            )
        )
    if task == "macs":
        return O.Minimize(O.macs)
    return O.Minimize(SIZE)


def quantizer() -> ap.Quantize:
    return ap.Quantize(4, include_output=True)  # the classifier too


def task_scheme(task: str, sparsity: float = 0.5, scope: str = "layer") -> Scheme:
    if task in ("throughput", "macs"):
        return ap.FilterPrune(sparsity)
    prune = ap.Prune(sparsity, scope=scope)
    return ap.Compose([prune, quantizer()]) if task == "size_q4" else prune


def task_range(task: str) -> tuple[float, float]:
    """Where the baselines' bisection looks."""
    return (0.0, 0.9) if task in ("throughput", "macs") else (0.5, 0.995)


def measure(
    task: str, original: nn.Module, model: nn.Module, x: torch.Tensor, settings: Settings
) -> tuple[float, float, float]:
    """(objective ratio, MACs ratio, size reduction), higher objective ratios better."""
    macs = metrics.count_macs(model, x) / metrics.count_macs(original, x)
    size = SIZE(original, x) / SIZE(model, x)
    if task == "throughput":
        value = metrics.compare_speed(
            original,
            model,
            x,
            batch_size=settings.throughput_batch,
            rounds=settings.timing_rounds,
            warmup=5,
            inner=3,
        ).speedup
    elif task == "macs":
        value = 1.0 / macs
    else:
        value = size
    return value, macs, size


def linears(model: nn.Module) -> list[nn.Module]:
    """The fully connected layers, which ``filter_prune`` keeps whole (their neurons are
    ``neuron_prune``'s): the global baseline prunes what autoprune's scheme prunes."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def global_channels(original: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    """Torch-Pruning's global magnitude channel pruning at ``ratio``, of the
    convolutions' output channels (the units ``filter_prune`` searches)."""
    model = copy.deepcopy(original)
    if ratio <= 0:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            model,
            x,
            importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=ratio,
            global_pruning=True,
            ignored_layers=linears(model),
        )
        pruner.step()
    return model


# -- the rows -----------------------------------------------------------------------------


class Task:
    """One (architecture, task) pair: its base, data and settings."""

    def __init__(
        self, arch: str, task: str, data: ap.data.Data, original: nn.Module, settings: Settings
    ):
        self.arch, self.task, self.data, self.original = arch, task, data, original
        self.settings = settings
        self.loaders = data.loaders(batch_size=128, seed=0)
        self.x = data.example_input()
        self.base = ap.evaluate(original, self.loaders.val).accuracy

    def drop(self, model: nn.Module) -> float:
        return self.base - ap.evaluate(model, self.loaders.val).accuracy

    def recover(self, model: nn.Module, scheme: Scheme) -> nn.Module:
        recovery = counted(self.settings)
        return recovery.recover(model, scheme, self.loaders, self.x, seed=0)

    def row(self, name: str, model: nn.Module, start: float, found: bool, **extra) -> Row:
        """``found``: whether the row found a compressed model that keeps eps (a row that
        returns the original keeps eps trivially, and is not feasible)."""
        value, macs, size = measure(self.task, self.original, model, self.x, self.settings)
        drop = self.drop(model)
        return Row(
            arch=self.arch,
            task=self.task,
            row=name,
            value=value,
            val_drop=drop,
            test_acc=ap.evaluate(model, self.loaders.test).accuracy,
            feasible=found and drop <= self.settings.eps,
            macs=macs,
            size=size,
            minutes=(time.perf_counter() - start) / 60,
            **extra,
        )

    def bisect(self, name: str, make: Callable[[float], nn.Module], log) -> Row:
        """The largest ratio in the task's range whose recovered model keeps eps."""
        start, Counted.count = time.perf_counter(), 0
        lo, hi = task_range(self.task)
        best, ratio = None, 0.0
        for k in range(self.settings.recoveries):
            mid = round((lo + hi) / 2, 5)
            model = make(mid)
            drop = self.drop(model)
            log(f"  {name} {k + 1}/{self.settings.recoveries}: {mid:.4f} drop {drop:+.4f}")
            if drop <= self.settings.eps:
                lo, best, ratio = mid, model, mid
            else:
                hi = mid
        chosen = best if best is not None else copy.deepcopy(self.original)
        return self.row(
            name,
            chosen,
            start,
            found=best is not None,
            recoveries=Counted.count,
            trials=0,
            ratio=ratio,
            note="" if best is not None else "no ratio held eps; the original",
        )

    def uniform(self, log) -> Row:
        def make(s: float) -> nn.Module:
            model = self.recover(self.original, task_scheme(self.task, s))
            return ap.materialize(model, self.x).model

        return self.bisect("uniform", make, log)

    def global_(self, log) -> Row:
        if self.task in ("throughput", "macs"):

            def make(r: float) -> nn.Module:  # pruned physically, then the same recovery
                pruned = global_channels(self.original, self.x, r)
                return self.recover(pruned, ap.FilterPrune(0.0))

        else:

            def make(r: float) -> nn.Module:
                return self.recover(self.original, task_scheme(self.task, r, scope="global"))

        return self.bisect("global", make, log)

    def compressor(self, n_trials: int, refine: int, space: str) -> ap.Compressor:
        s = self.settings
        proxy = ap.ProxyOptions(
            finetune_epochs=s.proxy_epochs,
            min_finetune_steps=10 if s.proxy_epochs else 0,
            bn_batches=20 if s.limit is None else 4,
        )
        return ap.Compressor(
            self.original,
            task_objective(self.task, s),
            s.eps,
            scheme=task_scheme(self.task),
            data=self.data,
            recovery=counted(s),
            n_trials=n_trials,
            timeout=s.timeout,
            proxy=proxy,
            calibration=ap.CalibrationOptions(steps=s.calibration_steps, threshold=s.threshold),
            prior=s.prior,
            space=space,
            max_attempts=s.max_attempts,
            refine=refine,
            seed=s.seed,
            progress=False,
        )

    def search(self, name: str, n_trials: int, refine: int, space: str) -> Row:
        start, Counted.count = time.perf_counter(), 0
        result = self.compressor(n_trials, refine, space).run()
        trials = sum(1 for t in result.trials if t.get("state") == "complete")
        return self.row(
            name,
            result.model,
            start,
            found=result.feasible,
            recoveries=Counted.count,
            trials=trials,
            spearman=result.agreement.spearman,
            note="; ".join(n for n in result.notes if "refined" in n or "not feasible" in n),
        )

    def autoprune(self, log) -> Row:
        s = self.settings  # the study's finalists, then the calibrated plan (reused)
        refine = max(0, s.recoveries - s.calibration_steps - (s.max_attempts - 1))
        return self.search("autoprune", s.trials, refine, s.space)

    def no_study(self, log) -> Row:
        s = self.settings  # as autoprune's: the finalist recoveries it leaves go to refining
        refine = max(0, s.recoveries - s.calibration_steps - (s.max_attempts - 1))
        return self.search("no_study", 0, refine, "offsets")

    def dense(self, log) -> Row:
        start, Counted.count = time.perf_counter(), 0
        model = self.recover(self.original, ap.FilterPrune(0.0))
        return self.row("dense", model, start, found=True, recoveries=Counted.count, trials=0)

    def run(self, name: str, log) -> Row:
        return {
            "uniform": self.uniform,
            "global": self.global_,
            "autoprune": self.autoprune,
            "no_study": self.no_study,
            "dense": self.dense,
        }[name](log)


# -- the suite ----------------------------------------------------------------------------


@contextlib.contextmanager
def logged(path: str) -> Iterator[None]:
    """autoprune's own log of a row (every calibration step, trial and recovery) in
    ``path``, beside its cached result."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("autoprune")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def cached(path: str) -> Row | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return Row(**json.load(f))


def save(path: str, row: Row) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(row), f, indent=2)
    os.replace(tmp, path)


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summary(rows: list[Row]) -> tuple[str, list[dict]]:
    """Per pair: autoprune's ratio over the best baseline's and over the ablation's; and
    the geometric means."""
    pairs: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        pairs.setdefault((r.arch, r.task), {})[r.row] = r
    table, over_best, over_ablation = [], [], []
    for (arch, task), got in pairs.items():
        ours = got.get("autoprune")
        baselines = [got[k] for k in ("uniform", "global") if k in got and got[k].feasible]
        best = max(baselines, key=lambda r: r.value, default=None)
        entry = {"arch": arch, "task": task}
        if ours is not None and best is not None:
            entry["best baseline"] = best.row
            entry["autoprune / best"] = ours.value / best.value
            over_best.append(ours.value / best.value)
        if ours is not None and "no_study" in got:
            entry["autoprune / no_study"] = ours.value / got["no_study"].value
            over_ablation.append(ours.value / got["no_study"].value)
        if "dense" in got:
            entry["dense control drop"] = got["dense"].val_drop
        table.append(entry)
    gb, ga = geomean(over_best), geomean(over_ablation)
    line = "no pair has autoprune and a feasible baseline"
    if gb:
        line = (
            f"geometric mean over {len(over_best)} pair(s): autoprune / best baseline "
            f"{gb:.3f}x (lowest {min(over_best):.3f}x)"
        )
    if ga:
        line += f"; autoprune / no_study {ga:.3f}x over {len(over_ablation)} pair(s)"
    return line, table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_root = os.path.join(ROOT, "..", "shared", "data", "fashion-mnist")
    parser.add_argument("--data-root", default=default_root, help="Fashion-MNIST's npz files")
    parser.add_argument("--arch", nargs="+", choices=list(ARCHS), default=list(ARCHS))
    parser.add_argument("--task", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the whole suite on 2000 training examples with tiny budgets (about 18 minutes "
        "on 2 cores): checks that it runs, measures nothing",
    )
    defaults = Settings()
    parser.add_argument("--recoveries", type=int, default=defaults.recoveries)
    parser.add_argument("--recovery-epochs", type=float, default=defaults.recovery_epochs)
    parser.add_argument("--recovery-lr", type=float, default=defaults.recovery_lr)
    parser.add_argument("--trials", type=int, default=defaults.trials)
    parser.add_argument(
        "--prior",
        default=defaults.prior,
        choices=["auto", "uniform", "global", "sensitivity"],
        help="autoprune's allocation prior (its rows only)",
    )
    parser.add_argument(
        "--space",
        default=defaults.space,
        choices=["shape", "offsets"],
        help="autoprune's search space (its autoprune row only)",
    )
    parser.add_argument(
        "--threshold",
        default=defaults.threshold,
        choices=["midpoint", "held"],
        help="autoprune's calibrated threshold rule (its rows only)",
    )
    parser.add_argument(
        "--cache", default=os.path.join(ROOT, ".cache", "suite"), help="per-row results"
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        help="run autoprune's rows (autoprune, no_study) beside this many processes that "
        "each keep one core busy: the load-robustness test (their own cache entries)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="autoprune's seed (its rows only; the baselines keep 0): two quiet runs with "
        "different seeds measure the spread that the load test is judged against",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached rows")
    parser.add_argument("--out", help="write every row and the summary as JSON here")
    args = parser.parse_args()

    if args.quick:
        settings = Settings.quick()
    else:
        settings = Settings(
            recoveries=args.recoveries,
            recovery_epochs=args.recovery_epochs,
            recovery_lr=args.recovery_lr,
            trials=args.trials,
        )
    settings = dataclasses.replace(
        settings,
        prior=args.prior,
        threshold=args.threshold,
        space=args.space,
        load=args.load,
        seed=args.seed,
    )
    data = fashion_mnist(args.data_root, limit=settings.limit)
    if settings.limit is not None:  # quick: a tenth of the test set too
        data = dataclasses.replace(data, test=Subset(data.test, range(1000)))
    print(
        f"suite: {settings}; cache {args.cache}; {torch.get_num_threads()} threads, "
        f"{platform.machine()}, torch {torch.__version__}",
        flush=True,
    )
    rows: list[Row] = []
    for arch in args.arch:
        original = load_base(arch, data)
        for task in args.task:
            pair = None
            for name in args.rows:
                cache = os.path.join(args.cache, settings.key(name))
                os.makedirs(cache, exist_ok=True)
                path = os.path.join(cache, f"{arch}.{task}.{name}.json")
                row = None if args.fresh else cached(path)
                if row is None:
                    pair = pair or Task(arch, task, data, original, settings)
                    print(f"[{arch} {task}] {name} ...", flush=True)
                    load = settings.load if name in SEARCHED else 0
                    with logged(path[: -len(".json")] + ".log"), busy(load):
                        row = pair.run(name, lambda m: print(m, flush=True))
                    save(path, row)
                rows.append(row)
                print(
                    f"[{arch} {task}] {name}: {row.value:.3f}x, drop {row.val_drop:+.4f}, "
                    f"{row.recoveries} recoveries, {row.minutes:.1f} min",
                    flush=True,
                )
    line, table = summary(rows)
    for task in args.task:
        print(f"\n{task} (eps={settings.eps:g})")
        print(
            metrics.format_table(
                [asdict(r) for r in rows if r.task == task],
                columns=[
                    "arch",
                    "row",
                    "value",
                    "val_drop",
                    "test_acc",
                    "feasible",
                    "macs",
                    "size",
                    "recoveries",
                    "trials",
                    "minutes",
                    "ratio",
                    "spearman",
                ],
            )
        )
    print()
    print(metrics.format_table(table))
    print(line)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "settings": asdict(settings),
                    "rows": [asdict(r) for r in rows],
                    "summary": line,
                    "pairs": table,
                },
                f,
                indent=2,
            )
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()

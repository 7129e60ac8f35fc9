"""``Compressor``: search per-layer sparsities under an accuracy budget, recover, measure.

    >>> import autoprune as ap
    >>> from autoprune import objectives
    >>> data = ap.load_data("digits")
    >>> model = ap.create_model("mlp", data.num_classes, data.input_shape, hidden=(32,))
    >>> _ = ap.train(model, data.loaders(64).train, epochs=5, seed=0)
    >>> c = ap.Compressor(model, objectives.Minimize(objectives.params), eps=0.05,
    ...                   scheme=ap.Prune(), data=data, n_trials=4, out_dir=None,
    ...                   recovery=ap.FineTune(epochs=1), progress=False)
    >>> result = c.run()
    >>> result.feasible and result.after["nonzero_params"] < result.before["nonzero_params"]
    True

The flow (see ``docs/search.md``):

1. measure the original (validation and test accuracy, size, MACs, speed);
2. a bisection over uniform plans, each recovered for real, calibrates the threshold the
   search's cheap proxy is held to; then an Optuna study proposes per-unit sparsities;
   each candidate is pruned (masked), made physical where the scheme allows, its
   BatchNorm recalibrated, fine-tuned for a few batches, and scored: validation accuracy
   (the constraint ``base - accuracy <= eps``) and the objectives as ratios to the original;
3. the finalists, best first, are recovered (``FineTune`` by default) and checked on the
   validation set; the first within eps is the result, the calibrated uniform plan that
   held eps is the last finalist, then lower sparsities are tried: a model that breaks
   eps is never returned as a success; the plan that held is then refined, its global
   level raised step by step, each step recovered and kept only when it holds eps;
4. the compressed model is measured carefully (timings interleaved with the original).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__, metrics
from .data import Data, Loaders
from .errors import ConfigError
from .models import model_spec
from .objectives import Objective, as_objectives
from .plan import Plan, get_plan
from .recovery import FineTune, Recovery
from .recovery.base import epoch_steps
from .result import CompressionResult
from .schemes import Compose, FilterPrune, Prune, Quantize, Scheme, materialize
from .schemes.base import matches
from .search import (
    SPACES,
    SearchSpace,
    TrialOutcome,
    Unit,
    make_sampler,
    open_study,
    pareto_front,
    ranked,
    requeue_interrupted,
    run_trials,
    samplers,
)
from .sensitivity import Sensitivity, analyze
from .training import evaluate, recalibrate_bn, seed_everything, train

logger = logging.getLogger("autoprune")

AccuracyFn = Callable[[nn.Module, Iterable], float]

DEFAULT_HIGH = {"prune": 0.995, "block_prune": 0.95, "filter_prune": 0.9, "neuron_prune": 0.9}
# the most a sensitivity analysis may open a unit's range to
SENSITIVITY_CAP = {"prune": 0.995, "block_prune": 0.98, "filter_prune": 0.95, "neuron_prune": 0.95}


@dataclass
class Evaluation:
    """How each candidate is scored during the search, and how that score is calibrated.

    A candidate's *proxy accuracy* is its validation accuracy after BatchNorm
    recalibration and a short fine-tune. It underestimates what recovery achieves, more so
    the more is pruned, so comparing it with ``eps`` directly would stop the search far too
    early. With ``calibrate`` (the default), a bisection over uniform sparsity first finds
    the most pruned uniform plan that keeps ``eps`` after ``calibration_epochs`` of real
    fine-tuning. The search's threshold ``tau`` lies halfway between that plan's proxy drop
    and the proxy drop of the next uniform plan, which broke ``eps``: a candidate is feasible
    in the search when it predicts at least as well as plans on the edge of holding
    ``eps``. The best few are then recovered for real (the finalists), and the final model
    is always checked against ``eps`` itself.

    Attributes:
        bn_batches: training batches to recalibrate BatchNorm statistics on.
        finetune_epochs: masked fine-tuning of each candidate, in epochs (at least
            ``min_finetune_steps`` minibatches; 0 for none).
        finetune_lr: learning rate of that fine-tuning (cosine decay).
        val_batches: validation batches to measure accuracy on (None: all).
        calibrate: calibrate the search threshold as described above.
        calibration_epochs: fine-tuning of each calibration plan, in epochs (default: the
            recovery's own when it is :class:`~autoprune.recovery.FineTune`, else 3).
        calibration_steps: bisection steps of the calibration (at most).
        calibration_share: with a ``timeout``, the calibration stops bisecting before it
            would use more than this share of it.
        sensitivity_levels, sensitivity_finetune_steps, sensitivity_val_batches: the
            sensitivity analysis run for ``bounds="sensitivity"``.
        sensitivity_threshold: a unit's upper bound is its largest level whose drop stays
            within this (default ``4 * eps``, within [0.02, 0.2]).
    """

    bn_batches: int = 20
    finetune_epochs: float = 0.25
    min_finetune_steps: int = 10
    finetune_lr: float = 0.02
    val_batches: int | None = None
    calibrate: bool = True
    calibration_epochs: float | None = None
    calibration_steps: int = 5
    calibration_share: float = 0.7
    sensitivity_levels: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    sensitivity_finetune_steps: int = 20
    sensitivity_val_batches: int | None = 5
    sensitivity_threshold: float | None = None

    def __post_init__(self) -> None:
        for name in ("bn_batches", "min_finetune_steps", "calibration_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"evaluation.{name}: expected an integer >= 0, got {v!r}")
        for name in ("finetune_epochs", "calibration_epochs"):
            v = getattr(self, name)
            if v is None and name == "calibration_epochs":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"evaluation.{name}: expected a number >= 0, got {v!r}")
        if self.val_batches is not None and (
            not isinstance(self.val_batches, int) or self.val_batches < 1
        ):
            raise ConfigError(
                f"evaluation.val_batches: expected a positive integer, got {self.val_batches!r}"
            )
        share = self.calibration_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ConfigError(
                f"evaluation.calibration_share: expected a number in (0, 1], got {share!r}"
            )
        if not isinstance(self.finetune_lr, (int, float)) or self.finetune_lr <= 0:
            raise ConfigError(
                f"evaluation.finetune_lr: expected a positive number, got {self.finetune_lr!r}"
            )


def _top1(model: nn.Module, loader: Iterable) -> float:
    return evaluate(model, loader).accuracy


class _Limited:
    """The first ``n`` batches of a loader."""

    def __init__(self, loader: Iterable, n: int | None) -> None:
        self.loader, self.n = loader, n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.n is not None and i >= self.n:
                return
            yield batch

    def __len__(self) -> int:
        total = len(self.loader)  # type: ignore[arg-type]
        return total if self.n is None else min(total, self.n)


class Compressor:
    """Find the most compressed model within ``eps`` of the original's accuracy.

    Args:
        model: the trained model (not changed).
        objective: what to optimise: ``Maximize(throughput)``, ``Minimize(size)``, a
            built-in name (its usual direction), or a list of them (multi-objective).
        eps: the accuracy budget: ``base - accuracy <= eps`` on the validation split
            (``relative=True``: ``(base - accuracy) / base <= eps``).
        scheme: the scheme operator(s) (default ``FilterPrune()``); their sparsities are
            what the search sets.
        data: a :class:`~autoprune.data.Data`, or ``(train, val, test)`` loaders.
        recovery: ``FineTune()`` (default) or ``LC()``.
        metric: ``f(model, loader) -> float`` replacing top-1 accuracy.
        n_trials: completed trials the study should have; ``timeout``: seconds for the
            whole search, sensitivity analysis and calibration included (either or both).
        sampler: ``"tpe"`` (multivariate, default), ``"gp"``, ``"cmaes"`` or ``"random"``.
        space: ``"offsets"`` (default), ``"independent"`` or ``"uniform"`` (see
            :mod:`autoprune.search`).
        bounds: ``(low, high)`` for every unit, or ``{unit or pattern: (low, high)}``.
        warm_start: uniform levels (fractions of each unit's range) tried first.
        evaluation: how candidates are scored (:class:`Evaluation`).
        seed: seeds the sampler, the data order and every training run.
        out_dir: the run directory (the study's SQLite file lives here); None keeps the
            study in memory and writes nothing.
        storage, study_name: any Optuna storage URL, and the study's name; running again
            with the same ones resumes the study.
        max_attempts: plans recovered at most: the best ``max_attempts - 1`` trials, the
            calibrated uniform plan (its model is reused), then lower sparsities.
        refine: after a plan holds eps, steps (at most) that raise its global ``level``
            (see :meth:`_refine`), each recovered for real and kept when it holds; they run
            while the ``timeout`` allows (0: none).
        shape: how the search's global level spreads over units: ``"uniform"`` (the same
            point of every unit's range) or ``"global"`` (as one global magnitude ranking
            would prune them; ``prune`` only). ``"auto"``: global for ``prune``, else
            uniform. Per-unit offsets move away from the shape.
        batch_size: training batch size when ``data`` is a :class:`Data`.
        progress: progress bars and one line per trial on stderr.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Any,
        eps: float,
        *,
        scheme: Scheme | None = None,
        data: Data | Sequence[Iterable] | None = None,
        recovery: Recovery | None = None,
        relative: bool = False,
        metric: AccuracyFn | None = None,
        n_trials: int | None = 30,
        timeout: float | None = None,
        sampler: str = "tpe",
        space: str = "offsets",
        bounds: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
        warm_start: Sequence[float] = (0.25, 0.5, 0.75),
        evaluation: Evaluation | None = None,
        seed: int = 0,
        out_dir: str | os.PathLike | None = "runs/autoprune",
        storage: str | None = None,
        study_name: str = "autoprune",
        max_attempts: int = 4,
        refine: int = 2,
        shape: str = "auto",
        batch_size: int = 128,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.objectives: list[Objective] = as_objectives(objective)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
            raise ConfigError(f"eps: expected a number in [0, 1), got {eps!r}")
        if data is None:
            raise ConfigError(
                "data: pass a Data (e.g. autoprune.load_data('digits')) or "
                "(train, val, test) loaders"
            )
        if not isinstance(data, Data) and not (isinstance(data, (tuple, list)) and len(data) == 3):
            raise ConfigError("data: expected a Data or a (train, val, test) tuple of loaders")
        if scheme is not None and not isinstance(scheme, Scheme):
            raise ConfigError(f"scheme: expected a scheme operator, got {scheme!r}")
        if recovery is not None and not isinstance(recovery, Recovery):
            raise ConfigError(f"recovery: expected LC() or FineTune(), got {recovery!r}")
        if n_trials is None and timeout is None:
            raise ConfigError("n_trials, timeout: give a number of trials, a timeout, or both")
        if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
            raise ConfigError(f"n_trials: expected a positive integer, got {n_trials!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        samplers.get(sampler)
        if space not in SPACES:
            raise ConfigError(f"space: expected one of {', '.join(SPACES)}, got {space!r}")
        for level in warm_start:
            if not isinstance(level, (int, float)) or not 0 <= level <= 1:
                raise ConfigError(f"warm_start: levels must be in [0, 1], got {level!r}")
        if isinstance(bounds, str) and bounds != "sensitivity":
            raise ConfigError(
                f"bounds: expected (low, high), a mapping or 'sensitivity', got {bounds!r}"
            )
        if isinstance(bounds, Mapping):
            for pattern, b in bounds.items():
                _check_bounds(b, f"bounds[{pattern!r}]")
        elif bounds is not None and not isinstance(bounds, (str, Sensitivity)):
            _check_bounds(bounds, "bounds")
        if shape not in ("auto", "uniform", "global"):
            raise ConfigError(f"shape: expected 'auto', 'uniform' or 'global', got {shape!r}")
        if shape == "auto":  # global ranking is the strong prior for unstructured pruning
            shape = "global" if _layer_prune(scheme) is not None else "uniform"
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts: expected a positive integer, got {max_attempts!r}")
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ConfigError(f"refine: expected an integer >= 0, got {refine!r}")
        self.model = model
        self.eps = float(eps)
        self.scheme = scheme if scheme is not None else FilterPrune()
        self.data = data
        self.recovery = recovery if recovery is not None else FineTune()
        self.relative = bool(relative)
        self.metric = metric or _top1
        self.n_trials = n_trials
        self.timeout = timeout
        self.sampler = sampler
        self.space = space
        self.bounds = bounds
        self.warm_start = tuple(float(w) for w in warm_start)
        self.evaluation = evaluation or Evaluation()
        self.seed = int(seed)
        self.out_dir = os.fspath(out_dir) if out_dir is not None else None
        self.storage = storage
        self.study_name = study_name
        self.max_attempts = max_attempts
        self.refine = refine
        self.shape = shape
        self.batch_size = batch_size
        self.progress = progress

    # -- helpers ------------------------------------------------------------------------
    @property
    def _sensitivity_bounds(self) -> bool:
        return isinstance(self.bounds, Sensitivity) or self.bounds == "sensitivity"

    def log(self, message: str) -> None:
        logger.info(message)
        if self.progress and not logger.handlers:
            tqdm.write(message, file=sys.stderr)

    def _loaders(self) -> Loaders:
        if isinstance(self.data, Data):
            return self.data.loaders(batch_size=self.batch_size, seed=self.seed)
        train_l, val_l, test_l = self.data
        return Loaders(train_l, val_l, test_l)

    def _example_input(self, loaders: Loaders, device: torch.device) -> torch.Tensor:
        if isinstance(self.data, Data):
            return self.data.example_input(1).to(device)
        x, _ = next(iter(loaders.val))
        return x[:1].to(device)

    def _drop(self, base: float, acc: float) -> float:
        drop = base - acc
        return drop / base if self.relative and base else drop

    def _storage_url(self) -> str | None:
        if self.storage is not None:
            return self.storage
        if self.out_dir is None:
            return None
        os.makedirs(self.out_dir, exist_ok=True)
        return f"sqlite:///{os.path.abspath(os.path.join(self.out_dir, 'study.db'))}"

    def _units(self, original: nn.Module, x: torch.Tensor) -> list[Unit]:
        sizes = self.scheme.units(copy.deepcopy(original), x)
        units = []
        for name, size in sizes.items():
            op = name.split(":", 1)[0] if isinstance(self.scheme, Compose) else self.scheme.op
            low, high = 0.0, DEFAULT_HIGH.get(op, 0.9)
            if isinstance(self.bounds, Mapping):
                bare = name.split(":", 1)[-1]
                for pattern, b in self.bounds.items():
                    if matches(name, [pattern]) or matches(bare, [pattern]):
                        low, high = _check_bounds(b, f"bounds[{pattern!r}]")
            elif self.bounds is not None and not self._sensitivity_bounds:
                low, high = _check_bounds(self.bounds, "bounds")
            units.append(Unit(name, int(size), low, high))
        return units

    def _setup(self, units: list[Unit], data_name: str) -> dict[str, Any]:
        return {
            "scheme": repr(self.scheme),
            "units": [(u.name, u.size, u.low, u.high) for u in units],
            "objectives": [(o.name, o.direction) for o in self.objectives],
            "eps": self.eps,
            "relative": self.relative,
            "space": self.space,
            "shape": self.shape,
            "bounds": self._bounds_setting(),
            "evaluation": asdict(self.evaluation),
            "data": data_name,
            "seed": self.seed,
        }

    def _bounds_setting(self) -> Any:
        if isinstance(self.bounds, Sensitivity):
            return "sensitivity (given)"
        if isinstance(self.bounds, Mapping):
            return {k: list(v) for k, v in self.bounds.items()}
        return list(self.bounds) if isinstance(self.bounds, tuple) else self.bounds

    # -- candidates ---------------------------------------------------------------------
    def _candidate(
        self, original: nn.Module, scheme: Scheme, x: torch.Tensor
    ) -> tuple[nn.Module, Plan, bool]:
        cand = copy.deepcopy(original)
        scheme.apply(cand, x)
        made = materialize(cand, x)
        model = made.model if made.physical else cand
        return model, get_plan(model), made.physical

    def _evaluate(self, sparsities: dict[str, float], ctx: dict[str, Any]) -> TrialOutcome:
        key = _key(sparsities)
        if key in ctx["cache"]:  # a calibration plan, enqueued as a warm start
            out = ctx["cache"][key]
            return TrialOutcome(
                out.values, out.accuracy, out.drop, out.drop <= ctx["tau"], out.attrs
            )
        out = self._score(sparsities, ctx)
        ctx["cache"][key] = out
        return out

    def _score(self, sparsities: dict[str, float], ctx: dict[str, Any]) -> TrialOutcome:
        t0 = time.perf_counter()
        original, x, loaders = ctx["original"], ctx["x"], ctx["loaders"]
        scheme = self.scheme.with_sparsities(sparsities)
        model, plan, physical = self._candidate(original, scheme, x)
        t_apply = time.perf_counter()
        ev = self.evaluation
        recalibrate_bn(model, loaders.train, ev.bn_batches)
        if ev.finetune_epochs > 0:
            steps = max(ev.min_finetune_steps, epoch_steps(loaders, ev.finetune_epochs))
            train(
                model,
                loaders.train,
                max_steps=steps,
                lr=ev.finetune_lr,
                seed=self.seed,
                desc="candidate",
            )
            if scheme.finalize(model, x):
                recalibrate_bn(model, loaders.train, ev.bn_batches)
        t_tune = time.perf_counter()
        acc = float(self.metric(model, _Limited(loaders.val, ev.val_batches)))
        drop = self._drop(ctx["base_search"], acc)
        t_acc = time.perf_counter()
        values = [
            o.metric.ratio(model, original, x, ctx["reference"].get(o.name))
            for o in self.objectives
        ]
        t_obj = time.perf_counter()
        achieved = plan.sparsities()
        return TrialOutcome(
            values=values,
            accuracy=acc,
            drop=drop,
            feasible=drop <= ctx["tau"],
            attrs={
                "achieved": achieved,
                "physical": physical,
                "objectives": {o.name: v for o, v in zip(self.objectives, values)},
                "seconds": t_obj - t0,
                "timings": {
                    "apply": t_apply - t0,
                    "tune": t_tune - t_apply,
                    "accuracy": t_acc - t_tune,
                    "objective": t_obj - t_acc,
                },
            },
        )

    def _prepare(self, units: list[Unit], ctx: dict[str, Any], phases: dict[str, float]) -> dict:
        """Per-unit bounds (from sensitivity, if asked), then the calibrated threshold.

        The result is stored with the study, so a resumed study searches the same space.
        """
        prep: dict[str, Any] = {}
        ev = self.evaluation
        if self._sensitivity_bounds:
            t = time.perf_counter()
            sens = self.bounds if isinstance(self.bounds, Sensitivity) else self._sensitivity(ctx)
            threshold = ev.sensitivity_threshold or min(0.2, max(0.02, 4 * self.eps))
            new_units = []
            for u in units:
                op = u.name.split(":", 1)[0] if isinstance(self.scheme, Compose) else self.scheme.op
                b = sens.bounds(threshold, cap=SENSITIVITY_CAP.get(op, 0.9)).get(u.name)
                new_units.append(Unit(u.name, u.size, u.low, max(u.low, b[1]) if b else u.high))
            units = new_units
            self.log(
                f"bounds from sensitivity (drop <= {threshold:g}): "
                + ", ".join(f"{u.name} {u.high:.2f}" for u in units)
            )
            prep["sensitivity"] = sens.to_dict()
            phases["sensitivity"] = time.perf_counter() - t
        shape = self._global_shape(units, ctx) if self.shape == "global" else None
        if shape:
            prep["shape"] = shape
        space = SearchSpace(units, self.space, shape=shape)
        best = None
        if ev.calibrate and ev.calibration_steps:
            t = time.perf_counter()
            tau, warm, records, best = self._calibrate(space, ctx)
            phases["calibration"] = time.perf_counter() - t
        else:
            tau, warm, records = self.eps, list(self.warm_start), []
        level_range = [0.0, 1.0]
        if best is not None and self.space != "independent":
            # search near the edge the calibration found: from a little below the held
            # plan to just past the first uniform plan above it that broke eps
            broken = _first_broken_above(records, best)
            top = broken["level"] + 0.05 if broken else best + 0.3
            level_range = [round(max(0.0, best - 0.15), 6), round(min(1.0, top), 6)]
        prep.update(
            units=[asdict(u) for u in units],
            tau=tau,
            warm=warm,
            level_range=level_range,
            calibration=records,
        )
        return prep

    def _global_shape(self, units: list[Unit], ctx: dict[str, Any]) -> dict[str, list[float]]:
        """Per-unit positions that follow one global magnitude ranking, per level.

        At level ``l`` the weights of all units are ranked together and the smallest
        ``l * max(high)`` of them removed; each unit's resulting sparsity, as a position in
        its range, is its shape value. Big layers with many small weights are pruned
        harder than small ones, as global magnitude pruning does.
        """
        if _layer_prune(self.scheme) is None:
            return {}
        model = ctx["original"]
        mags = {
            u.name: model.get_submodule(u.name.split(":", 1)[-1])  # "prune:layer" in a Compose
            .weight.detach()
            .abs()
            .flatten()
            for u in units
        }
        everything = torch.cat(list(mags.values())).sort().values
        top = max(u.high for u in units)
        shape: dict[str, list[float]] = {u.name: [] for u in units}
        for k in range(21):
            target = k / 20 * top
            n = int(round(target * everything.numel()))
            threshold = everything[n - 1] if n > 0 else -1.0
            for u in units:
                s = float((mags[u.name] <= threshold).float().mean())
                pos = (s - u.low) / (u.high - u.low) if u.high > u.low else 0.0
                shape[u.name].append(round(min(1.0, max(0.0, pos)), 6))
        return shape

    def _sensitivity(self, ctx: dict[str, Any]) -> Sensitivity:
        ev = self.evaluation
        levels = ", ".join(f"{lv:g}" for lv in ev.sensitivity_levels)
        self.log(f"sensitivity analysis at levels {levels}")
        return analyze(
            ctx["original"],
            self.scheme,
            ctx["loaders"],
            ctx["x"],
            levels=ev.sensitivity_levels,
            bn_batches=ev.bn_batches,
            finetune_steps=ev.sensitivity_finetune_steps,
            finetune_lr=ev.finetune_lr,
            val_batches=ev.sensitivity_val_batches,
            metric=self.metric,
            seed=self.seed,
            progress=self.progress,
            log=self.log,
        )

    def _calibration_recovery(self) -> Recovery:
        """The recovery that judges calibration plans: the real one when it is a
        fine-tune (its models can then be reused), else a fine-tune of similar cost."""
        ev = self.evaluation
        if isinstance(self.recovery, FineTune) and ev.calibration_epochs is None:
            return self.recovery
        epochs = 3.0 if ev.calibration_epochs is None else ev.calibration_epochs
        return FineTune(epochs=epochs, lr=ev.finetune_lr, bn_batches=ev.bn_batches)

    def _calibrate(
        self, space: SearchSpace, ctx: dict[str, Any]
    ) -> tuple[float, list[float], list[dict], float | None]:
        """Bisect uniform plans with real fine-tuning.

        Returns the threshold tau, the levels tried, their records, and the most pruned
        level that held eps (None if none did).
        """
        ev = self.evaluation
        original, x, loaders = ctx["original"], ctx["x"], ctx["loaders"]
        cheap = self._calibration_recovery()
        # a trained network practically always keeps its accuracy, after fine-tuning, with
        # three quarters of its weights pruned (half its blocks): the bisection starts there
        ops = (
            [u.name.split(":", 1)[0] for u in space.units]
            if isinstance(self.scheme, Compose)
            else [self.scheme.op]
        )
        lo = 0.0
        if all(op in ("prune", "block_prune") for op in ops):
            lo = 0.75 if all(op == "prune" for op in ops) else 0.5
        hi = 1.0
        best: tuple[float, float] | None = None
        levels, records = [], []
        budget = None if self.timeout is None else ev.calibration_share * self.timeout
        for k in range(ev.calibration_steps):
            if budget is not None and records:
                spent = time.perf_counter() - ctx["t_search"]
                if spent + records[-1]["seconds"] > budget:
                    self.log(
                        f"calibration: stopping after {k} step(s); another would pass "
                        f"{ev.calibration_share:g} of the timeout"
                    )
                    break
            t_step = time.perf_counter()
            mid = round((lo + hi) / 2, 6)
            sparsities = space.from_params(space.uniform_params(mid))
            proxy = self._evaluate(sparsities, ctx)
            t_rec = time.perf_counter()
            model = cheap.recover(
                original, self.scheme.with_sparsities(sparsities), loaders, x, seed=self.seed
            )
            t_rec = time.perf_counter() - t_rec
            acc = float(self.metric(model, loaders.val))
            drop = self._drop(ctx["base"], acc)
            ok = drop <= self.eps
            if ok and cheap is self.recovery:  # the real recovery: keep it for step 3
                ctx["recovered"][_key(sparsities)] = model
            mean = sum(sparsities.values()) / len(sparsities)
            self.log(
                f"calibration {k + 1}/{ev.calibration_steps}: uniform level {mid:.3f} "
                f"(mean sparsity {mean:.3f}): proxy drop {proxy.drop:+.4f}, after "
                f"{getattr(cheap, 'epochs', 0):g} epoch(s) of fine-tuning drop {drop:+.4f}: "
                f"{'holds' if ok else 'breaks'} eps"
            )
            levels.append(mid)
            records.append(
                {
                    "level": mid,
                    "mean_sparsity": mean,
                    "proxy_drop": proxy.drop,
                    "finetuned_drop": drop,
                    "holds": ok,
                    "recovery_seconds": t_rec,
                    "seconds": time.perf_counter() - t_step,
                }
            )
            if ok:
                lo, best = mid, (mid, proxy.drop)
            else:
                hi = mid
        if best is None:
            self.log("calibration: no uniform plan held eps; the search threshold stays at eps")
            return self.eps, levels, records, None
        # halfway to the first uniform plan above it that broke eps: plans that predict as
        # well as those on the edge are searched, and the finalists are recovered for real
        broken = _first_broken_above(records, best[0])
        edge = broken["proxy_drop"] if broken else best[1]
        tau = max(self.eps, best[1] + max(0.0, edge - best[1]) / 2)
        self.log(
            f"calibration: search threshold tau = {tau:.4f} (the uniform plan at level "
            f"{best[0]:.3f} holds eps with proxy drop {best[1]:.4f}"
            + (f"; the next above it broke eps at {edge:.4f})" if broken else ")")
        )
        return tau, levels, records, best[0]

    def _recover(
        self,
        sparsities: dict[str, float],
        ctx: dict[str, Any],
        notes: list[str],
        model: nn.Module | None = None,
    ) -> tuple[nn.Module, float, float]:
        """Recover a plan (unless its recovered ``model`` is given), make it physical where
        the scheme allows, and check it: returns ``(model, val accuracy, drop)``."""
        original, x, loaders = ctx["original"], ctx["x"], ctx["loaders"]
        if model is None:
            t = time.perf_counter()
            model = self.recovery.recover(
                original,
                self.scheme.with_sparsities(sparsities),
                loaders,
                x,
                seed=self.seed,
                progress=self.progress,
                log=self.log,
            )
            ctx.setdefault("recovery_seconds", []).append(time.perf_counter() - t)
        made = materialize(model, x)
        if made.physical:
            model = made.model
        elif get_plan(model).groups and made.reason:
            note = f"kept the masked model: {made.reason}"
            if note not in notes:
                notes.append(note)
        acc = float(self.metric(model, loaders.val))
        return model, acc, self._drop(ctx["base"], acc)

    def _recovery_estimate(self, ctx: dict[str, Any]) -> float:
        """Seconds one recovery takes: the mean of the recoveries timed so far in this run,
        else of the calibration's (a fine-tune of similar cost when the recovery is not
        one); 0 when nothing was timed."""
        spent = list(ctx.get("recovery_seconds", []))
        if not spent:
            calibration = ctx.get("calibration", [])
            spent = [r["recovery_seconds"] for r in calibration if "recovery_seconds" in r]
        return sum(spent) / len(spent) if spent else 0.0

    @property
    def _refining(self) -> bool:
        """Whether a plan that holds is refined: ``refine`` steps, and a global level to
        raise (every space but ``"independent"``)."""
        return bool(self.refine) and self.space != "independent"

    def _fits(self, ctx: dict[str, Any], deadline: float | None, recoveries: int = 1) -> bool:
        """Whether ``recoveries`` more recoveries fit before ``deadline`` (None: no limit)."""
        if deadline is None:
            return True
        return time.perf_counter() + recoveries * self._recovery_estimate(ctx) <= deadline

    def _refine(
        self,
        params: dict[str, float],
        space: SearchSpace,
        ctx: dict[str, Any],
        deadline: float | None,
        records: list[dict[str, Any]],
    ) -> tuple[nn.Module, float] | None:
        """Raise the chosen plan's global ``level``, offsets kept, each step recovered for
        real. With a level above it known to break eps (a calibration plan or an earlier
        step), bisect towards it; without one, step a quarter of the way to the top of the
        searched range (the drop grows steeply near the top, so a step halfway there
        easily overshoots). Returns the recovered model of the highest level that held,
        and its val accuracy, if one did."""
        lo = float(params["level"])
        broken = [r["level"] for r in ctx.get("calibration", []) if not r["holds"]]
        above = [level for level in broken if level > lo]
        hi = min(above) if above else None
        top = max(space.level_range[1], min(1.0, lo + 0.1))
        best = None
        for k in range(self.refine):
            mid = round((lo + hi) / 2 if hi is not None else lo + (top - lo) / 4, 6)
            if mid - lo < 1e-3:
                break
            if not self._fits(ctx, deadline):
                self.log(
                    f"refine: stopped after {k} step(s); another recovery (about "
                    f"{self._recovery_estimate(ctx):.0f} s) would pass the timeout"
                )
                break
            sparsities = space.from_params({**params, "level": mid})
            t = time.perf_counter()
            model, acc, drop = self._recover(sparsities, ctx, [])
            ok = drop <= self.eps
            mean = sum(sparsities.values()) / len(sparsities)
            records.append(
                {
                    "level": mid,
                    "mean_sparsity": mean,
                    "val_accuracy": acc,
                    "drop": drop,
                    "holds": ok,
                    "seconds": time.perf_counter() - t,
                }
            )
            self.log(
                f"refine {k + 1}/{self.refine}: level {mid:.4f} (mean sparsity {mean:.3f}): "
                f"val {acc:.4f} (drop {drop:+.4f}): {'holds' if ok else 'breaks'} eps"
            )
            if ok:
                lo, best = mid, (model, acc)
            else:
                hi = mid
        return best

    def _reserve(self, ctx: dict[str, Any]) -> float:
        """Seconds to keep for recovering a finalist and, with ``refine``, one refinement
        step (:meth:`_recovery_estimate` each; at most 35% of the timeout). When the
        calibrated plan's model is at hand to fall back on, further finalists are recovered
        only while they and a refinement step fit."""
        if self.timeout is None:
            return 0.0
        estimate = self._recovery_estimate(ctx)
        return min(0.35 * self.timeout, estimate * (2 if self._refining else 1))

    def _remeasure(self, order: list, ctx: dict[str, Any], top: int = 5) -> list:
        """Re-time the best few trials carefully when the objective is a timing.

        A handful of interleaved rounds per trial is enough to steer the search, but the
        best of many noisy measurements is biased upwards; the leaders are measured again
        with many rounds and re-ordered before one is recovered.
        """
        if len(self.objectives) != 1 or self.objectives[0].metric.deterministic or len(order) < 2:
            return order
        obj = self.objectives[0]
        original, x = ctx["original"], ctx["x"]
        # the calibrated uniform plan is known to hold eps after real recovery: it is always
        # among those re-measured, so a noisy search cannot end below it
        held = {r["level"] for r in ctx.get("calibration", []) if r.get("holds")}
        anchors = [tr for tr in order[top:] if tr.user_attrs.get("warm_start") in held and held]
        order = order[:top] + anchors + [tr for tr in order[top:] if tr not in anchors]
        top += len(anchors)
        careful = {}
        for tr in order[:top]:
            scheme = self.scheme.with_sparsities(tr.user_attrs["sparsities"])
            model, _, _ = self._candidate(original, scheme, x)
            careful[tr.number] = obj.metric.ratio(model, original, x, careful=True)
        sign = 1.0 if obj.direction == "maximize" else -1.0
        leaders = sorted(order[:top], key=lambda tr: -sign * careful[tr.number])
        self.log(
            f"re-measured the {len(leaders)} best trials carefully: "
            + ", ".join(f"trial {tr.number} {careful[tr.number]:.3g}x" for tr in leaders)
        )
        return leaders + order[top:]

    def _describe(self, trial: optuna.trial.FrozenTrial) -> str:
        a = trial.user_attrs
        if "accuracy" not in a:
            return f"trial {trial.number}: {trial.state.name.lower()}"
        sp = list(a.get("sparsities", {}).values())
        mean = sum(sp) / len(sp) if sp else 0.0
        objs = ", ".join(f"{k} {v:.3g}x" for k, v in a.get("objectives", {}).items())
        tag = "feasible" if a.get("feasible") else "infeasible"
        warm = " (warm start)" if "warm_start" in a else ""
        return (
            f"trial {trial.number:3d}{warm}: sparsity mean {mean:.2f} "
            f"[{min(sp, default=0):.2f}-{max(sp, default=0):.2f}] | "
            f"val {a['accuracy']:.4f} (drop {a['drop']:+.4f}) | {objs} | {tag} | "
            f"{a.get('seconds', 0):.1f} s"
        )

    # -- measuring ----------------------------------------------------------------------
    def _measure(self, model: nn.Module, loaders: Loaders, x: torch.Tensor) -> dict[str, float]:
        s = metrics.summarize(model, x)
        return {
            "val_accuracy": float(self.metric(model, loaders.val)),
            "test_accuracy": float(self.metric(model, loaders.test)),
            "params": float(s.params),
            "nonzero_params": float(s.nonzero_params),
            "macs": float(s.macs),
            "dense_bytes": float(s.dense_bytes),
            "sparse_bytes": float(s.sparse_bytes),
            "sparse_bytes_fp16": float(s.sparse_bytes_fp16),
        }

    def _speed(
        self, original: nn.Module, model: nn.Module, x: torch.Tensor, before: dict, after: dict
    ) -> None:
        thr = metrics.compare_speed(original, model, x, batch_size=64, rounds=20, warmup=5)
        lat = metrics.compare_speed(
            original, model, x[:1], batch_size=1, rounds=20, warmup=5, inner=5
        )
        before["throughput"] = thr.reference.images_per_s
        after["throughput"] = thr.candidate.images_per_s
        before["latency_ms"] = lat.reference.latency_ms
        after["latency_ms"] = lat.candidate.latency_ms
        after["speedup"] = thr.speedup
        after["latency_speedup"] = lat.speedup

    # -- the run ------------------------------------------------------------------------
    def run(self) -> CompressionResult:
        """Search, recover and measure; returns a :class:`~autoprune.result.CompressionResult`."""
        phases: dict[str, float] = {}
        notes: list[str] = []
        start = time.perf_counter()
        seed_everything(self.seed)
        loaders = self._loaders()
        device = next(self.model.parameters()).device
        x = self._example_input(loaders, device)
        original = copy.deepcopy(self.model).eval()
        data_name = self.data.name if isinstance(self.data, Data) else "loaders"

        # 1. the original
        before = self._measure(original, loaders, x)
        base = before["val_accuracy"]
        base_search = float(
            self.metric(original, _Limited(loaders.val, self.evaluation.val_batches))
        )
        reference = {
            o.name: o.metric(original, x) for o in self.objectives if o.metric.deterministic
        }
        phases["baseline"] = time.perf_counter() - start
        self.log(
            f"original: val {base:.4f}, test {before['test_accuracy']:.4f}, "
            f"{int(before['params'])} params, {int(before['macs'])} MACs; eps {self.eps:g}"
            f"{' (relative)' if self.relative else ''}"
        )

        # 2. the search
        t = time.perf_counter()
        units = self._units(original, x)
        storage = self._storage_url()
        directions = [o.direction for o in self.objectives]
        sampler = make_sampler(self.sampler, self.seed, len(units))
        setup = self._setup(units, data_name)
        study, resumed = open_study(storage, self.study_name, directions, sampler, setup)
        if resumed:
            again = requeue_interrupted(study)
            done = sum(1 for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE)
            self.log(
                f"resuming study {self.study_name!r}: {done} trials complete"
                + (f", {again} interrupted trial(s) to run again" if again else "")
            )
        ctx = {
            "original": original,
            "x": x,
            "loaders": loaders,
            "base_search": base_search,
            "base": base,
            "reference": reference,
            "cache": {},
            "recovered": {},
            "tau": self.eps,
            "t_search": t,
        }
        prep = study.user_attrs.get("prepared")
        if prep is None:
            prep = self._prepare(units, ctx, phases)
            study.set_user_attr("prepared", prep)
        units = [Unit(**u) for u in prep["units"]]
        space = SearchSpace(
            units, self.space, level_range=tuple(prep["level_range"]), shape=prep.get("shape")
        )
        ctx["tau"] = float(prep["tau"])
        ctx["calibration"] = prep.get("calibration", [])
        wanted = ", ".join(f"{o.direction} {o.metric.describe()}" for o in self.objectives)
        self.log(
            f"search: {len(units)} units ({self.space} space, level in "
            f"[{space.level_range[0]:.2f}, {space.level_range[1]:.2f}], {self.sampler} sampler), "
            f"objective {wanted}; feasible when the proxy drop is <= {ctx['tau']:.4f}"
        )
        timeout = None
        if self.timeout is not None:
            # the budget covers sensitivity, calibration and the finalists' recovery too
            timeout = max(1.0, self.timeout - (time.perf_counter() - t) - self._reserve(ctx))
        run_trials(
            study,
            space,
            lambda sp: self._evaluate(sp, ctx),
            n_trials=self.n_trials,
            timeout=timeout,
            eps=ctx["tau"],
            directions=directions,
            sampler_name=self.sampler,
            warm_start=prep["warm"],
            progress=self.progress,
            log=self.log,
            describe=self._describe,
        )
        phases["search"] = time.perf_counter() - t

        # 3. recovery, backing off while eps is broken
        t = time.perf_counter()
        order = self._remeasure(ranked(study, directions), ctx)
        attempts: list[tuple[str, int | None, dict[str, float]]] = []
        # the finalists: the best plans, down to the calibrated uniform plan when its
        # recovered model is at hand (it holds eps, so nothing ranked below it is tried)
        fallback = False
        # with a timing objective, the most pruned calibration plan that held dominates the
        # others that held (the same shape, pruned less): noise must not rank one above it
        noisy = any(not o.metric.deterministic for o in self.objectives)
        held = max(ctx["recovered"], key=lambda k: sum(v for _, v in k), default=None)
        for tr in order:
            sparsities = tr.user_attrs["sparsities"]
            fallback = _key(sparsities) in ctx["recovered"]
            if noisy and fallback and _key(sparsities) != held:
                fallback = False
                continue
            if fallback or len(attempts) < max(1, self.max_attempts - 1):
                attempts.append((f"trial {tr.number}", tr.number, sparsities))
            if fallback:
                break
        if order:
            best = order[0].user_attrs["sparsities"]
            for factor in (0.8, 0.6):
                attempts.append(
                    (
                        f"trial {order[0].number} at {factor:g}x its sparsity",
                        None,
                        {k: round(v * factor, 6) for k, v in best.items()},
                    )
                )
        else:
            notes.append(
                "no candidate of the search kept accuracy within eps; try more trials, "
                "narrower bounds or a larger eps"
            )
        compressed, chosen, feasible, after_val = None, None, False, None
        tried = 0
        deadline = None if self.timeout is None else ctx["t_search"] + self.timeout
        for label, number, sparsities in attempts:
            model = ctx["recovered"].get(_key(sparsities))
            if model is not None:
                self.log(f"{label} was recovered during calibration; reusing that model")
            elif tried >= self.max_attempts:
                continue
            elif tried and fallback and not self._fits(ctx, deadline, 2 if self._refining else 1):
                # a plan that holds is at hand: the time left goes to refining it
                self.log(
                    f"{label} is not recovered: the time left is less than about "
                    f"{2 if self._refining else 1} recoveries' worth "
                    f"({self._recovery_estimate(ctx):.0f} s each)"
                )
                continue
            else:
                tried += 1
                self.log(f"recovery ({self.recovery.name}) of {label}")
            model, acc, drop = self._recover(sparsities, ctx, notes, model)
            if drop <= self.eps:
                compressed, chosen, feasible, after_val = model, number, True, acc
                self.log(f"recovered {label}: val {acc:.4f} (drop {drop:+.4f}) within eps")
                break
            notes.append(
                f"{label}: recovered val accuracy {acc:.4f} breaks eps "
                f"(drop {drop:.4f} > {self.eps:g}); backing off"
            )
            self.log(notes[-1])
        if compressed is None:
            if attempts:
                notes.append("no plan kept accuracy within eps after recovery")
            notes.append("the original model is returned, uncompressed (not feasible)")
            self.log(notes[-2] + "; " + notes[-1])
            compressed = copy.deepcopy(original)
        phases["recovery"] = time.perf_counter() - t

        # 3b. refinement: push the held plan's level up while eps holds and time allows
        refinement: list[dict[str, Any]] = []
        if feasible and chosen is not None and self._refining:
            t = time.perf_counter()
            better = self._refine(study.trials[chosen].params, space, ctx, deadline, refinement)
            if better is not None:
                compressed, after_val = better
                last = max((r for r in refinement if r["holds"]), key=lambda r: r["level"])
                notes.append(
                    f"refined trial {chosen}: its level raised from "
                    f"{study.trials[chosen].params['level']:.4f} to {last['level']:.4f} "
                    f"(recovered val drop {last['drop']:+.4f})"
                )
            phases["refine"] = time.perf_counter() - t

        # 4. careful measurement
        t = time.perf_counter()
        after = self._measure(compressed, loaders, x)
        if after_val is not None:
            after["val_accuracy"] = after_val
        self._speed(original, compressed, x, before, after)
        final = {
            o.name: o.metric.ratio(compressed, original, x, reference.get(o.name), careful=True)
            for o in self.objectives
        }
        phases["measure"] = time.perf_counter() - t
        phases["total"] = time.perf_counter() - start
        trials = [_trial_row(tr) for tr in study.trials]
        front = pareto_front([tr for tr in order], directions) if len(directions) > 1 else []
        result = CompressionResult(
            model=compressed,
            plan=get_plan(compressed),
            feasible=feasible,
            before=before,
            after=after,
            objectives=final,
            study=study,
            chosen_trial=chosen,
            pareto=[tr.number for tr in front],
            phases=phases,
            notes=notes,
            settings=self._settings(units, storage, data_name, x, study)
            | {"refinement": refinement},
            trials=trials,
        )
        if self.out_dir is not None:
            result.save(self.out_dir)
        self.log(
            f"done in {phases['total']:.0f} s: "
            + ", ".join(f"{k} {v:.3g}x" for k, v in final.items())
        )
        return result

    def _settings(self, units, storage, data_name, x, study) -> dict[str, Any]:
        return {
            "autoprune": __version__,
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "device": str(x.device),
            "model_spec": model_spec(self.model),
            "input_shape": list(x.shape[1:]),
            "data": data_name,
            "scheme": self.scheme.config() | {"op": self.scheme.op},
            "recovery": {"name": self.recovery.name, **_plain(self.recovery.config())},
            "objectives": [
                {
                    "name": o.name,
                    "direction": o.direction,
                    "measured": o.metric.describe(),
                    "search": "measured ratio, few rounds"
                    if not o.metric.deterministic
                    else "exact",
                }
                for o in self.objectives
            ],
            "eps": self.eps,
            "relative": self.relative,
            "sampler": self.sampler,
            "space": self.space,
            "shape": self.shape,
            "bounds": self._bounds_setting(),
            "units": [asdict(u) for u in units],
            "n_trials": self.n_trials,
            "timeout": self.timeout,
            "seed": self.seed,
            "evaluation": asdict(self.evaluation),
            "tau": float(study.user_attrs.get("prepared", {}).get("tau", self.eps)),
            "level_range": study.user_attrs.get("prepared", {}).get("level_range"),
            "calibration": study.user_attrs.get("prepared", {}).get("calibration", []),
            "sensitivity": study.user_attrs.get("prepared", {}).get("sensitivity"),
            "storage": storage,
            "study_name": study.study_name,
        }


def _layer_prune(scheme: Scheme | None) -> Prune | None:
    """The scheme's per-layer unstructured pruning when that is all it searches (alone, or
    composed with operators that have nothing to search, such as ``quantize``)."""
    if isinstance(scheme, Compose):
        searched = [s for s in scheme.schemes if not isinstance(s, Quantize)]
        scheme = searched[0] if len(searched) == 1 else None
    return scheme if isinstance(scheme, Prune) and scheme.scope == "layer" else None


def _key(sparsities: Mapping[str, float]) -> tuple:
    """A plan's per-unit sparsities as a hashable key."""
    return tuple(sorted(sparsities.items()))


def _first_broken_above(records: list[dict], level: float) -> dict | None:
    """The calibration record of the lowest level above ``level`` that broke eps."""
    above = [r for r in records if not r["holds"] and r["level"] > level]
    return min(above, key=lambda r: r["level"]) if above else None


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _check_bounds(value: Any, param: str) -> tuple[float, float]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(f"{param}: expected (low, high), got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (0.0 <= low <= high < 1.0) or math.isnan(low + high):
        raise ConfigError(f"{param}: expected 0 <= low <= high < 1, got ({low:g}, {high:g})")
    return low, high


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    a = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "feasible": a.get("feasible"),
        "accuracy": a.get("accuracy"),
        "drop": a.get("drop"),
        "seconds": a.get("seconds"),
        "objectives": a.get("objectives", {}),
        "sparsities": a.get("sparsities", {}),
        "physical": a.get("physical"),
        "warm_start": a.get("warm_start"),
    }

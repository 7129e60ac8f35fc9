"""The Optuna study: search space, sampler, accuracy constraint, storage and resume.

A trial proposes one sparsity per prunable unit (a layer, or a coupled channel group for
structured schemes). Three parameterisations are available:

* ``"offsets"`` (default): one global ``level`` in [0, 1] plus a per-unit ``offset`` in
  ``[-width, width]``; unit ``i`` gets ``low_i + clip(level + offset_i, 0, 1) *
  (high_i - low_i)``. The sampler finds the right overall level quickly and then shifts
  sparsity between units.
* ``"independent"``: one sparsity per unit in ``[low_i, high_i]``.
* ``"uniform"``: the level alone (every unit at the same point of its range).

The study is seeded; its trials persist in the storage (an Optuna URL, by default a SQLite
file in the run directory) and a study run again with the same name resumes: completed
trials are kept, trials a crash left running are run again, and the budget ``n_trials``
counts completed trials.

    >>> space = SearchSpace([Unit("conv1", 16, 0.0, 0.8), Unit("conv2", 32, 0.0, 0.8)])
    >>> space.from_params(space.uniform_params(0.5))
    {'conv1': 0.4, 'conv2': 0.4}
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from .errors import ConfigError
from .registry import Registry

SPACES = ("offsets", "independent", "uniform")
samplers = Registry("sampler")


@dataclass
class Unit:
    """One searched sparsity: a layer or coupled group, its size and its range."""

    name: str
    size: int
    low: float = 0.0
    high: float = 0.9


class SearchSpace:
    """Maps Optuna parameters to per-unit sparsities (see the module docstring)."""

    def __init__(
        self,
        units: Sequence[Unit],
        mode: str = "offsets",
        width: float = 0.35,
        level_range: tuple[float, float] = (0.0, 1.0),
        shape: dict[str, list[float]] | None = None,
    ) -> None:
        if mode not in SPACES:
            raise ConfigError(f"search.space: expected one of {', '.join(SPACES)}, got {mode!r}")
        if not units:
            raise ConfigError("search: the scheme has no prunable unit in this model")
        for u in units:
            if not 0.0 <= u.low <= u.high < 1.0:
                raise ConfigError(
                    f"search.bounds[{u.name!r}]: expected 0 <= low <= high < 1, got "
                    f"({u.low:g}, {u.high:g})"
                )
        self.units = list(units)
        self.mode = mode
        self.width = float(width)
        self.level_range = (float(level_range[0]), float(level_range[1]))
        self.shape = dict(shape or {})

    def _key(self, i: int) -> str:
        return f"offset_{i:03d}" if self.mode == "offsets" else f"s_{i:03d}"

    def suggest(self, trial: optuna.Trial) -> dict[str, float]:
        """Ask the trial for its parameters; return the per-unit sparsities."""
        params: dict[str, float] = {}
        if self.mode in ("offsets", "uniform"):
            params["level"] = trial.suggest_float("level", *self.level_range)
        if self.mode == "offsets":
            for i, _ in enumerate(self.units):
                params[self._key(i)] = trial.suggest_float(self._key(i), -self.width, self.width)
        elif self.mode == "independent":
            for i, u in enumerate(self.units):
                params[self._key(i)] = trial.suggest_float(self._key(i), u.low, u.high)
        return self.from_params(params)

    def from_params(self, params: dict[str, float]) -> dict[str, float]:
        out = {}
        for i, u in enumerate(self.units):
            if self.mode == "independent":
                s = params[self._key(i)]
            else:
                t = self.position(u.name, params["level"]) + (
                    params.get(self._key(i), 0.0) if self.mode == "offsets" else 0.0
                )
                s = u.low + min(1.0, max(0.0, t)) * (u.high - u.low)
            out[u.name] = round(float(s), 6)
        return out

    def position(self, unit: str, level: float) -> float:
        """Where ``level`` puts ``unit`` in its range: ``level`` itself, or the unit's value
        in the allocation ``shape`` (a table over evenly spaced levels), interpolated."""
        table = self.shape.get(unit) if self.shape else None
        if not table:
            return level
        x = min(1.0, max(0.0, level)) * (len(table) - 1)
        i = min(int(x), len(table) - 2)
        return table[i] + (x - i) * (table[i + 1] - table[i])

    def uniform_params(self, level: float) -> dict[str, float]:
        """Parameters that put every unit at ``level`` of its range (a warm start)."""
        if self.mode == "independent":
            return {
                self._key(i): u.low + level * (u.high - u.low) for i, u in enumerate(self.units)
            }
        params = {"level": level}
        if self.mode == "offsets":
            params.update({self._key(i): 0.0 for i in range(len(self.units))})
        return params

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "width": self.width,
            "level_range": list(self.level_range),
            "units": [asdict(u) for u in self.units],
        }

    def contains_level(self, level: float) -> bool:
        return self.level_range[0] <= level <= self.level_range[1]


# -- samplers ---------------------------------------------------------------------------


def _tpe(seed: int, n_units: int) -> optuna.samplers.BaseSampler:
    # the warm starts count as startup trials, so a few random ones suffice
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


def _gp(seed: int, n_units: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)


def _cmaes(seed: int, n_units: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=3, warn_independent_sampling=False
    )


def _random(seed: int, n_units: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


samplers.add("tpe", _tpe)
samplers.add("gp", _gp)
samplers.add("cmaes", _cmaes)
samplers.add("random", _random)

# Samplers that read trial constraints themselves; for the others an infeasible trial's
# value is penalised instead (its true value is kept in the trial's attributes).
CONSTRAINT_AWARE = ("tpe", "gp", "random")


def make_sampler(name: str, seed: int, n_units: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler by name: ``tpe`` (multivariate, default), ``gp``, ``cmaes``, ``random``."""
    return samplers.get(name)(seed, n_units)


# -- study ------------------------------------------------------------------------------


def fingerprint(setup: dict[str, Any]) -> str:
    """A short hash of what a study was made for, to refuse resuming a different setup."""
    text = json.dumps(setup, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_study(
    storage: str | None,
    study_name: str,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    setup: dict[str, Any],
) -> tuple[optuna.Study, bool]:
    """Create or load a study; returns ``(study, resumed)``.

    A loaded study must have been made for the same ``setup`` (scheme, units, objectives,
    eps, ...), else the error says to pick another name or directory.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=list(directions),
            sampler=sampler,
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. other directions than the stored study
        raise ConfigError(f"search.storage: cannot open study {study_name!r}: {exc}") from None
    except Exception as exc:  # a bad URL, a locked or unreadable file
        raise ConfigError(f"search.storage: cannot open {storage!r}: {exc}") from None
    digest = fingerprint(setup)
    stored = study.user_attrs.get("fingerprint")
    resumed = stored is not None
    if stored is None:
        study.set_user_attr("fingerprint", digest)
        study.set_user_attr("setup", json.loads(json.dumps(setup, default=str)))
    elif stored != digest:
        raise ConfigError(
            f"search.study: study {study_name!r} in {storage} was made for a different setup "
            "(model, scheme, objectives or eps); choose another study name or output directory"
        )
    if [d.name.lower() for d in study.directions] != list(directions):
        raise ConfigError(f"search.study: study {study_name!r} optimises other directions")
    return study, resumed


def requeue_interrupted(study: optuna.Study) -> int:
    """Re-run the trials a crash left RUNNING: enqueue their parameters, mark them failed."""
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.params:
            study.enqueue_trial(
                dict(t.params), user_attrs={"requeued_from": t.number}, skip_if_exists=False
            )
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        count += 1
    return count


@dataclass
class TrialOutcome:
    """What evaluating one candidate produced."""

    values: list[float]  # objective values, as ratios to the original model
    accuracy: float
    drop: float
    feasible: bool
    attrs: dict[str, Any]


def run_trials(
    study: optuna.Study,
    space: SearchSpace,
    evaluate: Callable[[dict[str, float]], TrialOutcome],
    *,
    n_trials: int | None,
    timeout: float | None,
    eps: float,
    directions: Sequence[str],
    sampler_name: str,
    warm_start: Sequence[float] = (),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    describe: Callable[[optuna.trial.FrozenTrial], str] | None = None,
) -> None:
    """Run trials until ``n_trials`` are complete (in all) or ``timeout`` seconds pass."""
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not study.trials:
        for level in warm_start:
            if space.mode == "independent" or space.contains_level(level):
                study.enqueue_trial(space.uniform_params(level), user_attrs={"warm_start": level})
    remaining = None if n_trials is None else max(0, n_trials - done)
    if remaining == 0:
        return
    bar = tqdm(total=remaining, desc="search", disable=not progress, leave=False, unit="trial")
    penalise = sampler_name not in CONSTRAINT_AWARE

    def objective(trial: optuna.Trial):
        sparsities = space.suggest(trial)
        out = evaluate(sparsities)
        trial.set_user_attr("sparsities", sparsities)
        trial.set_user_attr("accuracy", out.accuracy)
        trial.set_user_attr("drop", out.drop)
        trial.set_user_attr("feasible", out.feasible)
        trial.set_user_attr("values", out.values)
        for k, v in out.attrs.items():
            trial.set_user_attr(k, v)
        trial.set_constraint("accuracy_drop", out.drop - eps)
        values = list(out.values)
        if penalise and not out.feasible:
            excess = 1.0 + 10.0 * (out.drop - eps)
            values = [
                v / excess if d == "maximize" else v * excess for v, d in zip(values, directions)
            ]
        return values[0] if len(values) == 1 else values

    def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if log is not None and describe is not None:
            log(describe(frozen))

    callbacks: list[Any] = [after]
    if n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,)))
    start = time.perf_counter()
    try:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            callbacks=callbacks,
            catch=(),
            gc_after_trial=False,
        )
    finally:
        bar.close()
    if log is not None:
        log(
            f"search: {len(study.trials)} trials in the study, "
            f"{time.perf_counter() - start:.0f} s this run"
        )


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("feasible")
    ]


def ranked(study: optuna.Study, directions: Sequence[str]) -> list[optuna.trial.FrozenTrial]:
    """Feasible trials, best first.

    One objective: by its value. Several: the feasible Pareto front first, ordered by the
    first objective (the stated rule: of the non-dominated models, the one best in the
    first objective is chosen), then the other feasible trials by the first objective.
    """
    trials = feasible_trials(study)
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]

    def key(t: optuna.trial.FrozenTrial) -> tuple:
        vals = t.user_attrs["values"]
        return tuple(-s * v for s, v in zip(sign, vals))

    if len(directions) == 1:
        return sorted(trials, key=key)
    front = pareto_front(trials, directions)
    ids = {t.number for t in front}
    return sorted(front, key=key) + sorted([t for t in trials if t.number not in ids], key=key)


def pareto_front(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[str]
) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated trials by their (true) objective values."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]

    def vals(t):
        return [s * v for s, v in zip(sign, t.user_attrs["values"])]

    front = []
    for t in trials:
        a = vals(t)
        dominated = any(
            all(b_i >= a_i for a_i, b_i in zip(a, vals(o)))
            and any(b_i > a_i for a_i, b_i in zip(a, vals(o)))
            for o in trials
            if o is not t
        )
        if not dominated:
            front.append(t)
    return front


def summary_line(values: Sequence[float], names: Sequence[str]) -> str:
    parts = []
    for v, n in zip(values, names):
        if math.isfinite(v):
            parts.append(f"{n} {v:.3f}x")
        else:
            parts.append(f"{n} {v}")
    return ", ".join(parts)

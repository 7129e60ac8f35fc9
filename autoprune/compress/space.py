"""The search space: per-unit sparsity ranges and how Optuna parameters map onto them.

A trial proposes one sparsity per prunable unit (a layer, or a coupled channel group for
structured schemes). Four parameterisations are available:

* ``"offsets"`` (default): one global ``level`` in [0, 1] plus a per-unit ``offset`` in
  ``[-width, width]``; unit ``i`` gets ``low_i + clip(level + offset_i, 0, 1) *
  (high_i - low_i)``. The sampler finds the right overall level quickly and then shifts
  sparsity between units.
* ``"independent"``: one sparsity per unit in ``[low_i, high_i]``.
* ``"uniform"``: the level alone (every unit at the same point of its range).
* ``"shape"``: the offsets alone; the level is set for each trial by a projection onto
  one target cost (:mod:`autoprune.compress.shape`), so every trial costs the same and
  the study ranks shapes by accuracy.

    >>> space = SearchSpace([Unit("conv1", 16, 0.0, 0.8), Unit("conv2", 32, 0.0, 0.8)])
    >>> space.from_params(space.uniform_params(0.5))
    {'conv1': 0.4, 'conv2': 0.4}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import optuna

from .._checks import choice
from ..errors import ConfigError
from ..schemes import Compose, Scheme

if TYPE_CHECKING:
    from .shape import Projection

SPACES = ("offsets", "independent", "uniform", "shape")
OFFSETS = ("offsets", "shape")  # the spaces with per-unit offsets
WIDTH = 0.35  # the offsets' range, [-WIDTH, WIDTH], by default


def plan_key(sparsities: Mapping[str, float]) -> tuple:
    """A plan's per-unit sparsities as a hashable key.

    >>> plan_key({"b": 0.5, "a": 0.25})
    (('a', 0.25), ('b', 0.5))
    """
    return tuple(sorted(sparsities.items()))


def mean_sparsity(sparsities: Mapping[str, float]) -> float:
    """The plain mean over units (0 for none)."""
    return sum(sparsities.values()) / len(sparsities) if sparsities else 0.0


def operator_of(scheme: Scheme, op: str) -> Scheme:
    """The operator named ``op`` in ``scheme`` (itself, or a part of a composition)."""
    return scheme.operator(op) if isinstance(scheme, Compose) else scheme


@dataclass(frozen=True)
class Unit:
    """One searched sparsity: a layer or coupled group, its size, its range, its operator.

    ``name`` is as the scheme's :meth:`~autoprune.schemes.Scheme.units` names it: in a
    :class:`~autoprune.schemes.Compose`, ``"op:layer"``.
    """

    name: str
    size: int
    low: float = 0.0
    high: float = 0.9
    op: str = ""
    step: int = 1

    def snap(self, sparsity: float) -> float:
        """The sparsity that keeps a multiple of ``step`` of the unit's ``size`` channels:
        the nearest to ``sparsity`` within the unit's range when one is (the operator's
        ``round_to``; the scheme keeps these counts exactly).

        >>> Unit("conv", 64, 0.0, 0.9, step=16).snap(0.3)
        0.25
        >>> Unit("conv", 64, 0.5, 0.9, step=16).snap(0.3), Unit("conv", 12, step=16).snap(0.5)
        (0.5, 0.0)
        """
        if self.step <= 1:
            return sparsity
        top = self.size - self.size % self.step  # at most this many kept
        if top == 0:
            return 0.0  # smaller than one multiple: kept whole
        kept = [k for k in range(self.step, top + 1, self.step)]
        choices = [1.0 - k / self.size for k in kept]
        inside = [c for c in choices if self.low - 1e-9 <= c <= self.high + 1e-9] or choices
        return min(inside, key=lambda c: (abs(c - sparsity), c))

    @property
    def layer(self) -> str:
        """The layer (or group root) name, without the operator's prefix."""
        prefix = f"{self.op}:"
        return self.name[len(prefix) :] if self.op and self.name.startswith(prefix) else self.name

    def with_range(self, low: float, high: float) -> Unit:
        return replace(self, low=low, high=high)


class SearchSpace:
    """Maps Optuna parameters to per-unit sparsities (see the module docstring)."""

    def __init__(
        self,
        units: Sequence[Unit],
        mode: str = "offsets",
        width: float = WIDTH,
        level_range: tuple[float, float] = (0.0, 1.0),
        prior: dict[str, list[float]] | None = None,
    ) -> None:
        choice("search.space", mode, SPACES)
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
        self.prior = dict(prior or {})
        # the shape space's level for given offsets (see autoprune.compress.shape)
        self.projection: Projection | None = None

    def _key(self, i: int) -> str:
        return f"offset_{i:03d}" if self.mode in OFFSETS else f"s_{i:03d}"

    def offset_keys(self) -> list[str]:
        """The offsets' parameter names (none but in the offset spaces)."""
        return [self._key(i) for i in range(len(self.units))] if self.mode in OFFSETS else []

    def suggest(self, trial: optuna.Trial) -> dict[str, float]:
        """Ask the trial for its parameters; return the per-unit sparsities. In the shape
        space the level comes from :attr:`projection`, and the trial keeps it and the
        plan's cost in its ``level`` and ``cost`` attributes."""
        params: dict[str, float] = {}
        if self.mode in ("offsets", "uniform"):
            params["level"] = trial.suggest_float("level", *self.level_range)
        if self.mode in OFFSETS:
            for key in self.offset_keys():
                params[key] = trial.suggest_float(key, -self.width, self.width)
        if self.mode == "shape":
            if self.projection is None:
                raise RuntimeError("the shape space needs its projection (space.projection)")
            params["level"] = self.projection.level(params)
            trial.set_user_attr("level", params["level"])
            trial.set_user_attr("cost", self.projection.cost(params))
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
                    params.get(self._key(i), 0.0) if self.mode in OFFSETS else 0.0
                )
                s = u.low + min(1.0, max(0.0, t)) * (u.high - u.low)
            out[u.name] = round(float(u.snap(s)), 6)
        return out

    def position(self, unit: str, level: float) -> float:
        """Where ``level`` puts ``unit`` in its range: ``level`` itself, or the unit's value
        in the allocation ``prior`` (a table over evenly spaced levels), interpolated."""
        table = self.prior.get(unit) if self.prior else None
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
        params.update({key: 0.0 for key in self.offset_keys()})
        return params

    def warm_params(self, level: float) -> dict[str, float]:
        """What a warm start at ``level`` enqueues: :meth:`uniform_params`, less the
        level in the shape space (where the projection sets it)."""
        params = self.uniform_params(level)
        if self.mode == "shape":
            params.pop("level")
        return params

    @staticmethod
    def params_of(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
        """A trial's parameters with its level (the shape space keeps it as an attribute)."""
        params = dict(trial.params)
        if "level" not in params and "level" in trial.user_attrs:
            params["level"] = float(trial.user_attrs["level"])
        return params

    def contains_level(self, level: float) -> bool:
        return self.level_range[0] <= level <= self.level_range[1]

    def warm_level(self, level: float) -> bool:
        """Whether a warm start at ``level`` is a plan of this space (and so enqueued)."""
        return self.mode in ("independent", "shape") or self.contains_level(level)

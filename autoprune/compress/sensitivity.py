"""Per-layer sensitivity analysis (Han et al., 2015; Distiller's is the reference).

Prune one unit (a layer, or a coupled channel group) at a time over a grid of
sparsities, recalibrate BatchNorm, optionally fine-tune a few batches, and record the
validation accuracy. The curves show which layers tolerate pruning; their crossing of a
threshold gives per-unit bounds for the search.

    >>> import autoprune as ap
    >>> data = ap.load_data("digits")
    >>> model = ap.create_model("mlp", data.num_classes, data.input_shape, hidden=(32, 16))
    >>> _ = ap.train(model, data.loaders(64).train, epochs=3, seed=0)
    >>> result = analyze(model, ap.Prune(), data.loaders(64), data.example_input(),
    ...                  SensitivityOptions(levels=(0.5, 0.9)))
    >>> sorted(result.accuracy)
    ['fc1', 'fc2']
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import _checks
from .._io import atomic_write
from ..data import Loaders
from ..errors import ConfigError, DataError
from ..schemes import Scheme
from ..training import evaluate
from .proxy import pruned_copy, quick_tune


@dataclass(frozen=True)
class SensitivityOptions:
    """How a sensitivity analysis runs: for ``autoprune sensitivity`` and for a search's
    ``bounds="sensitivity"`` alike (the spec's ``sensitivity:`` section builds it).

    Each unit is pruned alone at every level, its BatchNorm recalibrated on
    ``bn_batches`` batches, fine-tuned for ``finetune_steps`` minibatches at
    ``finetune_lr``, and measured on ``val_batches`` validation batches (None: all). As
    search bounds, a unit's upper bound is its largest level whose drop stays within
    ``threshold`` (default ``4 * eps``, within [0.02, 0.2]).

    >>> SensitivityOptions().threshold_for(0.01)
    0.04
    """

    levels: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    bn_batches: int = 20
    finetune_steps: int = 20
    finetune_lr: float = 0.02
    val_batches: int | None = 5
    threshold: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.levels, (str, bytes)) or not isinstance(self.levels, Sequence):
            raise _checks.fail("sensitivity.levels", "a list of sparsities", self.levels)
        if not self.levels:
            raise ConfigError("sensitivity.levels: expected at least one sparsity")
        levels = tuple(
            _checks.fraction(f"sensitivity.levels[{i}]", v) for i, v in enumerate(self.levels)
        )
        object.__setattr__(self, "levels", levels)
        _checks.number("sensitivity.bn_batches", self.bn_batches, 0, integer=True)
        _checks.number("sensitivity.finetune_steps", self.finetune_steps, 0, integer=True)
        _checks.number("sensitivity.finetune_lr", self.finetune_lr, 0, low_open=True)
        _checks.optional_number("sensitivity.val_batches", self.val_batches, 1, integer=True)
        _checks.optional_number("sensitivity.threshold", self.threshold, 0.0, 1.0)

    def threshold_for(self, eps: float) -> float:
        """The drop a unit's upper bound may reach, for an accuracy budget ``eps``."""
        if self.threshold is not None:
            return self.threshold
        return min(0.2, max(0.02, 4 * eps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"levels": list(self.levels)}


# The first evaluation of an analysis runs slower than the mean (warm-up, and the least
# pruned level first): on the suite's resnet10 (filter_prune) it projected 302 s where
# whole first units projected 216-230 s. So it stops the analysis only past this many
# times the limit; the first unit decides the closer calls.
FIRST_MARGIN = 1.5


class TooSlow(Exception):
    """An analysis that would pass its time ``limit``: ``projected`` seconds in all, as
    its first evaluation's (or first unit's) time projects."""

    def __init__(self, projected: float, limit: float) -> None:
        super().__init__(f"about {projected:.0f} s, over the {limit:.0f} s it may take")
        self.projected, self.limit = projected, limit


@dataclass
class _Pace:
    """An analysis's pace against its time ``limit`` (None: none), over ``total``
    evaluations, from its start."""

    limit: float | None
    total: int
    start: float = field(default_factory=time.perf_counter)

    def check(self, done: int, margin: float = 1.0) -> None:
        """Raise :class:`TooSlow` when the time of the first ``done`` evaluations, times
        the number of evaluations, projects past ``margin`` times the limit (never on the
        last evaluation: there is nothing left to save).

        >>> _Pace(limit=1e9, total=8).check(1)
        >>> _Pace(limit=0.0, total=8, start=time.perf_counter() - 1).check(4)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        autoprune.compress.sensitivity.TooSlow: about ... s, over the 0 s it may take
        >>> _Pace(limit=0.0, total=8, start=time.perf_counter() - 1).check(8)
        """
        if self.limit is None or done >= self.total:
            return
        projected = (time.perf_counter() - self.start) * self.total / done
        if projected > margin * self.limit:
            raise TooSlow(projected, self.limit)


@dataclass
class Sensitivity:
    """Accuracy of the model with one unit pruned at each level.

    Attributes:
        base: the unpruned model's accuracy on the same data.
        levels: the sparsities tried.
        accuracy: ``{unit: [accuracy at each level]}``.
        sizes: ``{unit: units of the layer or group}``.
        op: the scheme operator analysed.
    """

    base: float
    levels: list[float]
    accuracy: dict[str, list[float]]
    sizes: dict[str, int] = field(default_factory=dict)
    op: str = ""

    def drops(self) -> dict[str, list[float]]:
        return {u: [self.base - a for a in accs] for u, accs in self.accuracy.items()}

    def max_sparsity(self, threshold: float) -> dict[str, float]:
        """Each unit's largest level whose accuracy drop is at most ``threshold`` (0 if none)."""
        out = {}
        for unit, drops in self.drops().items():
            ok = [lv for lv, d in zip(self.levels, drops) if d <= threshold]
            out[unit] = max(ok) if ok else 0.0
        return out

    def bounds(
        self, threshold: float, floor: float | None = None, cap: float = 0.99
    ) -> dict[str, tuple[float, float]]:
        """Per-unit search bounds ``(0, high)``: ``high`` is :meth:`max_sparsity`, at least
        ``floor`` (default: the smallest level), at most ``cap``."""
        floor = self.levels[0] if floor is None else floor
        return {u: (0.0, min(cap, max(floor, s))) for u, s in self.max_sparsity(threshold).items()}

    # -- files ------------------------------------------------------------------------
    def to_csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["unit", "size", *[f"{lv:g}" for lv in self.levels]])
        for unit, accs in self.accuracy.items():
            w.writerow([unit, self.sizes.get(unit, ""), *[f"{a:.5f}" for a in accs]])
        return out.getvalue()

    def to_dict(self) -> dict:
        return {"format": "autoprune.sensitivity/1", **asdict(self)}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sensitivity:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DataError(f"sensitivity results not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a sensitivity .json file: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != "autoprune.sensitivity/1":
            raise DataError(f"{path} does not hold autoprune sensitivity results")
        data.pop("format")
        try:
            return cls(**data)
        except TypeError as exc:
            raise DataError(f"{path} does not hold autoprune sensitivity results: {exc}") from None


def analyze(
    model: nn.Module,
    scheme: Scheme,
    loaders: Loaders,
    example_input: torch.Tensor,
    options: SensitivityOptions | None = None,
    *,
    accuracy: Callable[[nn.Module, Iterable], float] | None = None,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    limit: float | None = None,
) -> Sensitivity:
    """Prune each of ``scheme``'s units alone at every level and measure accuracy.

    Args:
        model: the trained model (not changed).
        scheme: which operator and which layers (its sparsity is ignored).
        options: levels, BatchNorm batches, fine-tuning and validation batches
            (:class:`SensitivityOptions`).
        accuracy: ``f(model, loader) -> float`` instead of top-1 accuracy.
        limit: seconds the analysis may take: when its first evaluation's time, times
            the number of evaluations (units times levels), passes ``FIRST_MARGIN``
            times it, or its first unit's time, times the number of units, passes it,
            :class:`TooSlow` is raised then (None: no limit).
    """
    options = options or SensitivityOptions()
    accuracy = accuracy or (lambda m, loader: evaluate(m, loader).accuracy)
    val_data: Iterable = loaders.val
    if options.val_batches is not None:
        val_data = [b for _, b in zip(range(options.val_batches), loaders.val)]
    base = float(accuracy(model, val_data))
    sizes = scheme.units(copy.deepcopy(model), example_input)
    levels = list(options.levels)
    table: dict[str, list[float]] = {}
    pace = _Pace(limit, len(sizes) * len(levels))
    with tqdm(total=pace.total, desc="sensitivity", disable=not progress, leave=False) as bar:
        for i, unit in enumerate(sizes):
            row = []
            for level in levels:
                pruned = scheme.with_sparsities({unit: level})
                candidate, _, _ = pruned_copy(model, pruned, example_input)
                quick_tune(
                    candidate,
                    loaders.train,
                    bn_batches=options.bn_batches,
                    steps=options.finetune_steps,
                    lr=options.finetune_lr,
                    seed=seed,
                    desc="sensitivity",
                )
                row.append(float(accuracy(candidate, val_data)))
                bar.update(1)
                if i == 0 and len(row) == 1:  # a hopeless analysis stops here, little spent
                    pace.check(1, FIRST_MARGIN)
            table[unit] = row
            if log is not None:
                log(
                    f"sensitivity {unit}: "
                    + " ".join(f"{lv:g}:{base - a:+.3f}" for lv, a in zip(levels, row))
                )
            if i == 0:  # a closer call: decided on the first whole unit
                pace.check(len(levels))
    return Sensitivity(
        base=base,
        levels=levels,
        accuracy=table,
        sizes={k: int(v) for k, v in sizes.items()},
        op=scheme.op,
    )

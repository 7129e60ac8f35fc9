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
    ...                  levels=(0.5, 0.9))
    >>> sorted(result.accuracy)
    ['fc1', 'fc2']
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Loaders
from .errors import ConfigError, DataError
from .schemes.base import Scheme, check_fraction
from .schemes.structured import materialize
from .training import evaluate, recalibrate_bn, train

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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
        from .encoding import atomic_write

        atomic_write(path, json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sensitivity:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DataError(f"sensitivity results not found: {path}")
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != "autoprune.sensitivity/1":
            raise DataError(f"{path} does not hold autoprune sensitivity results")
        data.pop("format")
        return cls(**data)


def analyze(
    model: nn.Module,
    scheme: Scheme,
    loaders: Loaders,
    example_input: torch.Tensor,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    bn_batches: int = 10,
    finetune_steps: int = 0,
    finetune_lr: float = 0.02,
    val_batches: int | None = None,
    metric: Callable[[nn.Module, Iterable], float] | None = None,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Sensitivity:
    """Prune each of ``scheme``'s units alone at every level and measure accuracy.

    Args:
        model: the trained model (not changed).
        scheme: which operator and which layers (its sparsity is ignored).
        levels: sparsities to try, each in [0, 1).
        bn_batches: BatchNorm recalibration batches after pruning.
        finetune_steps: minibatches of fine-tuning after pruning (0: none).
        val_batches: validation batches to measure on (None: all).
        metric: ``f(model, loader) -> float`` instead of top-1 accuracy.
    """
    levels = [check_fraction(lv, "levels") for lv in levels]
    if not levels:
        raise ConfigError("levels: expected at least one sparsity")
    metric = metric or (lambda m, loader: evaluate(m, loader).accuracy)

    def val() -> Iterable:
        if val_batches is None:
            return loaders.val
        return [b for _, b in zip(range(val_batches), loaders.val)]

    val_data = val()
    base = float(metric(model, val_data))
    sizes = scheme.units(copy.deepcopy(model), example_input)
    accuracy: dict[str, list[float]] = {}
    bar = tqdm(
        total=len(sizes) * len(levels), desc="sensitivity", disable=not progress, leave=False
    )
    for unit in sizes:
        row = []
        for level in levels:
            candidate = copy.deepcopy(model)
            scheme.with_sparsities({unit: level}).apply(candidate, example_input)
            made = materialize(candidate, example_input)
            if made.physical:
                candidate = made.model
            recalibrate_bn(candidate, loaders.train, bn_batches)
            if finetune_steps:
                train(
                    candidate,
                    loaders.train,
                    max_steps=finetune_steps,
                    lr=finetune_lr,
                    seed=seed,
                    desc="sensitivity",
                )
            row.append(float(metric(candidate, val_data)))
            bar.update(1)
        accuracy[unit] = row
        if log is not None:
            log(
                f"sensitivity {unit}: "
                + " ".join(f"{lv:g}:{base - a:+.3f}" for lv, a in zip(levels, row))
            )
    bar.close()
    return Sensitivity(
        base=base,
        levels=list(levels),
        accuracy=accuracy,
        sizes={k: int(v) for k, v in sizes.items()},
        op=scheme.op,
    )

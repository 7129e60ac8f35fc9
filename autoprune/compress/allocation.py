"""The sensitivity prior: how the search's global level spreads over units that differ in
what pruning them saves and what it costs in accuracy.

A sensitivity analysis (:mod:`.sensitivity`) gives each unit's accuracy drop with that
unit alone pruned at a few sparsities; the objective's metric on the same single-unit
plans gives what each saves (:class:`Curve`). For a trade-off ``lam``, every unit takes
the sparsity of its range that maximises ``saving / total - lam * drop``; sweeping
``lam`` from large to small traces allocations from nothing pruned to every unit at the
top of its range, each unit's sparsity growing along the way. The prior maps a level
``l`` to the allocation on that path whose mean position in the units' ranges is ``l``
(:func:`allocation_prior`): at the same mean position as the uniform plan, units that
save much and lose little are pruned more, the others less. The calibration then
bisects along this path instead of the uniform one, and the study's per-unit offsets
start from it.

    >>> from autoprune.compress.space import Unit
    >>> units = [Unit("cheap", 16, 0.0, 0.9), Unit("costly", 16, 0.0, 0.9)]
    >>> curves = {
    ...     "cheap": Curve([0.5, 0.9], drops=[0.0, 0.01], savings=[0.4, 0.6]),
    ...     "costly": Curve([0.5, 0.9], drops=[0.05, 0.3], savings=[0.1, 0.2]),
    ... }
    >>> prior = allocation_prior(units, curves, points=3)
    >>> prior["cheap"][1] > 0.5 > prior["costly"][1]
    True
    >>> [prior["cheap"][0], prior["cheap"][2]], [prior["costly"][0], prior["costly"][2]]
    ([0.0, 1.0], [0.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .context import RunContext
from .proxy import pruned_copy
from .sensitivity import Sensitivity
from .shape import cost_metric
from .space import Unit

GRID = 61  # sparsities per unit the allocation chooses among


@dataclass(frozen=True)
class Curve:
    """One unit pruned alone: its accuracy ``drops`` and objective ``savings`` (in the
    metric's own unit, larger is better) at each of ``levels`` (sparsities); nothing
    pruned (0) has neither."""

    levels: Sequence[float]
    drops: Sequence[float]
    savings: Sequence[float]

    def at(self, sparsities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(drops, savings) at ``sparsities``: piecewise linear through the measured
        points, each made non-decreasing (more pruning never loses less or saves less;
        what says otherwise is noise), extended past the last level along its slope."""
        xs = np.array([0.0, *self.levels], dtype=float)
        order = np.argsort(xs)
        xs = xs[order]
        out = []
        for ys in (self.drops, self.savings):
            y = np.maximum.accumulate(np.maximum(np.array([0.0, *ys], dtype=float)[order], 0.0))
            values = np.interp(sparsities, xs, y)
            if len(xs) >= 2:  # beyond the last level: its last slope, never downwards
                slope = max(0.0, (y[-1] - y[-2]) / max(xs[-1] - xs[-2], 1e-9))
                beyond = sparsities > xs[-1]
                values[beyond] = y[-1] + slope * (sparsities[beyond] - xs[-1])
            out.append(values)
        return out[0], out[1]


def allocation_prior(
    units: Sequence[Unit], curves: Mapping[str, Curve], points: int = 21
) -> dict[str, list[float]]:
    """Per-unit positions (fractions of each unit's range) at ``points`` evenly spaced
    levels, following the trade-off path (see the module docstring). Units without a
    curve keep the uniform position (the level itself)."""
    known = [u for u in units if u.name in curves]
    if not known:
        return {}
    grids, gains, losses = [], [], []
    for u in known:
        grid = np.linspace(u.low, u.high, GRID)
        drop, saving = curves[u.name].at(grid)
        grids.append(grid)
        losses.append(drop)
        gains.append(saving)
    total = sum(float(g[-1]) for g in gains) or 1.0
    scale = max((float(d[-1]) for d in losses), default=0.0) or 1.0
    # the path: for each trade-off, every unit's best index into its grid
    path = [np.zeros(len(known), dtype=int)]
    for lam in np.logspace(4, -4, 400):
        path.append(
            np.array([int(np.argmax(g / total - lam * d / scale)) for g, d in zip(gains, losses)])
        )
    path.append(np.full(len(known), GRID - 1))
    path = [np.maximum.reduce(path[: i + 1]) for i in range(len(path))]  # each unit monotone
    positions = [p / (GRID - 1) for p in path]  # grids are even over each unit's range
    means = np.array([float(p.mean()) for p in positions])
    out: dict[str, list[float]] = {u.name: [] for u in known}
    for k in range(points):
        target = k / (points - 1)
        i = int(np.searchsorted(means, target, side="left"))
        if i == 0:
            pos = positions[0]
        elif i >= len(positions):
            pos = positions[-1]
        else:  # between two allocations of the path: interpolate
            lo, hi = means[i - 1], means[i]
            w = 0.0 if hi <= lo else (target - lo) / (hi - lo)
            pos = positions[i - 1] + w * (positions[i] - positions[i - 1])
        for u, p in zip(known, pos):
            out[u.name].append(round(float(p), 6))
    for name, table in out.items():  # monotone over levels, from 0 to 1
        out[name] = [round(float(v), 6) for v in np.maximum.accumulate(table)]
    return out


def saving_curves(ctx: RunContext, units: Sequence[Unit], sens: Sensitivity) -> dict[str, Curve]:
    """Each analysed unit's :class:`Curve`: the sensitivity's drops, and what the
    objective's metric saves on the same single-unit plans (MACs for a timing, which is
    too noisy to measure per unit)."""
    metric, sign = cost_metric(ctx)
    base = float(metric(ctx.original, ctx.example_input))
    drops = sens.drops()
    curves = {}
    for u in units:
        if u.name not in drops:
            continue
        savings = []
        for level in sens.levels:
            scheme = ctx.scheme.with_sparsities({u.name: level})
            model, _, _ = pruned_copy(ctx.original, scheme, ctx.example_input)
            savings.append(sign * (base - float(metric(model, ctx.example_input))))
        curves[u.name] = Curve(list(sens.levels), drops[u.name], savings)
    return curves


def sensitivity_prior(
    ctx: RunContext, units: Sequence[Unit], sens: Sensitivity
) -> dict[str, list[float]]:
    """The sensitivity prior of ``units`` (see the module docstring)."""
    prior = allocation_prior(units, saving_curves(ctx, units, sens))
    mid = len(next(iter(prior.values()))) // 2 if prior else 0
    if prior:
        ctx.log(
            "sensitivity prior at level 0.5: "
            + ", ".join(f"{name} {table[mid]:.2f}" for name, table in prior.items())
        )
    return prior

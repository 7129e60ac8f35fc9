"""Refinement: the plan that held eps, pushed further while it still holds.

The chosen plan's global ``level`` is raised with its per-unit offsets kept, each step
recovered for real and kept only when it holds eps. With a level above known to break
eps (a calibration plan, or an earlier step), a step bisects towards it; without one, it
goes a quarter of the way to the top of the searched range (the drop grows steeply near
the top, so a step halfway there easily overshoots). A level whose plan is the held plan
(its units at their upper bounds) is passed over without a recovery, and a plan as pruned
as its shape allows (level 1 prunes no more) is not refined at all.

    >>> next_level(0.5, None, top=1.0), next_level(0.5, 0.7, top=1.0)
    (0.625, 0.6)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .context import RunContext, TimeBudget
from .finalists import Recovered, recover_plan
from .records import LevelRecord
from .space import SearchSpace, mean_sparsity


def next_level(lo: float, hi: float | None, top: float) -> float:
    """The next level to try above ``lo``: halfway to ``hi`` (the lowest level known to
    break), or a quarter of the way to ``top`` without one."""
    return round((lo + hi) / 2 if hi is not None else lo + (top - lo) / 4, 6)


@dataclass
class Refinement:
    """The steps tried, and the recovered model of the highest level that held (if one)."""

    records: list[LevelRecord] = field(default_factory=list)
    best: Recovered | None = None
    at_top: bool = False  # the plan that holds prunes as much as its shape can (level 1)

    @property
    def held(self) -> LevelRecord | None:
        held = [r for r in self.records if r.holds]
        return max(held, key=lambda r: r.level) if held else None

    def notes(self, chosen: str, params: Mapping[str, float]) -> list[str]:
        """What the result's notes say of this refinement of the plan labelled ``chosen``."""
        last = self.held
        if self.best is None or last is None:
            return []
        return [
            f"refined {chosen}: its level raised from {params['level']:.4f} to "
            f"{last.level:.4f} (recovered val drop {last.drop:+.4f})"
        ]


def room_left(
    eps: float,
    drop: float,
    level: float | None,
    calibration: Sequence[LevelRecord],
    refinement: Refinement,
    finalists_broke: bool,
) -> str | None:
    """A note when the returned plan (validation ``drop``, at ``level``) is more than
    ``eps / 2`` inside eps and no more compressed plan was found to break eps: the budget
    ended before the edge was found, and a larger one would likely compress further."""
    if drop > eps / 2:
        return None
    if refinement.at_top:
        return (
            f"the result's drop {drop:+.4f} is more than eps/2 inside eps {eps:g}, and its "
            "units are as pruned as its shape allows (a higher level prunes nothing more): "
            "wider bounds (search.bounds) would let it compress further"
        )
    above = level is not None and any(not r.holds and r.level > level for r in calibration)
    if finalists_broke or above or any(not r.holds for r in refinement.records):
        return None
    return (
        f"the result's drop {drop:+.4f} is more than eps/2 inside eps {eps:g} and no more "
        "compressed plan was recovered: the budget ended before the edge of eps was found; "
        "more refine steps (or a longer timeout) would likely compress further"
    )


def refine_plan(
    ctx: RunContext,
    budget: TimeBudget,
    space: SearchSpace,
    params: Mapping[str, float],
    broken: Sequence[float],
    steps: int,
    proxy: Callable[[Mapping[str, float]], float | None] | None = None,
) -> Refinement:
    """Raise the level of the plan with search-space parameters ``params``, at most
    ``steps`` times, while a recovery still fits the time left (see the module
    docstring); ``broken``: levels of the same shape known to break eps.
    ``proxy(sparsities) -> proxy drop``, when given, scores each step's plan too, so that
    the run can say how well its proxy ranks what recovery achieves."""
    lo = float(params["level"])
    above = [level for level in broken if level > lo]
    hi = min(above) if above else None
    top = max(space.level_range[1], min(1.0, lo + 0.1))
    out = Refinement()
    plan, ceiling = space.from_params(dict(params)), space.from_params({**params, "level": 1.0})
    k = 0
    while k < steps and plan != ceiling:
        mid = next_level(lo, hi, top)
        if mid - lo < 1e-3:
            break
        sparsities = space.from_params({**params, "level": mid})
        if sparsities == plan:  # the same plan (units at their bounds): it holds, unrecovered
            lo = mid
            continue
        if not budget.fits():
            ctx.log(
                f"refine: stopped after {k} step(s); another recovery (up to about "
                f"{budget.need():.0f} s, as the slowest so far) would pass the timeout"
            )
            break
        t = time.perf_counter()
        proxy_drop = proxy(sparsities) if proxy is not None else None
        got = recover_plan(ctx, budget, sparsities)
        ok = got.drop <= ctx.eps
        mean = mean_sparsity(sparsities)
        out.records.append(
            LevelRecord(
                level=mid,
                mean_sparsity=mean,
                drop=got.drop,
                holds=ok,
                val_accuracy=got.accuracy,
                proxy_drop=proxy_drop,
                recovery_seconds=budget.timed[-1] if budget.timed else None,
                seconds=time.perf_counter() - t,
            )
        )
        ctx.log(
            f"refine {k + 1}/{steps}: level {mid:.4f} (mean sparsity {mean:.3f}): "
            f"{got.describe(ctx.deployment.dtype)}: {'holds' if ok else 'breaks'} eps"
        )
        k += 1
        if ok:
            lo, out.best, plan = mid, got, sparsities
        else:
            hi = mid
    out.at_top = plan == ceiling
    if out.at_top:
        ctx.log(
            "refine: the plan is as pruned as its shape allows: a higher level prunes nothing more"
        )
    return out

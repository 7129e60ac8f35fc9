"""Calibrating the search's threshold: uniform plans bisected, each recovered for real.

The proxy accuracy of a candidate underestimates what recovery achieves, more so the more
is pruned. A bisection over uniform levels finds the most pruned uniform plan that keeps
eps after real fine-tuning; the search's threshold ``tau`` lies halfway between that
plan's proxy drop and the proxy drop of the first uniform plan above it that broke eps
(:func:`threshold`).

The proxy scorings are there for the study (its threshold, the time a trial takes). When
a plan has held and the study is found not to fit whatever the calibration does next
(``study_room``, :func:`~autoprune.compress.shape.room_for_study` in the shape space),
the remaining steps skip them: about a third of a recovery each, given to recoveries.

    >>> held = LevelRecord(0.5, 0.45, 0.004, True, proxy_drop=0.02)
    >>> broke = LevelRecord(0.75, 0.7, 0.03, False, proxy_drop=0.08)
    >>> threshold([held, broke], eps=0.01)
    0.05
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from ..recovery import FineTune, Recovery
from .context import RunContext, TimeBudget
from .options import CalibrationOptions, ProxyOptions
from .proxy import ProxyScorer
from .records import LevelRecord, first_broken_above
from .space import SearchSpace, mean_sparsity, operator_of, plan_key


@dataclass
class Calibration:
    """What the calibration found.

    Attributes:
        tau: the search's threshold on the proxy drop (``eps`` when no plan held).
        records: every level tried, in order.
        held: the most pruned level that held eps (None: none did).
        recovered: the recovered models of plans that held, by plan key, when the
            calibration's recovery was the run's own (they are then reused).
        unscored: why the proxy stopped scoring the steps (None: it scored them all).
    """

    tau: float
    records: list[LevelRecord] = field(default_factory=list)
    held: float | None = None
    recovered: dict[tuple, nn.Module] = field(default_factory=dict)
    unscored: str | None = None

    @property
    def levels(self) -> list[float]:
        return [r.level for r in self.records]


def threshold(records: Sequence[LevelRecord], eps: float, rule: str = "midpoint") -> float:
    """``tau``: halfway from the most pruned held plan's proxy drop to that of the first
    plan above it that broke eps (``rule="held"``: that held plan's proxy drop), and never
    below eps (eps itself when none held, or when that plan was not scored by the proxy).

    >>> held = LevelRecord(0.5, 0.45, 0.004, True, proxy_drop=0.02)
    >>> broke = LevelRecord(0.75, 0.7, 0.03, False, proxy_drop=0.08)
    >>> threshold([held, broke], eps=0.01, rule="held")
    0.02
    >>> threshold([LevelRecord(0.5, 0.45, 0.004, True), broke], eps=0.01)
    0.01
    """
    held = [r for r in records if r.holds]
    if not held:
        return eps
    best = max(held, key=lambda r: r.level)
    if best.proxy_drop is None:  # not scored: no study follows, so no threshold is used
        return eps
    best_drop = float(best.proxy_drop)
    if rule == "held":
        return max(eps, best_drop)
    broken = first_broken_above(records, best.level)
    edge = best_drop if broken is None or broken.proxy_drop is None else broken.proxy_drop
    return max(eps, best_drop + max(0.0, edge - best_drop) / 2)


def calibration_recovery(
    recovery: Recovery, options: CalibrationOptions, proxy: ProxyOptions
) -> Recovery:
    """The recovery that judges calibration plans: the run's own when it is a fine-tune
    (its models can then be reused), else a fine-tune of similar cost."""
    if isinstance(recovery, FineTune) and options.epochs is None:
        return recovery
    epochs = 3.0 if options.epochs is None else options.epochs
    return FineTune(epochs=epochs, lr=proxy.finetune_lr, bn_batches=proxy.bn_batches)


def start_level(ctx: RunContext, space: SearchSpace) -> float:
    """Where the bisection starts from: the lowest ``calibration_start`` of the searched
    operators (three quarters of the weights for ``prune``, half the blocks for
    ``block_prune``, nothing for channels)."""
    return min(operator_of(ctx.scheme, u.op).calibration_start for u in space.units)


def calibrate(
    ctx: RunContext,
    space: SearchSpace,
    scorer: ProxyScorer,
    options: CalibrationOptions,
    proxy: ProxyOptions,
    budget: TimeBudget,
    study_room: Callable[[Sequence[LevelRecord]], str | None] | None = None,
) -> Calibration:
    """Bisect uniform plans with real fine-tuning (see the module docstring).
    ``study_room(records) -> reason``: why no study could follow, once a plan has held
    (None: one still could); from then on the steps skip the proxy."""
    cheap = calibration_recovery(ctx.recovery, options, proxy)
    lo, hi = start_level(ctx, space), 1.0
    out = Calibration(tau=ctx.eps)
    end = None if budget.timeout is None else budget.timeout - budget.tail
    for k in range(options.steps):
        if end is not None and out.records:
            # until a plan holds, the run has nothing to fall back on: the bisection goes
            # on while a step fits the whole timeout, not only its share
            held = out.held is not None
            if budget.elapsed() + out.records[-1].seconds > (options.share * end if held else end):
                ctx.log(
                    f"calibration: stopping after {k} step(s); another would pass "
                    + (f"{options.share:g} of the timeout" if held else "the timeout (none held)")
                )
                break
        if study_room is not None and out.held is not None and out.unscored is None:
            out.unscored = study_room(out.records)
            if out.unscored is not None:
                ctx.log(
                    f"calibration: no study: {out.unscored}; the remaining steps skip the "
                    "proxy (it would choose nothing)"
                )
        mid = round((lo + hi) / 2, 6)
        judge = scorer if out.unscored is None else None
        record, model = _step(ctx, space, judge, cheap, mid, k, options.steps)
        out.records.append(record)
        if record.holds:
            lo, out.held = mid, mid
            if cheap is ctx.recovery:  # the real recovery: keep it for the finalists
                out.recovered[plan_key(space.from_params(space.uniform_params(mid)))] = model
        else:
            hi = mid
    out.tau = threshold(out.records, ctx.eps, options.threshold)
    _report(ctx, out)
    return out


def _step(
    ctx: RunContext,
    space: SearchSpace,
    scorer: ProxyScorer | None,
    recovery: Recovery,
    level: float,
    k: int,
    steps: int,
) -> tuple[LevelRecord, nn.Module]:
    t_step = time.perf_counter()
    sparsities = space.from_params(space.uniform_params(level))
    proxy = scorer(sparsities).drop if scorer is not None else None
    t_rec = time.perf_counter()
    model = recovery.recover(
        ctx.original,
        ctx.scheme.with_sparsities(sparsities),
        ctx.loaders,
        ctx.example_input,
        seed=ctx.seed,
    )
    t_rec = time.perf_counter() - t_rec
    acc = float(ctx.accuracy(model, ctx.loaders.val))
    drop = ctx.drop(acc)
    ok = drop <= ctx.eps
    mean = mean_sparsity(sparsities)
    ctx.log(
        f"calibration {k + 1}/{steps}: {'level' if space.prior else 'uniform level'} "
        f"{level:.3f} "
        f"(mean sparsity {mean:.3f}): "
        + (f"proxy drop {proxy:+.4f}, " if proxy is not None else "")
        + "after "
        f"{getattr(recovery, 'epochs', 0):g} epoch(s) of fine-tuning drop {drop:+.4f}: "
        f"{'holds' if ok else 'breaks'} eps"
    )
    record = LevelRecord(
        level=level,
        mean_sparsity=mean,
        drop=drop,
        holds=ok,
        val_accuracy=acc,
        proxy_drop=proxy,
        recovery_seconds=t_rec,
        seconds=time.perf_counter() - t_step,
    )
    return record, model


def _report(ctx: RunContext, out: Calibration) -> None:
    if out.held is None:
        ctx.log("calibration: no plan held eps; the search threshold stays at eps")
        return
    best = next(r for r in out.records if r.level == out.held)
    broken = first_broken_above(out.records, out.held)
    if best.proxy_drop is None or (broken is not None and broken.proxy_drop is None):
        ctx.log(f"calibration: the prior's plan at level {out.held:.3f} holds eps")
        return
    ctx.log(
        f"calibration: search threshold tau = {out.tau:.4f} (the prior's plan at level "
        f"{out.held:.3f} holds eps with proxy drop {best.proxy_drop:.4f}"
        + (f"; the next above it broke eps at {broken.proxy_drop:.4f})" if broken else ")")
    )

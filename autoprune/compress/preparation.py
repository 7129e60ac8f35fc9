"""Preparing the search: unit ranges (from a sensitivity analysis, if asked), the allocation
prior, the calibrated threshold, and the level range the study samples.

The :class:`~autoprune.compress.records.Preparation` is stored with the study, so a
resumed study searches the same space.

    >>> searched_levels(held=0.5, broken=0.75)
    (0.35, 0.8)
    >>> searched_levels(held=None, broken=None)
    (0.0, 1.0)
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..schemes import Compose, Prune, Quantize, Scheme
from ..schemes.structured import StructuredPrune
from .allocation import sensitivity_prior
from .bounds import Bounds
from .calibration import Calibration, calibrate
from .context import RunContext, TimeBudget
from .options import CalibrationOptions, ProxyOptions
from .proxy import ProxyScorer
from .records import LevelRecord, Preparation, first_broken_above
from .refinement import next_level
from .sensitivity import Sensitivity, SensitivityOptions, TooSlow, analyze
from .shape import (
    Projection,
    plan_cost,
    reference_shapes,
    room_for_study,
    study_keep,
    width_for,
)
from .space import SearchSpace, Unit, operator_of


@dataclass(frozen=True)
class SearchSetup:
    """How the search is set up, as the constructor was given it (checked there)."""

    space: str
    prior: str
    warm_start: tuple[float, ...]
    bounds: Bounds
    proxy: ProxyOptions
    calibration: CalibrationOptions
    sensitivity: SensitivityOptions
    refine: bool = True  # whether the run refines its result (the study leaves it time)


@dataclass
class Prepared:
    """A fresh preparation, and what making it left behind: the phases it timed and the
    calibration's recovered models (reused by the finalists)."""

    preparation: Preparation
    phases: dict[str, float] = field(default_factory=dict)
    calibration: Calibration | None = None
    notes: list[str] = field(default_factory=list)


def layer_prune(scheme: Scheme | None) -> Prune | None:
    """The scheme's per-layer unstructured pruning when that is all it searches (alone, or
    composed with operators that have nothing to search, such as ``quantize``)."""
    if isinstance(scheme, Compose):
        searched = [s for s in scheme.schemes if not isinstance(s, Quantize)]
        scheme = searched[0] if len(searched) == 1 else None
    return scheme if isinstance(scheme, Prune) and scheme.scope == "layer" else None


PRIORS = ("auto", "uniform", "global", "sensitivity")
SENSITIVITY_SHARE = 0.25  # of the timeout, for an analysis that only makes the prior


def fallback_prior(scheme: Scheme | None) -> str:
    """The prior a sensitivity prior gives way to when its analysis would not fit the
    timeout: the scheme's ``"auto"`` prior (:func:`resolve_prior`), a global magnitude
    ranking for unstructured pruning, else uniform.

    Both halves are measured in the benchmark suite's 15-minute runs (docs/benchmarks.md).
    Channels: the global ranking's prior lost to uniform as the fallback (+7% on the
    DenseNet, -10% on the MobileNet, -18% on the ResNet-10 beside a busy process).
    Weights: the ResNet-10's stored size fell back to uniform and reached 4.92x where
    ``global_unstructured`` reached 10.88x and uniform's own bisection 5.29x.

        >>> from autoprune.schemes import FilterPrune, Prune
        >>> fallback_prior(Prune()), fallback_prior(FilterPrune())
        ('global', 'uniform')
    """
    return resolve_prior("auto", scheme)


def prior_used(prior: str, preparation: Preparation, scheme: Scheme | None) -> str:
    """The prior a run used: the resolved ``prior``, or :func:`fallback_prior` where a
    sensitivity prior's analysis did not fit (its ``preparation`` then holds none).

        >>> from autoprune.schemes import FilterPrune
        >>> prepared = Preparation(units=[], tau=0.01, warm=[])
        >>> prior_used("sensitivity", prepared, FilterPrune())
        'uniform'
        >>> prior_used("global", prepared, FilterPrune())
        'global'
    """
    if prior == "sensitivity" and not preparation.sensitivity:
        return fallback_prior(scheme)
    return prior


def resolve_prior(prior: str, scheme: Scheme | None) -> str:
    """``"auto"``: a global magnitude ranking for unstructured pruning, else uniform."""
    if prior != "auto":
        return prior
    return "global" if layer_prune(scheme) is not None else "uniform"


def searched_levels(held: float | None, broken: float | None) -> tuple[float, float]:
    """The level range the study samples: from a little below the calibration's held level
    to just past the first level above it that broke eps (all of [0, 1] without one)."""
    if held is None:
        return (0.0, 1.0)
    top = broken + 0.05 if broken is not None else held + 0.3
    return (round(max(0.0, held - 0.15), 6), round(min(1.0, top), 6))


def shape_target(held: float | None, broken: float | None, records: Sequence[LevelRecord]) -> float:
    """The shape space's target level: the next level the calibration's bisection would
    try, above the most pruned level that ``held`` eps and below the first above it that
    broke (``broken``); with none held, halfway below the least pruned that broke (a
    plan known to break is no target); without a calibration, 0.5.

    >>> shape_target(0.25, 0.5, []), shape_target(None, None, [])
    (0.375, 0.5)
    >>> from autoprune.compress.records import LevelRecord
    >>> shape_target(None, None, [LevelRecord(0.5, 0.45, 0.07, False)])
    0.25
    """
    if held:
        return next_level(held, broken, 1.0)
    below = first_broken_above(records, 0.0)
    return next_level(0.0, below.level, 1.0) if below is not None else 0.5


def structured(scheme: Scheme | None) -> StructuredPrune | None:
    """The scheme's channel or neuron pruning when that is all it searches."""
    if isinstance(scheme, Compose):
        searched = [s for s in scheme.schemes if not isinstance(s, Quantize)]
        scheme = searched[0] if len(searched) == 1 else None
    return scheme if isinstance(scheme, StructuredPrune) else None


def _importance(ctx: RunContext, units: list[Unit]) -> dict[str, torch.Tensor]:
    """What one global ranking compares: every weight's magnitude (``prune``), or every
    channel's criterion score divided by its group's mean score, as Torch-Pruning's
    global pruning normalises groups of different fan-in (channel pruning)."""
    if layer_prune(ctx.scheme) is not None:
        return {u.name: _weight(ctx.original, u.layer).detach().abs().flatten() for u in units}
    op = structured(ctx.scheme)
    if op is None:
        return {}
    scores = op.channel_importance(copy.deepcopy(ctx.original), ctx.example_input)
    names = {u.layer: u.name for u in units}
    return {
        names[root]: (s / s.mean().clamp_min(1e-12)).flatten()
        for root, s in scores.items()
        if root in names
    }


def global_prior(ctx: RunContext, units: list[Unit]) -> dict[str, list[float]]:
    """Per-unit positions that follow one global magnitude ranking, per level.

    At level ``l`` the weights (or channels) of all units are ranked together and the
    smallest ``l * max(high)`` of them removed; each unit's resulting sparsity, as a
    position in its range, is its prior value. Big layers with many small weights are
    pruned harder than small ones, as global magnitude pruning does.
    """
    mags = _importance(ctx, units)
    if not mags:
        return {}
    units = [u for u in units if u.name in mags]
    everything = torch.cat(list(mags.values())).sort().values
    top = max(u.high for u in units)
    prior: dict[str, list[float]] = {u.name: [] for u in units}
    for k in range(21):
        target = k / 20 * top
        n = int(round(target * everything.numel()))
        cut = everything[n - 1] if n > 0 else -1.0
        for u in units:
            s = float((mags[u.name] <= cut).float().mean())
            pos = (s - u.low) / (u.high - u.low) if u.high > u.low else 0.0
            prior[u.name].append(round(min(1.0, max(0.0, pos)), 6))
    return prior


def alternatives(
    ctx: RunContext, units: list[Unit], prior: dict[str, list[float]]
) -> dict[str, dict[str, list[float]]]:
    """The allocations besides the ``prior`` (its table; ``{}`` is uniform) whose shapes
    the shape space's study scores too: uniform, and the global ranking where the scheme
    has one."""
    out: dict[str, dict[str, list[float]]] = {}
    if prior:
        out["uniform"] = {}
    ranking = global_prior(ctx, units)
    if ranking and ranking != prior:
        out["global"] = ranking
    return out


def _weight(model: torch.nn.Module, layer: str) -> torch.Tensor:
    weight = model.get_submodule(layer).weight
    assert isinstance(weight, torch.Tensor)
    return weight


def sensitivity_bounds(
    ctx: RunContext, units: list[Unit], sens: Sensitivity, options: SensitivityOptions
) -> list[Unit]:
    """Each unit's upper bound where its sensitivity drop stays within the threshold (at
    most its operator's ``sensitivity_cap``)."""
    limit = options.threshold_for(ctx.eps)
    out = []
    for u in units:
        cap = operator_of(ctx.scheme, u.op).sensitivity_cap
        b = sens.bounds(limit, cap=cap).get(u.name)
        out.append(u.with_range(u.low, max(u.low, b[1]) if b else u.high))
    ctx.log(
        f"bounds from sensitivity (drop <= {limit:g}): "
        + ", ".join(f"{u.name} {u.high:.2f}" for u in out)
    )
    return out


def prepare(
    ctx: RunContext,
    units: list[Unit],
    setup: SearchSetup,
    scorer: ProxyScorer,
    budget: TimeBudget,
) -> Prepared:
    """Bounds, prior and calibration (see the module docstring).

    A sensitivity analysis run only for the prior (not for bounds) may take at most
    ``SENSITIVITY_SHARE`` of a timeout: when its first evaluation says it would take
    far longer, or its first unit that it would take longer, it stops there and
    :func:`fallback_prior` is used instead, with a note.
    """
    phases: dict[str, float] = {}
    notes: list[str] = []
    sens, sens_dict, prior_name = None, None, setup.prior
    if setup.bounds.from_sensitivity or setup.prior == "sensitivity":
        t = time.perf_counter()
        sens = _sensitivity(ctx, setup, budget, notes)
        if sens is None:
            prior_name = fallback_prior(ctx.scheme)
        else:
            if setup.bounds.from_sensitivity:
                units = sensitivity_bounds(ctx, units, sens, setup.sensitivity)
            sens_dict = sens.to_dict()
        phases["sensitivity"] = time.perf_counter() - t
    prior: dict[str, list[float]] = {}
    if prior_name == "global":
        prior = global_prior(ctx, units)
    elif prior_name == "sensitivity" and sens is not None:
        prior = sensitivity_prior(ctx, units, sens)
    space = SearchSpace(units, setup.space, prior=prior)
    # the allocations the shape space's study scores beside the prior (ranked once)
    others = alternatives(ctx, space.units, space.prior) if setup.space == "shape" else {}
    calibration = None
    if setup.calibration.active:
        t = time.perf_counter()
        room = _study_room(setup, budget, len(others))
        calibration = calibrate(
            ctx, space, scorer, setup.calibration, setup.proxy, budget, study_room=room
        )
        phases["calibration"] = time.perf_counter() - t
        tau, warm, records = calibration.tau, calibration.levels, calibration.records
    else:
        tau, warm, records = ctx.eps, list(setup.warm_start), []
    level_range = (0.0, 1.0)
    held = calibration.held if calibration is not None else None
    broken = first_broken_above(records, held) if held is not None else None
    if held is not None and setup.space != "independent":
        level_range = searched_levels(held, broken.level if broken else None)
    target = None
    references: dict[str, dict[str, float]] = {}
    if setup.space == "shape":  # the cost every trial matches: the bisection's next level
        target = shape_target(held, broken.level if broken else None, records)
        warm = [target]
        references = _shape_references(ctx, space, target, others)
    preparation = Preparation(
        units=units,
        tau=tau,
        warm=warm,
        level_range=level_range,
        calibration=records,
        prior=prior,
        sensitivity=sens_dict,
        target_level=target,
        references=references,
    )
    return Prepared(preparation, phases, calibration, notes)


def _study_room(
    setup: SearchSetup, budget: TimeBudget, references: int
) -> Callable[[Sequence[LevelRecord]], str | None] | None:
    """In the shape space with a timeout, why no study could follow the calibration so
    far (:func:`~autoprune.compress.shape.room_for_study`), for a study that also scores
    ``references`` reference shapes; None elsewhere, where the study always runs and the
    calibration's proxy drops set its threshold."""
    if setup.space != "shape" or budget.timeout is None:
        return None
    keep = study_keep(setup.proxy, references)
    return functools.partial(room_for_study, budget, keep=keep, refining=setup.refine)


def _shape_references(
    ctx: RunContext, space: SearchSpace, target: float, others: dict[str, dict[str, list[float]]]
) -> dict[str, dict[str, float]]:
    """The shape space's reference shapes, of the ``others`` allocations
    (:func:`alternatives`), at the cost of the prior's plan at ``target``."""
    ctx.log(f"shape: every trial costs what the prior's plan at level {target:.4f} costs")
    projection = Projection(space, plan_cost(ctx), target)
    references = reference_shapes(space, projection, others)
    if references:
        ctx.log(
            "shape: the study also scores the "
            + " and ".join(references)
            + f" shapes (offsets within +-{width_for(references):g})"
        )
    return references


def _sensitivity(
    ctx: RunContext, setup: SearchSetup, budget: TimeBudget, notes: list[str]
) -> Sensitivity | None:
    """The analysis the setup gives, else one run here; None (with a note) when one run
    only for the prior would take more than ``SENSITIVITY_SHARE`` of the timeout."""
    if setup.bounds.sensitivity is not None:
        return setup.bounds.sensitivity
    limit = None
    if not setup.bounds.from_sensitivity and budget.timeout is not None:
        limit = SENSITIVITY_SHARE * budget.timeout
    try:
        return _analyze(ctx, setup.sensitivity, limit)
    except TooSlow as slow:
        notes.append(
            f"prior: the sensitivity analysis would take {slow} "
            f"({SENSITIVITY_SHARE:.0%} of the timeout); the "
            f"{fallback_prior(ctx.scheme)} prior was used instead (fewer "
            "sensitivity levels or a longer timeout would allow it)"
        )
        ctx.log(notes[-1])
        return None


def _analyze(
    ctx: RunContext, options: SensitivityOptions, limit: float | None = None
) -> Sensitivity:
    levels = ", ".join(f"{lv:g}" for lv in options.levels)
    ctx.log(
        f"sensitivity analysis at levels {levels}"
        + (f" (within {limit:.0f} s)" if limit is not None else "")
    )
    return analyze(
        ctx.original,
        ctx.scheme,
        ctx.loaders,
        ctx.example_input,
        options,
        accuracy=ctx.accuracy,
        seed=ctx.seed,
        progress=ctx.progress,
        log=ctx.log,
        limit=limit,
    )

"""The shape search (``space="shape"``): where to prune, at one fixed cost.

How far a plan can be pruned and still hold eps is settled by real recoveries (the
calibration's and the refinement's); which units should carry that pruning is what the
study settles. So in this space a trial proposes only per-unit ``offsets`` from the
allocation prior, and its global level is not searched: it is set so that the plan
costs what the prior's plan at the *target level* costs (:class:`Projection`; the
target is the next level the calibration's bisection would try, between the most
pruned level that held eps and the first that broke it). Every trial then costs the
same, and the study maximises the proxy's accuracy alone. The proxy's bias (it
underestimates recovery, more so the more is pruned) is the same for plans of equal
cost, so what is left for it to rank is the shape.

The study also scores the shapes other allocations give at that cost (the uniform
plan's, the global ranking's: :func:`reference_shapes`), so it starts from what the
usual baselines would return. The best of many noisy scores is biased upwards, so the
leaders are scored again with a fine-tuning ``RUNG`` times longer (:func:`rescored`),
the prior's own shape and the references among them, and the best of that rung is the
first finalist; the calibrated plan (its recovered
model reused) follows it. The refinement then raises the chosen shape's level while it
holds eps, as in the other spaces.

The cost is the objective's own exact metric (MACs, size, parameters), or MACs for a
timing; a ratio to the original's, smaller is more compressed:

    >>> from autoprune.compress.space import SearchSpace, Unit
    >>> space = SearchSpace([Unit("a", 10), Unit("b", 10)], "shape")
    >>> cost = lambda s: 1.0 - (s["a"] + 3 * s["b"]) / 4  # b saves three times as much
    >>> p = Projection(space, cost, target_level=0.5)
    >>> round(p.target, 3), round(p.level({"offset_000": 0.0, "offset_001": 0.0}), 3)
    (0.55, 0.5)
    >>> level = p.level({"offset_000": 0.3, "offset_001": -0.1})  # b less, a more
    >>> s = space.from_params({"offset_000": 0.3, "offset_001": -0.1, "level": level})
    >>> round(cost(s), 2), s["b"] < 0.45 < s["a"]
    (0.55, True)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from ..errors import TrialFault
from ..objectives.base import Metric
from ..objectives.builtins import macs
from .context import RunContext, TimeBudget
from .finalists import Candidate
from .options import ProxyOptions
from .proxy import ProxyScorer, pruned_copy
from .records import LevelRecord
from .space import WIDTH, SearchSpace, plan_key

LEADERS = 3  # the best trials scored again at most, besides the prior's and references' shapes
RUNG = 3  # their fine-tuning, in multiples of the proxy's
STEPS = 14  # costs measured at most per shape, besides the two ends
MIN_TRIALS = 4  # the fewest trials a study is run for: enough for one leader
TOLERANCE = 0.005  # a shape costs at most the target, and at most this much less


def cost_metric(ctx: RunContext) -> tuple[Metric, float]:
    """The exact metric that measures a plan's cost, and its sign: the first exact
    objective (``+1`` when it is minimised, ``-1`` when maximised), else MACs (``+1``;
    a timing is too noisy to match costs by)."""
    for o in ctx.objectives:
        if o.metric.deterministic:
            return o.metric, (1.0 if o.direction == "minimize" else -1.0)
    return macs, 1.0


def plan_cost(ctx: RunContext) -> Callable[[Mapping[str, float]], float]:
    """``cost(sparsities)``: the cost metric of the plan over the original's (smaller is
    more compressed; for a maximised metric, the original's over the plan's)."""
    metric, sign = cost_metric(ctx)
    base = float(metric(ctx.original, ctx.example_input))

    def cost(sparsities: Mapping[str, float]) -> float:
        scheme = ctx.scheme.with_sparsities(sparsities)
        model, _, _ = pruned_copy(ctx.original, scheme, ctx.example_input)
        value = float(metric(model, ctx.example_input))
        ratio = value / base if base else 1.0
        return ratio if sign > 0 else (1.0 / ratio if ratio else math.inf)

    return cost


class Projection:
    """The global level that gives a shape (per-unit offsets) the target cost.

    ``target`` is the cost of the prior's own plan (no offsets) at ``target_level``;
    :meth:`level` is the lowest level at which the shape costs at most that (the cost
    falls as the level rises), found by :func:`solve`; 1 when even the top of every range
    costs more. Costs are remembered by plan.
    """

    def __init__(
        self,
        space: SearchSpace,
        cost: Callable[[Mapping[str, float]], float],
        target_level: float,
    ) -> None:
        self.space, self._cost, self.target_level = space, cost, float(target_level)
        self._seen: dict[tuple, float] = {}
        self.target = self.cost({**self.zero(), "level": self.target_level})

    def zero(self) -> dict[str, float]:
        """The prior's own shape: every offset 0."""
        return {k: 0.0 for k in self.space.offset_keys()}

    def cost(self, params: Mapping[str, float]) -> float:
        """The cost of the plan with these parameters (offsets and level)."""
        return self.cost_of(self.space.from_params(dict(params)))

    def cost_of(self, sparsities: Mapping[str, float]) -> float:
        """The cost of a plan given by its per-unit sparsities."""
        key = plan_key(sparsities)
        if key not in self._seen:
            self._seen[key] = self._cost(sparsities)
        return self._seen[key]

    def level(self, offsets: Mapping[str, float], target: float | None = None) -> float:
        """A level at which the shape ``offsets`` costs at most ``target`` (default:
        :attr:`target`) and no more than ``TOLERANCE`` of it less; 1 when even the top
        costs more (see :func:`solve`)."""
        goal = self.target if target is None else target
        return solve(
            lambda level: self.cost({**offsets, "level": level}), goal, guess=self.target_level
        )


def solve(cost_at: Callable[[float], float], goal: float, guess: float | None = None) -> float:
    """A level in [0, 1] at which ``cost_at`` (falling with the level, smoothly but for
    the steps that rounding makes) is at most ``goal`` and no more than ``TOLERANCE`` of
    it less: ``guess`` when it is one, else the one regula falsi (Illinois, bracketed by
    0 and 1) reaches in a few costs; 1 when even 1 costs more, 0 when 0 already fits.

    >>> round(solve(lambda level: 1.0 - level**2, 0.75), 2)
    0.5
    >>> solve(lambda level: 1.0 - level**2, 0.75, guess=0.501)  # in the band: kept
    0.501
    """

    def gap(level: float) -> float:
        return cost_at(level) - goal

    lo, hi = 0.0, 1.0
    g_lo, g_hi = gap(lo), gap(hi)
    if g_hi > 0:
        return hi
    if g_lo <= 0:
        return lo
    if guess is not None and 0.0 < guess < 1.0:
        g = gap(guess)
        if -TOLERANCE * goal <= g <= 0:
            return round(guess, 6)
    side = 0
    for _ in range(STEPS):
        if g_hi >= -TOLERANCE * goal or hi - lo < 1e-4:
            break
        mid = hi - g_hi * (hi - lo) / (g_hi - g_lo)
        if not lo + 1e-6 < mid < hi - 1e-6:
            mid = (lo + hi) / 2
        g = gap(mid)
        if g <= 0:
            hi, g_hi = mid, g
            g_lo, side = (g_lo / 2 if side == -1 else g_lo), -1
        else:
            lo, g_lo = mid, g
            g_hi, side = (g_hi / 2 if side == 1 else g_hi), 1
    return round(hi, 6)


def reference_shapes(
    space: SearchSpace,
    projection: Projection,
    allocations: Mapping[str, Mapping[str, Sequence[float]]],
) -> dict[str, dict[str, float]]:
    """Other allocations' plans at the target cost, as offsets from the prior's plan at
    the target level: what the study scores besides its own shapes, so that it never
    does worse than a plain allocation its proxy can tell apart (``{}`` in an allocation
    is uniform: every unit at the same point of its range).

    Each allocation's level is set so that its plan costs the target; its positions
    less the prior's are the offsets, which may be wider than the space's width
    (:func:`width_for` widens it), so the trial's projection finds the allocation's plan
    at the target level. An allocation that is the prior's own shape, or that cannot
    reach the target cost, is left out.
    """
    here = {u.name: space.position(u.name, projection.target_level) for u in space.units}
    out: dict[str, dict[str, float]] = {}
    for name, table in allocations.items():
        other = SearchSpace(space.units, "uniform", prior={k: list(v) for k, v in table.items()})
        cost_at = functools.partial(_cost_at, projection, other)
        level = solve(cost_at, projection.target, guess=projection.target_level)
        if cost_at(level) > projection.target * (1 + 1e-9):
            continue  # even the allocation's top costs more than the target
        offsets = {
            key: round(other.position(u.name, level) - here[u.name], 6)
            for key, u in zip(space.offset_keys(), space.units)
        }
        if any(abs(v) > 1e-3 for v in offsets.values()) and offsets not in out.values():
            out[name] = offsets
    return out


def describe(ctx: RunContext, space: SearchSpace, sampler: str) -> str:
    """The log line that opens a study in the shape space."""
    metric, _ = cost_metric(ctx)
    level = space.projection.target_level if space.projection is not None else 0.5
    return (
        f"search: {len(space.units)} units (shape space, {sampler} sampler): every plan "
        f"at the {metric.describe()} of the prior's plan at level {level:.4f}; maximise "
        "the proxy accuracy"
    )


def ranked_shapes(study: optuna.Study, target: float) -> list[optuna.trial.FrozenTrial]:
    """The complete trials scored at a cost of at most ``target`` (a shape whose every
    unit is at the top of its range may cost more), by proxy accuracy, best first; of
    equal accuracy, the cheaper first."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("accuracy") is not None
        and float(t.user_attrs.get("cost", 0.0)) <= target * (1 + 1e-9)
    ]
    return sorted(
        done, key=lambda t: (-float(t.user_attrs["accuracy"]), float(t.user_attrs["cost"]))
    )


def leaders(trials: int) -> int:
    """How many of ``trials`` scored trials are scored again: one per four, at most
    ``LEADERS`` (the best of a few noisy scores is little biased; of many, much more).

    >>> [leaders(n) for n in (3, 4, 9, 40)]
    [0, 1, 2, 3]
    """
    return min(LEADERS, trials // 4)


def kept(trials: int, references: int = 0) -> float:
    """The time the study keeps for scoring its leaders again, in trials' durations, after
    ``trials`` trials (the prior's shape and the ``references`` are scored again too);
    none while there is no leader yet (nothing is scored again then).

    >>> kept(3, references=2), kept(4, references=2)
    (0, 12)
    """
    top = leaders(trials)
    return (top + 1 + references) * RUNG if top else 0


def reference(trial: optuna.trial.FrozenTrial) -> str | None:
    """What a trial that is no sampled shape stands for: ``"prior"`` (the prior's own
    shape, the warm start), a reference allocation's name, or None."""
    if trial.user_attrs.get("reference") is not None:
        return str(trial.user_attrs["reference"])
    return "prior" if trial.user_attrs.get("warm_start") is not None else None


def second_rung(
    order: Sequence[optuna.trial.FrozenTrial], fits: Callable[[float], bool]
) -> list[optuna.trial.FrozenTrial]:
    """Who :func:`rescored` scores again: the :func:`leaders` best of ``order``, then the
    prior's and the references' shapes (:func:`reference`) in ``order`` while their time
    (``RUNG`` times each one's proxy seconds) ``fits``; none when the leaders' does not.

    >>> from optuna.trial import create_trial
    >>> order = [create_trial(value=0.9, user_attrs=a) for a in (
    ...     {"seconds": 10}, {"seconds": 10}, {"seconds": 10, "reference": "global"},
    ...     {"seconds": 10}, {"seconds": 10, "warm_start": 0.5})]
    >>> [reference(t) for t in second_rung(order, lambda s: True)]  # leaders(5) is 1
    [None, 'global', 'prior']
    >>> len(second_rung(order, lambda s: s <= 60)), second_rung(order, lambda s: s < 30)
    (2, [])
    """
    top = leaders(len(order))
    leading: list[optuna.trial.FrozenTrial] = []
    seconds = 0.0
    for k, t in enumerate(order):
        if k >= top and reference(t) is None:
            continue
        more = RUNG * float(t.user_attrs.get("seconds") or 0.0)
        if not fits(seconds + more):
            if k < top:
                return []
            continue
        leading.append(t)
        seconds += more
    return leading


def rescored(
    ctx: RunContext,
    order: Sequence[optuna.trial.FrozenTrial],
    options: ProxyOptions,
    fits: Callable[[float], bool] = lambda seconds: True,
) -> list[optuna.trial.FrozenTrial]:
    """The :func:`leaders` best trials of ``order``, then the prior's own shape (the warm
    start) and the reference shapes (:func:`reference`) as far as the time allows
    (``fits(seconds)``), scored again with ``RUNG`` times the proxy's fine-tuning, best
    first by that score; then the rest of ``order``. Without fine-tuning in the proxy,
    without a leader, or when the leaders' own time does not fit, ``order`` itself."""
    if options.finetune_epochs <= 0:
        return list(order)
    leading = second_rung(order, fits)
    if not leading:
        if leaders(len(order)):
            ctx.log("shape: the leaders are not scored again; their time would not fit")
        return list(order)
    longer = dataclasses.replace(options, finetune_epochs=options.finetune_epochs * RUNG)
    scorer = ProxyScorer(ctx, longer, tau=math.inf)
    score = {}
    for t in leading:
        try:
            score[t.number] = scorer.score(t.user_attrs["sparsities"]).accuracy
        except TrialFault:  # a plan the longer fine-tuning breaks is no leader
            score[t.number] = -math.inf
    again = sorted(leading, key=lambda t: -score[t.number])
    ctx.log(
        f"shape: {len(leading)} shape(s) scored again with {longer.finetune_epochs:g} "
        "epoch(s) of fine-tuning: "
        + ", ".join(
            f"trial {t.number}{f' ({reference(t)})' if reference(t) else ''} "
            f"{t.user_attrs['accuracy']:.4f} -> {score[t.number]:.4f}"
            for t in again
        )
    )
    return again + [t for t in order if t not in leading]


def anchor(space: SearchSpace, held: float | None) -> list[Candidate]:
    """The calibrated plan (the prior's shape at the most pruned level that held eps) as
    a finalist, after the study's: in the shape space it is no trial."""
    if held is None:
        return []
    params = space.uniform_params(held)
    label = f"the calibrated plan (level {held:.4f})"
    return [Candidate(None, space.from_params(params), held, params, label)]


def broken_levels(
    calibration: Sequence[LevelRecord],
    space: SearchSpace,
    params: Mapping[str, float],
    target_broke: bool = False,
) -> list[float]:
    """Levels of the plan ``params`` taken to break eps, for its refinement: the
    calibration's that broke; for another shape than the prior's (the shape space), the
    levels at which that shape costs what those plans cost. ``target_broke``: a study's
    finalist (a plan at the target cost, the best shape the second rung found there)
    broke eps, so the target cost is taken to break this plan too.

    >>> from autoprune.compress.space import SearchSpace, Unit
    >>> space = SearchSpace([Unit("a", 10), Unit("b", 10)], "shape")
    >>> space.projection = Projection(space, lambda s: 1.0 - (s["a"] + s["b"]) / 2, 0.5)
    >>> broken = [LevelRecord(0.75, 0.75, 0.02, False), LevelRecord(0.25, 0.25, 0.0, True)]
    >>> params = space.uniform_params(0.25)
    >>> broken_levels(broken, space, params), broken_levels(broken, space, params, True)
    ([0.75], [0.75, 0.5])
    """
    levels = [r.level for r in calibration if not r.holds]
    offsets = {k: params[k] for k in space.offset_keys()}
    projection = space.projection
    if projection is None:
        return levels
    shaped = any(offsets.values())
    if shaped:
        zero = projection.zero()
        levels = [
            projection.level(offsets, projection.cost({**zero, "level": lv})) for lv in levels
        ]
    if target_broke:
        levels.append(projection.level(offsets) if shaped else projection.target_level)
    return levels


def trial_seconds(study: optuna.Study, calibration: Sequence[LevelRecord]) -> float | None:
    """How long one trial takes: the mean of the study's complete trials, else of the
    calibration's proxy scorings (:func:`scoring_seconds`); None: unknown."""
    done = [
        float(t.user_attrs["seconds"])
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("seconds")
    ]
    return sum(done) / len(done) if done else scoring_seconds(calibration)


def scoring_seconds(calibration: Sequence[LevelRecord]) -> float | None:
    """The mean time the calibration's proxy scorings took (a step's time less its
    recovery's, over the steps the proxy scored); None: none timed.

    >>> scored = LevelRecord(0.5, 0.45, 0.004, True, proxy_drop=0.02, recovery_seconds=60,
    ...                      seconds=75)
    >>> unscored = LevelRecord(0.6, 0.54, 0.006, True, recovery_seconds=60, seconds=62)
    >>> scoring_seconds([scored, unscored]), scoring_seconds([unscored])
    (15.0, None)
    """
    done = [
        r.seconds - r.recovery_seconds
        for r in calibration
        if r.proxy_drop is not None
        and r.recovery_seconds is not None
        and r.seconds > r.recovery_seconds
    ]
    return sum(done) / len(done) if done else None


def study_keep(proxy: ProxyOptions, references: int) -> Callable[[int], float] | None:
    """The time a shape study keeps for its second rung (:func:`kept`, with this many
    ``references``), or None when the proxy has no fine-tuning to lengthen."""
    return functools.partial(kept, references=references) if proxy.finetune_epochs > 0 else None


def room_for_study(
    budget: TimeBudget,
    calibration: Sequence[LevelRecord],
    keep: Callable[[int], float] | None,
    refining: bool,
) -> str | None:
    """:func:`too_short` asked during the calibration, as if it ended now: its recoveries
    so far time a recovery, its proxy scorings a trial. A reason means no study can
    follow this calibration, whatever its remaining steps do (they only take time), so
    its proxy scorings are no longer worth their time.

    >>> budget = TimeBudget(start=0.0, timeout=900.0, clock=lambda: 300.0)
    >>> step = LevelRecord(0.5, 0.45, 0.004, True, proxy_drop=0.02, recovery_seconds=100,
    ...                    seconds=137)
    >>> print(room_for_study(budget, [step], None, refining=True))  # 4 * 37 + 2 * 100
    None
    >>> print(room_for_study(budget, [step], functools.partial(kept, references=1), True))
    ... # doctest: +NORMALIZE_WHITESPACE
    4 trials and their second rung (about 481 s), a finalist's recovery and a
    refinement step (about 200 s) would not fit the 600 s left
    """
    probe = TimeBudget(
        budget.start,
        budget.timeout,
        calibrated=[r.recovery_seconds for r in calibration if r.recovery_seconds is not None],
        clock=budget.clock,
        tail=budget.tail,
    )
    return too_short(probe, scoring_seconds(calibration), keep, refining)


def too_short(
    budget: TimeBudget,
    seconds: float | None,
    keep: Callable[[int], float] | None,
    refining: bool,
) -> str | None:
    """Why no study is run, or None when one fits: ``MIN_TRIALS`` trials of ``seconds``
    each and the time ``keep(trials)`` keeps for their second rung (in trials; see
    :func:`kept`), then a finalist's recovery and, when ``refining``, a refinement step,
    must fit the time left. A study too short to rank shapes takes its time from the
    refinement and gives little for it: its finalist is one more plan at the cost the
    refinement would try first.

    >>> budget = TimeBudget(start=0.0, timeout=300.0, calibrated=[60.0], clock=lambda: 0.0)
    >>> keep = functools.partial(kept, references=2)  # 4 trials keep 12 for their rung
    >>> too_short(budget, 5.0, keep, refining=True) is None  # 80 + 120 <= 300
    True
    >>> print(too_short(budget, 15.0, keep, refining=True))  # doctest: +NORMALIZE_WHITESPACE
    4 trials and their second rung (about 240 s), a finalist's recovery and a
    refinement step (about 120 s) would not fit the 300 s left
    """
    if seconds is None:
        return None
    trials = (MIN_TRIALS + (keep(MIN_TRIALS) if keep is not None else 0)) * seconds
    recoveries = 2 if refining else 1
    if budget.fits(recoveries, extra=trials):
        return None
    left = budget.left()
    return (
        f"{MIN_TRIALS} trials and their second rung (about {trials:.0f} s), a finalist's "
        f"recovery{' and a refinement step' if refining else ''} (about "
        f"{budget.need(recoveries):.0f} s) would not fit the "
        f"{left:.0f} s left"
    )


def width_for(references: Mapping[str, Mapping[str, float]], width: float = WIDTH) -> float:
    """The offsets' width that holds every reference shape: ``width``, or the largest
    reference offset rounded up to a twentieth (at most 1).

    >>> width_for({"global": {"offset_000": -0.52, "offset_001": 0.1}})
    0.55
    """
    widest = max((abs(v) for r in references.values() for v in r.values()), default=0.0)
    return width if widest <= width else min(1.0, math.ceil(widest * 20 - 1e-9) / 20)


def _cost_at(projection: Projection, space: SearchSpace, level: float) -> float:
    return projection.cost_of(space.from_params({"level": level}))

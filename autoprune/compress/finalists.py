"""The finalists: which plans are recovered for real, in which order, and the first that
holds eps.

:func:`select` is a pure function of the ranked trials: the best ``max_attempts - 1``
plans, ending at the calibrated uniform plan when its recovered model is at hand (it
holds eps, so nothing ranked below it is tried), then the best plan at 0.8x and 0.6x
its sparsity.

    >>> order = [Candidate(3, {"a": 0.8}), Candidate(1, {"a": 0.5}), Candidate(0, {"a": 0.2})]
    >>> chosen = select(order, recovered={plan_key({"a": 0.5})}, noisy=False, max_attempts=4)
    >>> [a.label for a in chosen.attempts], chosen.fallback
    (['trial 3', 'trial 1', 'trial 3 at 0.8x its sparsity', 'trial 3 at 0.6x its sparsity'], True)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import optuna
from torch import nn

from ..plan import get_plan
from ..schemes import materialize
from .context import RunContext, TimeBudget
from .proxy import pruned_copy
from .space import SearchSpace, plan_key


@dataclass(frozen=True)
class Candidate:
    """A plan that may be recovered: its trial's number (None for a plan that is no
    trial, such as the calibrated plan in the shape space), its per-unit sparsities, and
    its parameters in the search space (what the refinement raises the level of)."""

    number: int | None
    sparsities: Mapping[str, float]
    warm_start: float | None = None
    params: Mapping[str, float] | None = None
    name: str | None = None

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> Candidate:
        return cls(
            trial.number,
            trial.user_attrs["sparsities"],
            trial.user_attrs.get("warm_start"),
            SearchSpace.params_of(trial),
            (
                f"trial {trial.number} ({trial.user_attrs['reference']} shape)"
                if trial.user_attrs.get("reference") is not None
                else None
            ),
        )

    @property
    def label(self) -> str:
        return self.name or f"trial {self.number}"


@dataclass(frozen=True)
class Attempt:
    """A plan to recover: how the log names it, its trial (None for a scaled-down plan or
    a plan that is no trial), its parameters (None for a scaled-down plan)."""

    label: str
    number: int | None
    sparsities: Mapping[str, float]
    params: Mapping[str, float] | None = None

    @property
    def scaled(self) -> bool:
        """Whether this is a trial's plan scaled down (no trial, no parameters)."""
        return self.number is None and self.params is None


@dataclass(frozen=True)
class Finalists:
    """The attempts in order; ``fallback``: they end at a plan recovered during calibration."""

    attempts: list[Attempt]
    fallback: bool


def select(
    order: Sequence[Candidate], recovered: Collection[tuple], noisy: bool, max_attempts: int
) -> Finalists:
    """The finalists of ``order`` (best first; see the module docstring).

    With a timing objective (``noisy``), the most pruned calibration plan that held
    dominates the others that held (the same shape, pruned less): noise must not rank one
    above it, so those are skipped.
    """
    held = max(recovered, key=lambda k: sum(v for _, v in k), default=None)
    attempts: list[Attempt] = []
    fallback = False
    for cand in order:
        key = plan_key(cand.sparsities)
        fallback = key in recovered
        if noisy and fallback and key != held:
            fallback = False
            continue
        if fallback or len(attempts) < max(1, max_attempts - 1):
            attempts.append(Attempt(cand.label, cand.number, cand.sparsities, cand.params))
        if fallback:
            break
    if order:
        best = order[0]
        for factor in (0.8, 0.6):
            scaled = {k: round(v * factor, 6) for k, v in best.sparsities.items()}
            attempts.append(Attempt(f"{best.label} at {factor:g}x its sparsity", None, scaled))
    return Finalists(attempts, fallback)


@dataclass
class Recovered:
    """A plan recovered and checked on the validation split.

    ``drop`` is measured from the original's float32 accuracy; when the model is deployed
    in a lower precision, it is the larger of the drops of ``accuracy`` and ``deployed``
    (the accuracy in that precision).
    """

    model: nn.Module
    accuracy: float
    drop: float
    note: str | None = None  # why the model stayed masked, if it did
    deployed: float | None = None

    def describe(self, deployment: str) -> str:
        """``val 0.9100 (drop +0.0050)``, with the deployed accuracy when there is one."""
        text = f"val {self.accuracy:.4f}"
        if self.deployed is not None:
            text += f", {deployment} val {self.deployed:.4f}"
        return f"{text} (drop {self.drop:+.4f})"


def recover_plan(
    ctx: RunContext,
    budget: TimeBudget,
    sparsities: Mapping[str, float],
    model: nn.Module | None = None,
) -> Recovered:
    """Recover a plan (unless its recovered ``model`` is given), make it physical where the
    scheme allows, and check it on the validation split."""
    if model is None:
        t = time.perf_counter()
        model = ctx.recovery.recover(
            ctx.original,
            ctx.scheme.with_sparsities(sparsities),
            ctx.loaders,
            ctx.example_input,
            seed=ctx.seed,
            progress=ctx.progress,
            log=ctx.log,
        )
        budget.record(time.perf_counter() - t)
    made = materialize(model, ctx.example_input)
    note = None
    if made.physical:
        model = made.model
    elif get_plan(model).groups and made.reason:
        note = f"kept the masked model: {made.reason}"
    acc = float(ctx.accuracy(model, ctx.loaders.val))
    drop, deployed = ctx.drop(acc), None
    if ctx.base_deployed is not None:
        deployed = float(ctx.accuracy(ctx.deployment.evaluated(model), ctx.loaders.val))
        drop = max(drop, ctx.drop(deployed))
    return Recovered(model, acc, drop, note, deployed)


@dataclass
class Outcome:
    """What recovering the finalists gave: the first that held eps, if one did."""

    recovered: Recovered | None = None
    attempt: Attempt | None = None  # the one that held
    notes: list[str] = field(default_factory=list)
    tried: list[tuple[Attempt, Recovered]] = field(default_factory=list)  # recovered here

    @property
    def chosen(self) -> int | None:
        """The trial whose plan held (None: none did, or the plan that held is no trial)."""
        return self.attempt.number if self.attempt is not None else None


def spare_recoveries(outcome: Outcome, max_attempts: int) -> int:
    """The finalist recoveries that ``max_attempts`` allowed and the finalists left unspent:
    ``max_attempts - 1`` (one attempt is the calibrated plan's, whose model is reused),
    less those recovered. The refinement spends them, so that none is left unused when
    the first finalist holds or no study ran, and the run never recovers more plans than
    ``max_attempts + refine``.

    >>> spare_recoveries(Outcome(), max_attempts=2)  # nothing recovered: no study ran
    1
    >>> spare_recoveries(Outcome(), max_attempts=1)
    0
    """
    return max(0, max_attempts - 1 - len(outcome.tried))


def recover_finalists(
    ctx: RunContext,
    budget: TimeBudget,
    finalists: Finalists,
    recovered: Mapping[tuple, nn.Module],
    max_attempts: int,
    refining: bool,
) -> Outcome:
    """Recover the finalists in order until one holds eps.

    A plan recovered during calibration is reused. At most ``max_attempts`` are recovered;
    once a plan that holds is at hand (``fallback``), a further one is recovered only while
    it and, when ``refining``, a refinement step fit the time left.
    """
    out = Outcome()
    tried = 0
    need = 2 if refining else 1
    for attempt in finalists.attempts:
        model = recovered.get(plan_key(attempt.sparsities))
        if model is not None:
            ctx.log(f"{attempt.label} was recovered during calibration; reusing that model")
        elif tried >= max_attempts:
            continue
        elif attempt.scaled and _removes_nothing(ctx, attempt.sparsities):
            out.notes.append(
                f"{attempt.label} removes nothing once channel counts are rounded "
                "(round_to); not recovered"
            )
            ctx.log(out.notes[-1])
            continue
        elif tried and finalists.fallback and not budget.fits(need):
            ctx.log(
                f"{attempt.label} is not recovered: the time left is less than about "
                f"{need} recoveries' worth (about {budget.need(need):.0f} s)"
            )
            continue
        else:
            tried += 1
            ctx.log(f"recovery ({ctx.recovery.name}) of {attempt.label}")
        got = recover_plan(ctx, budget, attempt.sparsities, model)
        if model is None:
            out.tried.append((attempt, got))
        if got.note and got.note not in out.notes:
            out.notes.append(got.note)
        if got.drop <= ctx.eps:
            out.recovered, out.attempt = got, attempt
            ctx.log(f"recovered {attempt.label}: {got.describe(ctx.deployment.dtype)} within eps")
            break
        out.notes.append(
            f"{attempt.label}: recovered {got.describe(ctx.deployment.dtype)} breaks eps "
            f"({got.drop:.4f} > {ctx.eps:g}); backing off"
        )
        ctx.log(out.notes[-1])
    if out.recovered is None:
        if finalists.attempts:
            out.notes.append("no plan kept accuracy within eps after recovery")
        out.notes.append("the original model is returned, uncompressed (not feasible)")
    return out


def _removes_nothing(ctx: RunContext, sparsities: Mapping[str, float]) -> bool:
    """Whether the scheme, at ``sparsities``, removes nothing from the original (a plan
    scaled down below one multiple of ``round_to`` in every group)."""
    model = copy.deepcopy(ctx.original)
    plan = ctx.scheme.with_sparsities(sparsities).apply(model, ctx.example_input)
    removed = sum(len(g.removed) for g in plan.groups.values())
    removed += sum(e.removed for e in plan.layers)
    return removed == 0 and not plan.quantized


def remeasure(
    ctx: RunContext,
    order: list[optuna.trial.FrozenTrial],
    held: Collection[float],
    top: int = 5,
) -> list[optuna.trial.FrozenTrial]:
    """Re-time the best few trials carefully when the one objective is a timing.

    A handful of interleaved rounds per trial is enough to steer the search, but the best
    of many noisy measurements is biased upwards; the leaders are measured again with
    many rounds and re-ordered before one is recovered. The calibrated uniform plans that
    held eps (levels ``held``) are always among them, so a noisy search cannot end below
    them.
    """
    objectives = ctx.objectives
    if len(objectives) != 1 or objectives[0].metric.deterministic or len(order) < 2:
        return order
    obj = objectives[0]
    anchors = [tr for tr in order[top:] if tr.user_attrs.get("warm_start") in held and held]
    order = order[:top] + anchors + [tr for tr in order[top:] if tr not in anchors]
    top += len(anchors)
    careful = {}
    for tr in order[:top]:
        scheme = ctx.scheme.with_sparsities(tr.user_attrs["sparsities"])
        model, _, _ = pruned_copy(ctx.original, scheme, ctx.example_input)
        careful[tr.number] = obj.metric.ratio(model, ctx.original, ctx.example_input, careful=True)
    sign = 1.0 if obj.direction == "maximize" else -1.0
    leaders = sorted(order[:top], key=lambda tr: -sign * careful[tr.number])
    ctx.log(
        f"re-measured the {len(leaders)} best trials carefully: "
        + ", ".join(f"trial {tr.number} {careful[tr.number]:.3g}x" for tr in leaders)
    )
    return leaders + order[top:]

"""``Compressor``: search per-layer sparsities under an accuracy budget, recover, measure.

    >>> import autoprune as ap
    >>> from autoprune import objectives
    >>> data = ap.load_data("digits")
    >>> model = ap.create_model("mlp", data.num_classes, data.input_shape, hidden=(32,))
    >>> _ = ap.train(model, data.loaders(64).train, epochs=5, seed=0)
    >>> c = ap.Compressor(model, objectives.Minimize(objectives.params), eps=0.05,
    ...                   scheme=ap.Prune(), data=data, n_trials=4,
    ...                   recovery=ap.FineTune(epochs=1), progress=False)
    >>> result = c.run()
    >>> result.feasible and result.after["nonzero_params"] < result.before["nonzero_params"]
    True

The flow (see ``docs/search.md``), one stage each:

1. measure the original (validation and test accuracy, size, MACs, speed);
2. prepare the search (:mod:`.preparation`): unit ranges, the allocation prior, and a
   bisection over uniform plans, each recovered for real, that calibrates the threshold
   the search's cheap proxy is held to; then an Optuna study (:mod:`.study`) proposes
   per-unit sparsities, each scored by the proxy (:mod:`.proxy`);
3. the finalists (:mod:`.finalists`), best first, are recovered and checked on the
   validation set; the first within eps is the result: a model that breaks eps is never
   returned as a success; the plan that held is then refined (:mod:`.refinement`), its
   global level raised step by step while each step, recovered, holds eps;
4. the compressed model is measured carefully (timings interleaved with the original).
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from .. import _checks
from .._backends import resolve_device
from ..data import Batches, Data
from ..errors import ConfigError, FinalizedElsewhere, TrialFault
from ..objectives import Objective, as_objectives, deployment_of
from ..plan import get_plan
from ..recovery import FineTune, Recovery
from ..schemes import FilterPrune, Scheme
from ..training import evaluate, inference, seed_everything
from .agreement import Agreement, Pair
from .bounds import Bounds, build_units
from .claims import Claim, Claims
from .context import (
    AccuracyFn,
    Limited,
    Phases,
    RunContext,
    TimeBudget,
    example_input_of,
    loaders_of,
    log_message,
)
from .finalists import (
    Candidate,
    Outcome,
    recover_finalists,
    remeasure,
    select,
    spare_recoveries,
)
from .measure import Measurements, measure, measure_final
from .options import (
    Budget,
    CalibrationOptions,
    ProxyOptions,
    check_data,
    check_eps,
    check_instance,
    check_space,
    check_warm_start,
    option,
)
from .preparation import PRIORS, SearchSetup, prepare, resolve_prior
from .proxy import ProxyScorer
from .records import Preparation
from .refinement import Refinement, refine_plan, room_left
from .result import CompressionResult
from .sensitivity import SensitivityOptions
from .settings import run_settings, study_setup
from .shape import (
    Projection,
    anchor,
    broken_levels,
    describe,
    plan_cost,
    ranked_shapes,
    rescored,
    study_keep,
    too_short,
    trial_seconds,
    width_for,
)
from .space import SearchSpace
from .study import (
    describe_trial,
    make_sampler,
    open_study,
    pareto_numbers,
    ranked,
    requeue_interrupted,
    run_trials,
    samplers,
    trial_row,
    uninterrupted,
    worker_id,
)


@dataclass
class Work:
    """What :meth:`Compressor.work` did: trials completed here, and the result when this
    process finalized the study (None when another did or does)."""

    completed: int
    result: CompressionResult | None = None


@dataclass
class _Session:
    """What a run, a worker and a finalization start from: the original measured, the
    study opened, the clock started."""

    ctx: RunContext
    before: Measurements
    study: optuna.Study
    claims: Claims
    scorer: ProxyScorer
    budget: TimeBudget
    phases: Phases
    start: float
    units: list
    resumed: bool
    notes: list[str] = field(default_factory=list)  # what the run's result says of its stages


def _study_broke(ctx: RunContext, outcome: Outcome) -> bool:
    """Whether a trial of the study was recovered and broke eps (in the shape space, a
    plan at the target cost)."""
    return any(a.number is not None and got.drop > ctx.eps for a, got in outcome.tried)


def _proxy_drop(scorer: ProxyScorer, sparsities: Mapping[str, float]) -> float | None:
    try:
        return scorer(sparsities).drop
    except TrialFault:  # a plan the proxy cannot score: no pair, the recovery still judges
        return None


def agreement_of(
    study: optuna.Study,
    prep: Preparation,
    outcome: Outcome,
    refinement: Refinement,
    studied: bool = True,
) -> Agreement:
    """Every plan of the run recovered for real and scored by the proxy, beside what the
    proxy said of it (``studied``: whether a study ran, and so the proxy chose plans)."""
    pairs = [
        Pair(f"calibration level {r.level:.4f}", r.proxy_drop, r.drop)
        for r in prep.calibration
        if r.proxy_drop is not None
    ]
    trials = study.get_trials(deepcopy=False)  # numbered from 0, in order
    for attempt, got in outcome.tried:
        if attempt.number is not None:
            proxy = trials[attempt.number].user_attrs.get("drop")
            if proxy is not None:
                pairs.append(Pair(attempt.label, float(proxy), got.drop))
    pairs += [
        Pair(f"refinement level {r.level:.4f}", r.proxy_drop, r.drop)
        for r in refinement.records
        if r.proxy_drop is not None
    ]
    return Agreement(pairs, studied=studied)


def top1(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy, the default ``accuracy``."""
    return evaluate(model, loader).accuracy


class Compressor:
    """Find the most compressed model within ``eps`` of the original's accuracy.

    Args:
        model: the trained model (not changed).
        objective: what to optimise: ``Maximize(throughput)``, ``Minimize(size)``, a
            built-in name (its usual direction), or a list of them (multi-objective).
        eps: the accuracy budget: ``base - accuracy <= eps`` on the validation split
            (``relative=True``: ``(base - accuracy) / base <= eps``).
        scheme: the scheme operator(s) (default ``FilterPrune()``); their sparsities are
            what the search sets.
        data: a :class:`~autoprune.data.Data`, or ``(train, val, test)`` loaders.
        recovery: ``FineTune()`` (default) or ``LC()``.
        accuracy: ``f(model, loader) -> float`` replacing top-1 accuracy.
        n_trials: completed trials the study should have; ``timeout``: seconds for the
            whole run, from measuring the original to measuring the result (either or
            both; the time the first took is kept for the last).
            ``n_trials=0`` runs no search: only the warm-start plans (the calibration's
            uniform plans; in the shape space, the prior's and the reference shapes) are
            scored, and the best that holds is refined; the ablation
            that shows what the study adds.
        trial_timeout: seconds for scoring one candidate; a trial over it fails (None: no
            limit). A candidate whose outputs turn NaN or inf fails its trial too, and
            ``max_failures`` failures in a row stop the search.
        sampler: ``"tpe"`` (multivariate, default), ``"gp"``, ``"cmaes"`` or ``"random"``.
        space: ``"offsets"`` (default), ``"shape"`` (plans of one cost, ranked by proxy
            accuracy: :mod:`autoprune.compress.shape`), ``"independent"`` or
            ``"uniform"`` (see :mod:`autoprune.compress.space`).
        bounds: ``(low, high)`` for every unit, ``{unit or pattern: (low, high)}``,
            ``"sensitivity"``, or a :class:`~autoprune.compress.sensitivity.Sensitivity`
            (or the path of its ``.json``).
        warm_start: uniform levels (fractions of each unit's range) tried first.
        proxy, calibration, sensitivity: how candidates are scored
            (:class:`ProxyOptions`), how their threshold is calibrated
            (:class:`CalibrationOptions`), and how a sensitivity analysis for
            ``bounds="sensitivity"`` runs (:class:`SensitivityOptions`).
        seed: seeds the sampler, the data order and every training run.
        out_dir: the run directory (the study's SQLite file and the result are written
            there); None (the default) keeps the study in memory and writes nothing.
        storage, study_name: any Optuna storage URL, and the study's name; running again
            with the same ones resumes the study.
        max_attempts: plans recovered at most: the best ``max_attempts - 1`` trials, the
            calibrated uniform plan (its model is reused), then lower sparsities.
        refine: after a plan holds eps, steps (at most) that raise its global ``level``
            (:mod:`autoprune.compress.refinement`), each recovered for real and kept when
            it holds; they run while the ``timeout`` allows (0: none). The finalist
            recoveries ``max_attempts`` allowed and the run did not spend (the first
            finalist held, or no study ran) are added to them.
        prior: how the search's global level spreads over units (the allocation prior):
            ``"uniform"`` (the same point of every unit's range), ``"global"`` (as one
            global ranking of weight magnitudes, or of channel scores normalised by their
            group's mean, would prune them; ``prune``, ``filter_prune``, ``neuron_prune``) or
            ``"sensitivity"`` (a sensitivity analysis's drops traded against what each
            unit saves of the objective, :mod:`autoprune.compress.allocation`).
            ``"auto"``: global for ``prune``, else uniform. The calibration bisects along
            the prior, and per-unit offsets move away from it.
        batch_size, eval_batch_size: training and evaluation batch sizes when ``data`` is
            a :class:`Data`.
        device: where everything runs (training, scoring, recovery, measurement):
            ``"auto"`` (CUDA when PyTorch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``. The model given is copied there; it is not changed.
        progress: progress bars and one line per trial on stderr.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Any,
        eps: float,
        *,
        scheme: Scheme | None = None,
        data: Data | Sequence[Batches] | None = None,
        recovery: Recovery | None = None,
        relative: bool = False,
        accuracy: AccuracyFn | None = None,
        n_trials: int | None = 30,
        timeout: float | None = None,
        trial_timeout: float | None = None,
        max_failures: int = 5,
        sampler: str = "tpe",
        space: str = "offsets",
        bounds: Any = None,
        warm_start: Sequence[float] = (0.25, 0.5, 0.75),
        proxy: ProxyOptions | None = None,
        calibration: CalibrationOptions | None = None,
        sensitivity: SensitivityOptions | None = None,
        seed: int = 0,
        out_dir: str | os.PathLike | None = None,
        storage: str | None = None,
        study_name: str = "autoprune",
        max_attempts: int = 4,
        refine: int = 2,
        prior: str = "auto",
        batch_size: int = 128,
        eval_batch_size: int = 512,
        device: str | torch.device = "auto",
        progress: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.objectives: list[Objective] = as_objectives(objective)
        self.eps = check_eps(eps)
        self.data = check_data(data)
        check_instance("scheme", scheme, Scheme, "a scheme operator")
        check_instance("recovery", recovery, Recovery, "LC() or FineTune()")
        self.budget = Budget(n_trials, timeout, trial_timeout, max_failures)
        samplers.get(sampler)
        self.bounds = Bounds.parse(bounds)
        self.model = model
        self.device = resolve_device(device)
        timed = any(not o.metric.deterministic for o in self.objectives)
        self.scheme = (scheme if scheme is not None else FilterPrune()).for_run(self.device, timed)
        self.recovery = recovery if recovery is not None else FineTune()
        self.relative = bool(relative)
        self.accuracy = accuracy or top1
        self.sampler = sampler
        self.space = check_space(space, len(self.objectives))
        self.warm_start = check_warm_start(warm_start)
        self.proxy = option("proxy", proxy, ProxyOptions)
        self.calibration = option("calibration", calibration, CalibrationOptions)
        self.sensitivity = option("sensitivity", sensitivity, SensitivityOptions)
        self.seed = _checks.number("seed", seed, integer=True)
        self.out_dir = os.fspath(out_dir) if out_dir is not None else None
        self.storage = storage
        self.study_name = study_name
        self.max_attempts = _checks.number("max_attempts", max_attempts, 1, integer=True)
        self.refine = _checks.number("refine", refine, 0, integer=True)
        _checks.choice("prior", prior, PRIORS)
        self.prior = resolve_prior(prior, self.scheme)
        self.batch_size = _checks.number("batch_size", batch_size, 1, integer=True)
        self.eval_batch_size = _checks.number("eval_batch_size", eval_batch_size, 1, integer=True)
        self.progress = bool(progress)

    @property
    def study_directions(self) -> list[str]:
        """What the study's values are: the objectives', or in the shape space the proxy
        accuracy (maximised) of plans of equal cost."""
        if self.space == "shape":
            return ["maximize"]
        return [o.direction for o in self.objectives]

    @property
    def will_refine(self) -> bool:
        """Whether a plan that holds is refined: ``refine`` steps, and a global level to
        raise (every space but ``"independent"``)."""
        return bool(self.refine) and self.space != "independent"

    def log(self, message: str) -> None:
        log_message(message, self.progress)

    # -- the run ------------------------------------------------------------------------
    def run(self) -> CompressionResult:
        """Search, recover and measure; returns a
        :class:`~autoprune.compress.result.CompressionResult`.

        On a study that other processes share (:meth:`work`, or more ``run`` s on the same
        ``storage`` and ``study_name``), the preparation and the finalization each happen
        once (:mod:`autoprune.compress.claims`): a run that finds another process preparing
        waits for it, and one that finds another finalizing waits and returns that result
        (loaded from its run directory, when this machine sees it; else
        :class:`~autoprune.errors.FinalizedElsewhere` says where it is).
        """
        session = self._session()
        prep, recovered = self._prepared(session)
        self._search(session, prep)
        session.phases["search"] = session.budget.elapsed() - session.phases["baseline"]
        result = self._finish(session, prep, recovered, redo=True, wait=True)
        assert result is not None  # waiting, a run always ends with a result
        return result

    def work(self, poll: float = 2.0) -> Work:
        """Run trials of a study that another process prepares (a :meth:`run` on the same
        ``storage`` and ``study_name``) until it holds ``n_trials`` complete; then, when no
        other process has claimed it yet, finalize it as :meth:`run` would.

        Start any number of workers, on any machines that reach the storage: the study's
        first ``n_trials`` trials to start take the budget, so it ends with exactly that
        many complete, and its finalization happens once, in the first process to claim
        it. Returns how many trials this process completed, and the result when it
        finalized.
        """
        if self.storage_url() is None:
            raise ConfigError("storage: a worker needs the shared study's storage URL")
        session = self._session(worker=True)
        study, waited = session.study, False
        while study.user_attrs.get("prepared") is None:
            if not waited:
                self.log(f"worker: waiting for the coordinator to prepare {self.study_name!r}")
                waited = True
            time.sleep(poll)
        prep = Preparation.from_dict(study.user_attrs["prepared"])
        before = self._complete(study)
        self._search(session, prep)
        session.phases["search"] = session.budget.elapsed() - session.phases["baseline"]
        me = worker_id()
        mine = sum(
            1
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("worker") == me
        )
        self.log(f"worker: {mine} trial(s) completed here; the study had {before} before")
        result = self._finish(session, prep, {}, redo=False, wait=False)
        return Work(completed=mine, result=result)

    def finalize(self, force: bool = False) -> CompressionResult:
        """Finalize a prepared study as it stands (no more trials): recover its finalists,
        measure and save, as the end of :meth:`run` does. For a study whose workers ran
        out of time, or whose finalizing process died.

        A study already finalized at its present trial count returns that result (loaded
        from its run directory) unless ``force``; one being finalized by a live process is
        waited for.
        """
        session = self._session(create=False)
        stored = session.study.user_attrs.get("prepared")
        if stored is None:
            raise ConfigError(
                f"search.study: study {self.study_name!r} in {self.storage_url()} was never "
                "prepared (its search did not start); run autoprune search first"
            )
        prep = Preparation.from_dict(stored)
        result = self._finish(session, prep, {}, redo=False, wait=True, force=force)
        assert result is not None
        return result

    def _session(self, create: bool = True, worker: bool = False) -> _Session:
        """The original measured and the study opened: what every way in starts from."""
        phases = Phases()
        start = time.perf_counter()
        seed_everything(self.seed)
        with phases.timed("baseline"):
            ctx, before = self._baseline()
        # the timeout counts from here, the original's measurement included, and keeps as
        # long again at the end for measuring the result
        budget = TimeBudget(start, self.budget.timeout, tail=phases["baseline"])
        scorer = ProxyScorer(ctx, self.proxy, ctx.eps, self.budget.trial_timeout)
        units = build_units(self.scheme, ctx.original, ctx.example_input, self.bounds)
        storage = self.storage_url()
        if not create:
            self._check_exists(storage)
        # a resumed study, or a worker joining one, draws a fresh random stream: the seed's
        # own would propose the trials the study already has
        sampler = make_sampler(self.sampler, self.seed)
        directions = self.study_directions
        study, resumed = open_study(
            storage, self.study_name, directions, sampler, study_setup(self, units)
        )
        if worker:
            study.sampler = make_sampler(self.sampler, self.seed + os.getpid())
        elif resumed:
            study.sampler = make_sampler(self.sampler, self.seed + len(study.trials))
        claims = Claims(study, self.out_dir, log=self.log)
        return _Session(ctx, before, study, claims, scorer, budget, phases, start, units, resumed)

    def _check_exists(self, storage: str | None) -> None:
        names = optuna.get_all_study_names(storage) if storage is not None else []
        if self.study_name not in names:
            raise ConfigError(
                f"search.study: there is no study {self.study_name!r} in "
                f"{storage or 'memory'}; give the --storage and --study its search used"
            )

    @staticmethod
    def _complete(study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    def _finish(
        self,
        session: _Session,
        prep: Preparation,
        recovered: Mapping[tuple, nn.Module],
        *,
        redo: bool,
        wait: bool,
        force: bool = False,
    ) -> CompressionResult | None:
        """Finalize the study once (:mod:`.claims`): this process when it claims it first,
        else the result of the process that did (None: not waiting for it)."""
        complete = self._complete(session.study)
        claim, mine = session.claims.settle(
            f"finalize:{complete}", redo=redo, force=force, wait=wait
        )
        if not mine:
            if claim is None or claim.done is None:
                self.log(f"finalize: {claim.by if claim else 'another process'} finalizes it")
                return None
            return self._finalized_elsewhere(claim, complete) if wait else None
        assert claim is not None
        with session.claims.holding(claim):
            result = self._finalized(session, prep, recovered)
        session.claims.finish(
            claim,
            {
                "feasible": result.feasible,
                "objectives": result.objectives,
                "chosen_trial": result.chosen_trial,
            },
        )
        return result

    def _finalized_elsewhere(self, claim: Claim, complete: int) -> CompressionResult:
        where = claim.holder.get("out_dir")
        done = claim.done or {}
        here = claim.holder.get("host") == socket.gethostname()
        if where and here and os.path.isfile(os.path.join(where, "result.json")):
            self.log(f"finalize: done by {claim.by} into {where}")
            return CompressionResult.load(where)
        got = ", ".join(f"{k} {v:.3g}x" for k, v in (done.get("objectives") or {}).items())
        raise FinalizedElsewhere(
            f"study {self.study_name!r} was finalized at {complete} complete trials by "
            f"{claim.by} into {where} on that machine "
            f"({'feasible' if done.get('feasible') else 'not feasible'}"
            f"{': ' + got if got else ''}); its result and report are there"
        )

    def _finalized(
        self, session: _Session, prep: Preparation, recovered: Mapping[tuple, nn.Module]
    ) -> CompressionResult:
        """The finalists recovered, the plan refined, the model measured and saved."""
        ctx, study, budget, phases = session.ctx, session.study, session.budget, session.phases
        space = self._space(ctx, prep)
        with phases.timed("recovery"):
            order, outcome, found = self._finalists(ctx, study, prep, space, recovered, budget)
        notes = [*session.notes, *found]
        refinement = Refinement()
        chosen = outcome.attempt
        studied = self._complete(study) > 0
        if outcome.recovered is not None and chosen and chosen.params and self.will_refine:
            spare = spare_recoveries(outcome, self.max_attempts)
            if spare:
                self.log(
                    f"refine: up to {self.refine + spare} steps: refine={self.refine}, and "
                    f"{spare} finalist recoveries of max_attempts={self.max_attempts} unspent"
                )
            with phases.timed("refine"):
                params = chosen.params
                refinement = refine_plan(
                    ctx,
                    budget,
                    space,
                    params,
                    broken_levels(
                        prep.calibration, space, params, target_broke=_study_broke(ctx, outcome)
                    ),
                    self.refine + spare,
                    # scored only where a study ran: the proxy chose nothing otherwise
                    proxy=(lambda sp: _proxy_drop(session.scorer, sp)) if studied else None,
                )
            notes += refinement.notes(chosen.label, params)
        compressed, after_val = self._compressed(ctx, outcome, refinement)
        room = self._room_left(ctx, prep, outcome, refinement)
        if room is not None:
            notes.append(room)
            self.log(room)
        agreement = agreement_of(study, prep, outcome, refinement, studied)
        ctx.log(agreement.describe())
        with phases.timed("measure"):
            after, final = measure_final(ctx, compressed, session.before, after_val)
        phases["total"] = time.perf_counter() - session.start
        result = CompressionResult(
            model=compressed,
            plan=get_plan(compressed),
            feasible=outcome.recovered is not None,
            before=session.before,
            after=after,
            objectives=final,
            study=study,
            chosen_trial=outcome.chosen,
            pareto=pareto_numbers(order, [o.direction for o in self.objectives]),
            phases=dict(phases),
            notes=notes,
            settings=run_settings(self, ctx, study.study_name, prep, refinement),
            trials=[trial_row(tr) for tr in study.trials],
            original=ctx.original,
            agreement=agreement,
        )
        if self.out_dir is not None:
            result.save(self.out_dir)
        self.log(
            f"done in {phases['total']:.0f} s: "
            + ", ".join(f"{k} {v:.3g}x" for k, v in final.items())
        )
        return result

    # -- stages -------------------------------------------------------------------------
    def _baseline(self) -> tuple[RunContext, Measurements]:
        """Measure the original; returns the run's context and the original's measurements."""
        loaders = loaders_of(
            self.data, self.batch_size, self.eval_batch_size, self.seed, self.device
        )
        x = example_input_of(self.data, loaders, self.device)
        original = copy.deepcopy(self.model).to(self.device).eval()
        deployment = deployment_of(self.objectives)
        before = measure(original, loaders, x, self.accuracy, deployment)
        base_proxy = float(self.accuracy(original, Limited(loaders.val, self.proxy.val_batches)))
        reference = {
            o.name: o.metric(original, x) for o in self.objectives if o.metric.deterministic
        }
        ctx = RunContext(
            original=original,
            example_input=x,
            loaders=loaders,
            scheme=self.scheme,
            recovery=self.recovery,
            objectives=self.objectives,
            accuracy=self.accuracy,
            eps=self.eps,
            relative=self.relative,
            base=float(before["val_accuracy"]),
            base_proxy=base_proxy,
            reference=reference,
            deployment=deployment,
            base_deployed=before.deployed_val_accuracy,
            seed=self.seed,
            progress=self.progress,
        )
        self._usable(original, x, ctx.base)
        if ctx.base_deployed is not None and ctx.drop(ctx.base_deployed) > self.eps:
            raise ConfigError(
                f"objective: the original model itself has validation accuracy "
                f"{ctx.base_deployed:.4f} in {deployment.dtype}, against {ctx.base:.4f} in "
                f"float32, beyond eps {self.eps:g}: no compressed model can hold eps deployed "
                "so; time it in float32 (or bfloat16), or raise eps"
            )
        self.log(
            f"original: val {ctx.base:.4f}, test {before['test_accuracy']:.4f}, "
            f"{int(before['params'])} params, {int(before['macs'])} MACs; eps {self.eps:g}"
            f"{' (relative)' if self.relative else ''}"
            + (
                f"; deployed in {deployment.describe()}: val {ctx.base_deployed:.4f}"
                if ctx.base_deployed is not None
                else ""
            )
        )
        return ctx, before

    def _usable(self, original: nn.Module, x: torch.Tensor, base: float) -> None:
        """A model worth compressing: finite outputs and, under top-1 accuracy, better than
        chance (a search keeps the accuracy a model has; it cannot make one)."""
        out = inference(original, x)
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            raise ConfigError(
                "model: its outputs are NaN or inf on the data's first input; check its "
                "checkpoint or its training"
            )
        classes = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() == 2 else 0
        if self.accuracy is top1 and classes >= 2 and base <= 1.5 / classes:
            raise ConfigError(
                f"model: its validation accuracy {base:.4f} is at chance level for {classes} "
                f"classes ({1 / classes:.4f}); train it first: a search keeps the accuracy a "
                "model has"
            )

    def _prepared(self, session: _Session) -> tuple[Preparation, Mapping[tuple, nn.Module]]:
        """The study's preparation: the stored one, or made here once (the first process to
        claim it; others wait for it). Returns it and the calibration's recovered models."""
        study, ctx = session.study, session.ctx
        if session.resumed:
            again = requeue_interrupted(study)
            self.log(
                f"resuming study {self.study_name!r}: {self._complete(study)} trials complete"
                + (f", {again} interrupted trial(s) to run again" if again else "")
            )
        stored = study.user_attrs.get("prepared")
        if stored is not None:
            return Preparation.from_dict(stored), {}
        claim, mine = session.claims.settle("prepare", redo=False)
        if not mine:  # another process prepared it
            return Preparation.from_dict(study.user_attrs["prepared"]), {}
        assert claim is not None
        setup = SearchSetup(
            space=self.space,
            prior=self.prior,
            warm_start=self.warm_start,
            bounds=self.bounds,
            proxy=self.proxy,
            calibration=self.calibration,
            sensitivity=self.sensitivity,
            refine=self.will_refine,
        )
        with session.claims.holding(claim):
            prepared = prepare(ctx, session.units, setup, session.scorer, session.budget)
        session.phases.update(prepared.phases)
        session.notes.extend(prepared.notes)
        with uninterrupted():
            study.set_user_attr("prepared", prepared.preparation.to_dict())
        session.claims.finish(claim, {})
        recovered = prepared.calibration.recovered if prepared.calibration else {}
        return prepared.preparation, recovered

    def _space(self, ctx: RunContext, prep: Preparation) -> SearchSpace:
        space = SearchSpace(
            prep.units,
            self.space,
            width=width_for(prep.references),  # the default but for wider references
            level_range=prep.level_range,
            prior=prep.prior,
        )
        if self.space == "shape":
            assert prep.target_level is not None  # set by the preparation in this space
            space.projection = Projection(space, plan_cost(ctx), prep.target_level)
        return space

    def _search(self, session: _Session, prep: Preparation) -> None:
        """Run the study's trials in the prepared space, leaving time for the finalists and
        the refinement (in the shape space, none when too few fit: :func:`.too_short`)."""
        ctx, study, scorer, budget = session.ctx, session.study, session.scorer, session.budget
        space = self._space(ctx, prep)
        shape = self.space == "shape"
        scorer.tau = math.inf if shape else prep.tau
        budget.calibrated = [
            r.recovery_seconds for r in prep.calibration if r.recovery_seconds is not None
        ]
        wanted = ", ".join(f"{o.direction} {o.metric.describe()}" for o in self.objectives)
        if space.projection is not None:
            self.log(describe(ctx, space, self.sampler))
        else:
            self.log(
                f"search: {len(space.units)} units ({self.space} space, level in "
                f"[{space.level_range[0]:.2f}, {space.level_range[1]:.2f}], {self.sampler} "
                f"sampler), objective {wanted}; feasible when the proxy drop is <= "
                f"{prep.tau:.4f}"
            )
        n_trials = self.budget.n_trials
        if n_trials == 0:  # no search: the warm-start (calibrated) and reference plans alone
            n_trials = sum(map(space.warm_level, prep.warm)) + len(prep.references)
            if n_trials == 0:
                return
        keep = study_keep(self.proxy, len(prep.references)) if shape else None
        if shape and prep.held is not None:  # a study too short to rank shapes costs refining
            why = too_short(budget, trial_seconds(study, prep.calibration), keep, self.will_refine)
            if why is None and any(r.proxy_drop is None for r in prep.calibration):
                why = "the calibration found that none could follow it"
            if why is not None:
                then = "refined" if self.will_refine else "returned"
                session.notes.append(f"no study: {why}; the calibrated plan is {then} instead")
                self.log(f"shape: {session.notes[-1]}")
                return
        run_trials(
            study,
            space,
            scorer,
            n_trials=n_trials,
            timeout=budget.trials_timeout(self.will_refine),
            tau=scorer.tau,
            directions=self.study_directions,
            sampler_name=self.sampler,
            warm_start=prep.warm,
            references=prep.references,
            progress=self.progress,
            log=self.log,
            describe=describe_trial,
            max_failures=self.budget.max_failures,
            accuracy=shape,
            keep=keep,
        )

    def _finalists(
        self,
        ctx: RunContext,
        study: optuna.Study,
        prep: Preparation,
        space: SearchSpace,
        recovered: Mapping[tuple, nn.Module],
        budget: TimeBudget,
    ) -> tuple[list[optuna.trial.FrozenTrial], Outcome, list[str]]:
        """Rank the feasible trials, choose the finalists and recover them in order."""
        held = {r.level for r in prep.calibration if r.holds}
        if space.projection is not None:  # the shape space
            order = rescored(
                ctx,
                ranked_shapes(study, space.projection.target),
                self.proxy,
                lambda seconds: budget.fits(2, extra=seconds),
            )
            candidates = [Candidate.of(tr) for tr in order] + anchor(space, prep.held)
        else:
            order = remeasure(ctx, ranked(study, [o.direction for o in self.objectives]), held)
            candidates = [Candidate.of(tr) for tr in order]
        notes = []
        if not candidates:
            notes.append(
                "no candidate of the search kept accuracy within eps; try more trials, "
                "narrower bounds or a larger eps"
            )
        finalists = select(candidates, set(recovered), ctx.noisy, self.max_attempts)
        outcome = recover_finalists(
            ctx, budget, finalists, recovered, self.max_attempts, self.will_refine
        )
        notes += outcome.notes
        if outcome.recovered is None:
            self.log(notes[-2] + "; " + notes[-1])
        return order, outcome, notes

    @staticmethod
    def _room_left(
        ctx: RunContext,
        prep: Preparation,
        outcome: Outcome,
        refinement: Refinement,
    ) -> str | None:
        """The note :func:`~.refinement.room_left` gives on the returned plan, if any."""
        kept = refinement.best or outcome.recovered
        chosen = outcome.attempt
        if kept is None or chosen is None or chosen.params is None:
            return None
        held = refinement.held if refinement.best is not None else None
        level = held.level if held is not None else chosen.params.get("level")
        broke = any(got.drop > ctx.eps for _, got in outcome.tried)
        return room_left(ctx.eps, kept.drop, level, prep.calibration, refinement, broke)

    def _compressed(
        self, ctx: RunContext, outcome: Outcome, refinement: Refinement
    ) -> tuple[nn.Module, float | None]:
        """The model to return, and its validation accuracy when it was recovered."""
        best = refinement.best or outcome.recovered
        if best is None:
            return copy.deepcopy(ctx.original), None
        return best.model, best.accuracy

    # -- helpers ------------------------------------------------------------------------
    def storage_url(self) -> str | None:
        """The study's storage: ``storage``, else a SQLite file in ``out_dir``, else memory."""
        if self.storage is not None:
            return self.storage
        if self.out_dir is None:
            return None
        os.makedirs(self.out_dir, exist_ok=True)
        return f"sqlite:///{os.path.abspath(os.path.join(self.out_dir, 'study.db'))}"

    @property
    def data_name(self) -> str:
        return self.data.name if isinstance(self.data, Data) else "loaders"

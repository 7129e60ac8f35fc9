"""Scoring a candidate cheaply: prune a copy, make it physical, recalibrate BatchNorm,
fine-tune briefly, measure.

The search scores every trial this way (:class:`ProxyScorer`), and the sensitivity
analysis prunes one unit at a time the same way (:func:`pruned_copy`, :func:`quick_tune`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..errors import TrialFault
from ..plan import Plan, get_plan
from ..recovery.base import epoch_steps
from ..schemes import Scheme, materialize
from ..training import inference, recalibrate_bn, train
from .context import Limited, RunContext
from .options import ProxyOptions
from .space import plan_key
from .study import TrialOutcome


def pruned_copy(
    original: nn.Module, scheme: Scheme, example_input: torch.Tensor
) -> tuple[nn.Module, Plan, bool]:
    """A copy of ``original`` pruned by ``scheme``, physically smaller where the removal is
    exact: ``(model, plan, physical)``."""
    model = copy.deepcopy(original)
    scheme.apply(model, example_input)
    made = materialize(model, example_input)
    if made.physical:
        model = made.model
    return model, get_plan(model), made.physical


def quick_tune(
    model: nn.Module,
    train_loader: Iterable,
    *,
    bn_batches: int,
    steps: int,
    lr: float,
    seed: int,
    desc: str,
    scheme: Scheme | None = None,
    example_input: torch.Tensor | None = None,
    deadline: float | None = None,
) -> None:
    """Recalibrate BatchNorm, fine-tune ``steps`` minibatches (none for 0), and impose again
    what training does not keep (``scheme``'s :meth:`~Scheme.reapply_after_training`).

    Past ``deadline`` (a ``time.perf_counter()`` value) the fine-tuning stops at the next
    step with a :class:`~autoprune.errors.TrialFault`.
    """
    recalibrate_bn(model, train_loader, bn_batches)
    if steps <= 0:
        return

    def in_time(_: nn.Module) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            raise TrialFault("over the per-trial time limit during fine-tuning")

    train(model, train_loader, max_steps=steps, lr=lr, seed=seed, desc=desc, after_step=in_time)
    if scheme is not None and scheme.reapply_after_training(model, example_input):
        recalibrate_bn(model, train_loader, bn_batches)


def _finite_outputs(model: nn.Module, x: torch.Tensor) -> None:
    """A :class:`~autoprune.errors.TrialFault` when the model's outputs are NaN or inf."""
    out = inference(model, x)
    if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
        raise TrialFault("the candidate's outputs are NaN or inf after its fine-tuning")


class ProxyScorer:
    """Scores per-unit sparsities against the threshold ``tau``, remembering each plan.

    A plan scored before (a calibration plan, enqueued again as a warm start) is not scored
    again; its feasibility is judged against the current ``tau``.
    """

    def __init__(
        self,
        ctx: RunContext,
        options: ProxyOptions,
        tau: float,
        trial_timeout: float | None = None,
    ) -> None:
        self.ctx, self.options, self.tau = ctx, options, tau
        self.trial_timeout = trial_timeout
        self._seen: dict[tuple, TrialOutcome] = {}

    def __call__(self, sparsities: Mapping[str, float]) -> TrialOutcome:
        key = plan_key(sparsities)
        if key in self._seen:
            out = self._seen[key]
            return TrialOutcome(out.values, out.accuracy, out.drop, out.drop <= self.tau, out.attrs)
        out = self.score(sparsities)
        self._seen[key] = out
        return out

    def score(self, sparsities: Mapping[str, float]) -> TrialOutcome:
        """Score one plan (see the module docstring).

        A candidate whose outputs or objectives are not finite, or that runs past
        ``trial_timeout`` seconds, raises :class:`~autoprune.errors.TrialFault`.
        """
        ctx, opts = self.ctx, self.options
        t0 = time.perf_counter()
        deadline = None if self.trial_timeout is None else t0 + self.trial_timeout
        scheme = ctx.scheme.with_sparsities(sparsities)
        model, plan, physical = pruned_copy(ctx.original, scheme, ctx.example_input)
        t_apply = time.perf_counter()
        steps = 0
        if opts.finetune_epochs > 0:
            steps = max(opts.min_finetune_steps, epoch_steps(ctx.loaders, opts.finetune_epochs))
        quick_tune(
            model,
            ctx.loaders.train,
            bn_batches=opts.bn_batches,
            steps=steps,
            lr=opts.finetune_lr,
            seed=ctx.seed,
            desc="candidate",
            scheme=scheme,
            example_input=ctx.example_input,
            deadline=deadline,
        )
        _finite_outputs(model, ctx.example_input)
        t_tune = time.perf_counter()
        acc = float(ctx.accuracy(model, Limited(ctx.loaders.val, opts.val_batches)))
        drop = ctx.drop(acc, ctx.base_proxy)
        t_acc = time.perf_counter()
        values = [
            o.metric.ratio(model, ctx.original, ctx.example_input, ctx.reference.get(o.name))
            for o in ctx.objectives
        ]
        t_obj = time.perf_counter()
        if not all(math.isfinite(v) for v in values):
            raise TrialFault(f"an objective is not finite ({values})")
        if deadline is not None and t_obj > deadline:
            raise TrialFault(
                f"took {t_obj - t0:.1f} s, over the per-trial time limit of "
                f"{self.trial_timeout:g} s"
            )
        return TrialOutcome(
            values=values,
            accuracy=acc,
            drop=drop,
            feasible=drop <= self.tau,
            attrs={
                "achieved": plan.sparsities(),
                "physical": physical,
                "objectives": {o.name: v for o, v in zip(ctx.objectives, values)},
                "seconds": t_obj - t0,
                "timings": {
                    "apply": t_apply - t0,
                    "tune": t_tune - t_apply,
                    "accuracy": t_acc - t_tune,
                    "objective": t_obj - t_acc,
                },
            },
        )

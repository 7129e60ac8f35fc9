"""``LC``: the learning-compression algorithm (Carreira-Perpinan & Idelbayev, 2018).

L-C alternates two steps on the augmented Lagrangian of "train ``w`` subject to ``w``
being compressible":

* **L-step**: SGD on ``loss(w) + mu/2 * ||w - theta - lambda/mu||^2`` for a number of
  minibatches (the network is trained, pulled towards its compressed version);
* **C-step**: ``theta = Pi(w - lambda/mu)``, the projection onto the scheme's constraint
  set: the plan's sparsity in every unit, the units chosen afresh by the scheme's
  criterion (for magnitude pruning this is exactly the Euclidean projection);

then the multipliers are updated, ``lambda <- lambda - mu (w - theta)``, and ``mu`` grows
geometrically. The result is ``theta``: exactly compressed, with BatchNorm recalibrated and
an optional short masked fine-tune.

    >>> lc = LC()            # works as it is: every parameter has a default
    >>> lc.steps, lc.mu_init, lc.mu_multiplier
    (8, 0.01, 2.5)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import _checks
from .. import _masking as masking
from ..data import Loaders
from ..plan import Plan, get_plan, set_plan
from ..schemes.base import Scheme
from ..training import train
from .base import Recovery, epoch_steps


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    what = "a positive integer" if integer else None
    _checks.number(f"lc.{name}", value, 0, low_open=True, integer=integer, what=what)


class LC(Recovery):
    """Learning-compression recovery.

    Args:
        steps: L-C iterations (each an L-step and a C-step).
        l_step_epochs: training per L-step, in epochs of the training loader, and at least
            ``l_step_min_iterations`` minibatches.
        lr: learning rate of the first L-step; it decays geometrically to ``lr_end`` over
            the steps (constant within a step).
        lr_end: learning rate of the last L-step (default ``lr / 4``).
        momentum, weight_decay: SGD settings of the L-steps.
        mu_init: the penalty weight of the first L-step.
        mu_multiplier: ``mu`` is multiplied by this after every step. The defaults take
            ``mu`` from 0.01 to about 6, by when the pull towards ``theta`` dominates the
            loss gradient and the last projection loses little.
        finetune_epochs: masked fine-tuning of the compressed result (0 to skip).
        finetune_lr: its learning rate (default ``lr``).
        bn_batches: batches for BatchNorm recalibration of the compressed result.

    Attributes:
        history: after :meth:`recover`, one dict per step with ``mu``, ``lr`` and
            ``distance`` (``||w - theta||`` after the step's C-step).
    """

    name = "lc"

    def __init__(
        self,
        steps: int = 8,
        l_step_epochs: float = 0.25,
        l_step_min_iterations: int = 30,
        lr: float = 0.02,
        lr_end: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        mu_init: float = 1e-2,
        mu_multiplier: float = 2.5,
        finetune_epochs: float = 2.0,
        finetune_lr: float | None = None,
        bn_batches: int = 20,
    ) -> None:
        _check_positive("steps", steps, integer=True)
        _check_positive("l_step_epochs", l_step_epochs)
        _check_positive("lr", lr)
        _check_positive("mu_init", mu_init)
        _checks.number("lc.mu_multiplier", mu_multiplier, 1)
        if lr_end is not None:
            _check_positive("lr_end", lr_end)
        _checks.number("lc.finetune_epochs", finetune_epochs, 0)
        self.steps = int(steps)
        self.l_step_epochs = float(l_step_epochs)
        self.l_step_min_iterations = int(l_step_min_iterations)
        self.lr = float(lr)
        self.lr_end = float(lr_end) if lr_end is not None else self.lr / 4
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.mu_init = float(mu_init)
        self.mu_multiplier = float(mu_multiplier)
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = float(finetune_lr) if finetune_lr is not None else self.lr
        self.bn_batches = bn_batches
        self.history: list[dict[str, float]] = []

    def config(self):
        return {k: v for k, v in vars(self).items() if k != "history"}

    # ---------------------------------------------------------------------------------
    def project(
        self,
        template: nn.Module,
        w: nn.Module,
        shift: dict[str, torch.Tensor],
        scheme: Scheme,
        example_input: torch.Tensor,
    ) -> nn.Module:
        """C-step: ``Pi(w - shift)`` as a masked copy of ``template`` (the original)."""
        theta = copy.deepcopy(template)
        theta.load_state_dict(w.state_dict())
        with torch.no_grad():
            for name, s in shift.items():
                theta.get_parameter(name).sub_(s)
        masking.clear_masks(theta)
        set_plan(theta, Plan())
        scheme.apply(theta, example_input)
        return theta

    @staticmethod
    def _constrained(theta: nn.Module) -> list[str]:
        names = set(masking.get_masks(theta, "struct")) | set(masking.get_masks(theta, "weights"))
        names |= {f"{layer}.weight" for layer in get_plan(theta).quantized}
        return sorted(names)

    def recover(
        self,
        model: nn.Module,
        scheme: Scheme,
        loaders: Loaders,
        example_input: torch.Tensor,
        *,
        seed: int = 0,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> nn.Module:
        template = copy.deepcopy(model)
        masking.clear_masks(template)
        set_plan(template, Plan())
        w = copy.deepcopy(template)
        params = dict(w.named_parameters())
        theta = self.project(template, w, {}, scheme, example_input)
        names = self._constrained(theta)
        lam = {n: torch.zeros_like(params[n]) for n in names}
        mu = self.mu_init
        iters = max(self.l_step_min_iterations, epoch_steps(loaders, self.l_step_epochs))
        decay = (self.lr_end / self.lr) ** (1 / max(1, self.steps - 1))
        self.history = []
        bar = tqdm(range(self.steps), desc="L-C", disable=not progress, leave=False)
        for k in bar:
            lr = self.lr * decay**k
            targets = {n: (theta.get_parameter(n).detach() + lam[n] / mu).detach() for n in names}

            def penalty(net: nn.Module, mu=mu, targets=targets) -> torch.Tensor:
                total = 0.0
                for n, t in targets.items():
                    total = total + (net.get_parameter(n) - t).pow(2).sum()
                return 0.5 * mu * total

            train(
                w,
                loaders.train,
                max_steps=iters,
                lr=lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                schedule="constant",
                seed=seed + k,
                extra_loss=penalty,
                desc=f"L-step {k + 1}",
            )
            shift = {n: lam[n] / mu for n in names}
            theta = self.project(template, w, shift, scheme, example_input)
            with torch.no_grad():
                dist2 = 0.0
                for n in names:
                    diff = params[n].detach() - theta.get_parameter(n).detach()
                    lam[n] = lam[n] - mu * diff
                    dist2 += float(diff.pow(2).sum())
            self.history.append({"step": k + 1, "mu": mu, "lr": lr, "distance": math.sqrt(dist2)})
            bar.set_postfix(dist=f"{math.sqrt(dist2):.3g}", mu=f"{mu:.3g}", refresh=False)
            if log is not None:
                log(
                    f"L-C step {k + 1}/{self.steps}: mu={mu:.3g} lr={lr:.3g} "
                    f"||w - theta||={math.sqrt(dist2):.4g}"
                )
            mu *= self.mu_multiplier
        bar.close()
        return self._finish(
            theta,
            scheme,
            example_input,
            loaders,
            self.finetune_epochs,
            self.finetune_lr,
            seed=seed,
            progress=progress,
            desc="L-C fine-tune",
        )

"""What every recovery method shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..data import Loaders
from ..schemes.base import Scheme


class Recovery:
    """Base class: turn an original model and a scheme into a compressed, accurate model.

    :meth:`recover` receives the ORIGINAL (uncompressed, trained) model and the scheme
    holding the plan's per-unit sparsities. It returns a new model compressed exactly to
    those sparsities (masked, or already physical), leaving the original untouched.
    """

    name = "recovery"
    # the training settings every recovery has (set by the subclasses' constructors)
    bn_batches: int
    momentum: float
    weight_decay: float

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
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def _finish(
        self,
        model: nn.Module,
        scheme: Scheme,
        example_input: torch.Tensor,
        loaders: Loaders,
        epochs: float,
        lr: float,
        *,
        seed: int,
        progress: bool,
        desc: str,
        after_step: Callable[[nn.Module], None] | None = None,
        masked_steps: int | None = None,
    ) -> nn.Module:
        """Make ``model`` physical where it can be, recalibrate BatchNorm, fine-tune masked,
        then let the scheme impose again what training does not keep (quantization).

        With ``after_step`` (gradual pruning changes the masks while training), the model
        is trained masked and made physical after training instead of before; with
        ``masked_steps`` too (the step where the masks stop changing; structured schemes), it
        is made physical as soon as that step is done and the rest of the training runs on
        the smaller model (the learning rate schedule goes on; the momentum starts afresh).
        """
        from ..schemes.structured import materialize
        from ..training import recalibrate_bn, train

        def physical(model: nn.Module) -> nn.Module:
            made = materialize(model, example_input)
            return made.model if made.physical else model

        if after_step is None or epochs <= 0:
            model = physical(model)
        recalibrate_bn(model, loaders.train, self.bn_batches)
        if epochs > 0:
            steps = epoch_steps(loaders, epochs)
            settings: dict[str, Any] = dict(
                max_steps=steps,
                lr=lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                progress=progress,
                desc=desc,
            )
            if after_step is not None and masked_steps is not None and 0 < masked_steps < steps:
                train(
                    model,
                    loaders.train,
                    stop=masked_steps,
                    seed=seed,
                    after_step=after_step,
                    **settings,
                )
                model = physical(model)  # the masks are final: train the smaller model
                train(model, loaders.train, start=masked_steps, seed=seed + 1, **settings)
            else:
                train(model, loaders.train, seed=seed, after_step=after_step, **settings)
            model = physical(model)
            if scheme.reapply_after_training(model, example_input):
                recalibrate_bn(model, loaders.train, self.bn_batches)
        return model

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def gradual_schedule(ramp: int, stages: int) -> dict[int, float]:
    """When gradual pruning prunes, and how far: ``{optimizer step: fraction of the target}``.

    The fraction follows the cubic schedule of Zhu & Gupta (2017), ``1 - (1 - k/n)**3``,
    in ``stages`` steps spread evenly from step 0 to step ``ramp``, where the target is
    reached: pruning is fast at first, while many small weights are left, and slows as it
    nears the target.

    >>> gradual_schedule(10, 3)
    {0: 0.7037, 5: 0.963, 10: 1.0}
    """
    stages = max(1, int(stages))
    out: dict[int, float] = {}
    for k in range(stages):
        at = round(k * ramp / (stages - 1)) if stages > 1 else ramp
        out[at] = round(1.0 - (1.0 - (k + 1) / stages) ** 3, 4)
    return out


def epoch_steps(loaders: Loaders, epochs: float) -> int:
    """Optimizer steps in ``epochs`` passes over the training loader (at least 1)."""
    return max(1, round(epochs * len(loaders.train)))

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
    ) -> nn.Module:
        """Make ``model`` physical where it can be, recalibrate BatchNorm, fine-tune masked,
        then let the scheme impose again what training does not keep (quantization)."""
        from ..schemes.structured import materialize
        from ..training import recalibrate_bn, train

        made = materialize(model, example_input)
        if made.physical:
            model = made.model
        recalibrate_bn(model, loaders.train, self.bn_batches)
        if epochs > 0:
            train(
                model,
                loaders.train,
                max_steps=epoch_steps(loaders, epochs),
                lr=lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                seed=seed,
                progress=progress,
                desc=desc,
            )
            if scheme.finalize(model, example_input):
                recalibrate_bn(model, loaders.train, self.bn_batches)
        return model

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def epoch_steps(loaders: Loaders, epochs: float) -> int:
    """Optimizer steps in ``epochs`` passes over the training loader (at least 1)."""
    return max(1, round(epochs * len(loaders.train)))

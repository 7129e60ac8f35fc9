"""``FineTune``: prune, then train with the pruned weights held at zero."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..data import Loaders
from ..errors import ConfigError
from ..schemes.base import Scheme
from .base import Recovery


class FineTune(Recovery):
    """Masked fine-tuning: apply the scheme, recalibrate BatchNorm, train.

    Structured schemes are fine-tuned on the physically smaller model (the same function,
    fewer FLOPs).

    Args:
        epochs: passes over the training data.
        lr: initial learning rate (cosine decay to zero).
        momentum, weight_decay: SGD settings.
        bn_batches: batches for BatchNorm recalibration before training.

    Example:
        >>> ft = FineTune(epochs=2, lr=0.01)
        >>> ft.epochs
        2
    """

    name = "finetune"

    def __init__(
        self,
        epochs: float = 3,
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        bn_batches: int = 20,
    ) -> None:
        if not isinstance(epochs, (int, float)) or epochs < 0:
            raise ConfigError(f"finetune.epochs: expected a number >= 0, got {epochs!r}")
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise ConfigError(f"finetune.lr: expected a positive number, got {lr!r}")
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.bn_batches = bn_batches

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
        pruned = copy.deepcopy(model)
        scheme.apply(pruned, example_input)
        return self._finish(
            pruned,
            scheme,
            example_input,
            loaders,
            self.epochs,
            self.lr,
            seed=seed,
            progress=progress,
            desc="fine-tune",
        )

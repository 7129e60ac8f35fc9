"""Helpers for checking pruning on your own models.

Freshly built models have BatchNorm mean 0, variance 1, weight 1 and bias 0, which hides
masking mistakes (a zeroed channel stays zero through such a norm). Randomise them before
comparing a masked model with its physical twin::

    >>> import torch
    >>> from autoprune.models import create_model
    >>> model = randomize_norms(create_model("resnet10", 10, (1, 8, 8), width=4))
    >>> bool(model.bn1.running_var.min() >= 0.5)
    True
"""

from __future__ import annotations

import torch
from torch import nn


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer random statistics and affine parameters; returns it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-1, 1, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.uniform_(0.5, 1.5, generator=g)
                if getattr(m, "bias", None) is not None:
                    m.bias.uniform_(-0.5, 0.5, generator=g)
    return model.eval()

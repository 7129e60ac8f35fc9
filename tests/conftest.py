"""Shared fixtures: tiny models and data that run in seconds, and nothing from outside."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.data import digits


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial statistics and affine parameters.

    Freshly built models have BN mean 0, var 1, weight 1, bias 0, which hides masking
    mistakes (a zero channel stays zero through such a BN); random ones expose them.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-1, 1, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5, generator=g)
    return model.eval()


@pytest.fixture(scope="session")
def digits_data():
    return digits(seed=0)


@pytest.fixture
def tiny_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
    )

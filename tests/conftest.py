"""Shared fixtures: tiny models and data that run in seconds, and nothing from outside."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.data import digits


@pytest.fixture(scope="session")
def digits_data():
    return digits(seed=0)


@pytest.fixture
def tiny_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
    )

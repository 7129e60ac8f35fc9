"""Shared fixtures: tiny models and data that run in seconds, and nothing from outside."""

from __future__ import annotations

import signal

import pytest
import torch
from torch import nn

from autoprune.data import digits


def pytest_configure(config):
    # a run started in the background of a non-interactive shell (``cmd &``) inherits
    # SIGINT ignored, and so would every process the tests start: the Ctrl-C tests need
    # it delivered, as in a terminal or CI
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def digits_data():
    return digits(seed=0)


@pytest.fixture
def tiny_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
    )

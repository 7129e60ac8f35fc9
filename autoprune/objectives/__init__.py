"""Objectives: what a search optimises. Each is ``f(model, example_input) -> float``.

>>> import torch
>>> from autoprune.objectives import params
>>> params(torch.nn.Linear(3, 2), torch.randn(1, 3))
8.0
"""

from .builtins import flops, latency, macs, objectives, params, size, size_fp16, throughput

__all__ = ["flops", "latency", "macs", "objectives", "params", "size", "size_fp16", "throughput"]

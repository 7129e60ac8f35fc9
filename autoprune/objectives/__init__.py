"""Objectives: what a search optimises.

Built-in metrics (``throughput``, ``latency``, ``size``, ``size_fp16``,
``inference_size_fp16``, ``flops``, ``macs``, ``params``), configurable classes
(:class:`Throughput`, :class:`Latency`, :class:`Size`), and the wrappers
:func:`Maximize` / :func:`Minimize`, which also take a plain
``f(model, example_input) -> float``::

    >>> import torch
    >>> from autoprune import objectives
    >>> objectives.params(torch.nn.Linear(3, 2), torch.randn(1, 3))
    8.0
    >>> objectives.Minimize(objectives.Size(values="fp16")).name
    'size_fp16'
"""

from .base import (
    FunctionMetric,
    Maximize,
    Metric,
    Minimize,
    Objective,
    as_metric,
    as_objectives,
    deployment_of,
    objective_registry,
)
from .builtins import (
    Flops,
    Latency,
    Macs,
    Params,
    Size,
    Throughput,
    flops,
    inference_size_fp16,
    latency,
    macs,
    params,
    size,
    size_fp16,
    throughput,
)

__all__ = [
    "Flops",
    "FunctionMetric",
    "Latency",
    "Macs",
    "Maximize",
    "Metric",
    "Minimize",
    "Objective",
    "Params",
    "Size",
    "Throughput",
    "as_metric",
    "as_objectives",
    "deployment_of",
    "flops",
    "inference_size_fp16",
    "latency",
    "macs",
    "objective_registry",
    "params",
    "size",
    "size_fp16",
    "throughput",
]

"""Built-in objectives: ``f(model, example_input) -> float``, measured on the model as is."""

from __future__ import annotations

import torch
from torch import nn

from .. import metrics
from ..registry import Registry

objectives = Registry("objective")


@objectives.register("params")
def params(model: nn.Module, example_input: torch.Tensor) -> float:
    """Nonzero parameters."""
    return float(metrics.count_params(model).nonzero)


@objectives.register("macs")
def macs(model: nn.Module, example_input: torch.Tensor) -> float:
    """Multiply-accumulates for one input."""
    return float(metrics.count_macs(model, example_input[:1]))


@objectives.register("flops")
def flops(model: nn.Module, example_input: torch.Tensor) -> float:
    """FLOPs for one input."""
    return float(metrics.count_flops(model, example_input[:1]))


@objectives.register("size")
def size(model: nn.Module, example_input: torch.Tensor) -> float:
    """Bytes as stored in the sparse format with fp32 values (dense tensors stay dense)."""
    return float(metrics.sparse_size(model, "fp32"))


@objectives.register("size_fp16")
def size_fp16(model: nn.Module, example_input: torch.Tensor) -> float:
    """Bytes as stored in the sparse format with fp16 values."""
    return float(metrics.sparse_size(model, "fp16"))


@objectives.register("throughput")
def throughput(model: nn.Module, example_input: torch.Tensor) -> float:
    """Images per second at batch 64 (median of repeats)."""
    return metrics.throughput(model, example_input, batch_size=64)


@objectives.register("latency")
def latency(model: nn.Module, example_input: torch.Tensor) -> float:
    """Milliseconds per image at batch 1 (median of repeats)."""
    return metrics.latency(model, example_input)

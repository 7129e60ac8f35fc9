"""Built-in metrics. Each is usable as ``metric(model, example_input) -> float``."""

from __future__ import annotations

import torch
from torch import nn

from .. import metrics
from ..errors import ConfigError
from .base import Metric, objective_registry


class Params(Metric):
    """Nonzero parameters."""

    name, unit, natural = "params", "parameters", "minimize"

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(metrics.count_params(model).nonzero)


class Macs(Metric):
    """Multiply-accumulates of one input (dense work: zeros in weights still count)."""

    name, unit, natural = "macs", "MACs", "minimize"

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(metrics.count_macs(model, example_input[:1]))


class Flops(Metric):
    """FLOPs of one input (2 per multiply-accumulate)."""

    name, unit, natural = "flops", "FLOPs", "minimize"

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(metrics.count_flops(model, example_input[:1]))


class Size(Metric):
    """Bytes as stored.

    Args:
        values: ``"fp32"`` or ``"fp16"`` for floating-point values.
        encoding: ``"sparse"`` (autoprune's sparse format, each tensor in its smallest
            encoding) or ``"dense"`` (every value).
        inference: store BatchNorm as the scale and shift inference needs, not its
            training statistics (:func:`autoprune.encoding.inference_state`).
    """

    unit, natural = "bytes", "minimize"

    def __init__(self, values: str = "fp32", encoding: str = "sparse", inference: bool = False):
        if values not in ("fp32", "fp16"):
            raise ConfigError(f"size.values: expected 'fp32' or 'fp16', got {values!r}")
        if encoding not in ("sparse", "dense"):
            raise ConfigError(f"size.encoding: expected 'sparse' or 'dense', got {encoding!r}")
        self.values = values
        self.encoding = encoding
        self.inference = bool(inference)
        self.name = ("inference_" if inference else "") + "size"
        if values != "fp32":
            self.name += f"_{values}"
        if encoding == "dense":
            self.name += "_dense"

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        if self.encoding == "dense":
            scale = 0.5 if self.values == "fp16" else 1.0
            return float(metrics.dense_size(model)) * scale
        return float(metrics.sparse_size(model, self.values, inference=self.inference))

    def describe(self) -> str:
        what = ", BatchNorm as scale and shift" if self.inference else ""
        return f"size ({self.encoding}, {self.values} values{what})"

    def __repr__(self) -> str:
        return (
            f"Size(values={self.values!r}, encoding={self.encoding!r}, inference={self.inference})"
        )


class Throughput(Metric):
    """Images per second at ``batch_size``.

    Compared with a reference, the two models are timed interleaved and the median of the
    per-round ratios is taken (``rounds`` during a search, ``careful_rounds`` for a final
    measurement), which cancels most of the load other processes put on a shared machine.
    """

    name, unit, natural, deterministic = "throughput", "images/s", "maximize", False

    def __init__(
        self,
        batch_size: int = 64,
        threads: int | None = None,
        rounds: int = 5,
        careful_rounds: int = 30,
    ) -> None:
        self.batch_size = int(batch_size)
        self.threads = threads
        self.rounds = int(rounds)
        self.careful_rounds = int(careful_rounds)

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return metrics.measure(
            model, example_input, batch_size=self.batch_size, threads=self.threads
        ).images_per_s

    def ratio(
        self, candidate, reference, example_input, reference_value=None, *, careful=False
    ) -> float:
        rounds = self.careful_rounds if careful else self.rounds
        return metrics.compare_speed(
            reference,
            candidate,
            example_input,
            batch_size=self.batch_size,
            threads=self.threads,
            rounds=rounds,
            warmup=5 if careful else 2,
        ).speedup

    def describe(self) -> str:
        return f"throughput (batch {self.batch_size}, interleaved with the original)"

    def __repr__(self) -> str:
        return f"Throughput(batch_size={self.batch_size})"


class Latency(Metric):
    """Milliseconds per image at batch size 1 (compared interleaved, like throughput)."""

    name, unit, natural, deterministic = "latency", "ms", "minimize", False

    def __init__(
        self, threads: int | None = None, rounds: int = 7, careful_rounds: int = 40
    ) -> None:
        self.threads = threads
        self.rounds = int(rounds)
        self.careful_rounds = int(careful_rounds)

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return metrics.latency(model, example_input, threads=self.threads)

    def ratio(
        self, candidate, reference, example_input, reference_value=None, *, careful=False
    ) -> float:
        rounds = self.careful_rounds if careful else self.rounds
        r = metrics.compare_speed(
            reference,
            candidate,
            example_input[:1],
            batch_size=1,
            threads=self.threads,
            rounds=rounds,
            inner=3,
        )
        return 1.0 / r.speedup

    def describe(self) -> str:
        return "latency (batch 1, interleaved with the original)"


params = Params()
macs = Macs()
flops = Flops()
size = Size()
size_fp16 = Size(values="fp16")
inference_size_fp16 = Size(values="fp16", inference=True)
throughput = Throughput()
latency = Latency()

for _metric in (params, macs, flops, size, size_fp16, inference_size_fp16, throughput, latency):
    objective_registry.add(_metric.name, _metric)

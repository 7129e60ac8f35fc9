"""Built-in metrics. Each is usable as ``metric(model, example_input) -> float``."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks, metrics
from ..deployment import Deployment
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


def _threads(metric: str, threads: int | None) -> int | None:
    """Threads to time with: None (PyTorch's setting) or a positive integer."""
    return None if threads is None else _checks.positive_int(f"{metric}.threads", threads)


class _Timing(Metric):
    """A speed, measured with the model in its deployment form."""

    deterministic = False

    def _form(self) -> str:
        return "" if self.deployment.is_default else f", {self.deployment.describe()}"

    def _form_args(self) -> str:
        d = self.deployment
        args = [f"dtype={d.dtype!r}"] if d.dtype != "float32" else []
        args += [f"{f}=True" for f in ("channels_last", "compile") if getattr(d, f)]
        return "".join(", " + a for a in args)


class Throughput(_Timing):
    """Images per second at ``batch_size``, in the form the model is deployed in.

    Compared with a reference, the two models are timed interleaved and the median of the
    per-round ratios is taken (``rounds`` during a search, ``careful_rounds`` for a final
    measurement), which cancels most of the load other processes put on a shared machine.

    Args:
        dtype, channels_last, compile: the deployment form
            (:class:`~autoprune.deployment.Deployment`): ``Throughput(256, dtype="float16",
            channels_last=True)`` times what a GPU serves. A dtype below float32 also has
            the compressed model's accuracy checked in it.

    >>> Throughput(256, dtype="bf16").describe()
    'throughput (batch 256, bfloat16, interleaved with the original)'
    """

    name, unit, natural = "throughput", "images/s", "maximize"

    def __init__(
        self,
        batch_size: int = 64,
        threads: int | None = None,
        rounds: int = 5,
        careful_rounds: int = 30,
        dtype: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.batch_size = _checks.positive_int("throughput.batch_size", batch_size)
        self.threads = _threads("throughput", threads)
        self.rounds = _checks.positive_int("throughput.rounds", rounds)
        self.careful_rounds = _checks.positive_int("throughput.careful_rounds", careful_rounds)
        self.deployment = Deployment(dtype, channels_last, compile, param="throughput")

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return metrics.measure(
            model,
            example_input,
            batch_size=self.batch_size,
            threads=self.threads,
            deployment=self.deployment,
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
            deployment=self.deployment,
        ).speedup

    def describe(self) -> str:
        return f"throughput (batch {self.batch_size}{self._form()}, interleaved with the original)"

    def __repr__(self) -> str:
        return f"Throughput(batch_size={self.batch_size}{self._form_args()})"


class Latency(_Timing):
    """Milliseconds per image at batch size 1 (compared interleaved, like throughput), in
    the deployment form ``dtype``, ``channels_last``, ``compile`` (see :class:`Throughput`)."""

    name, unit, natural = "latency", "ms", "minimize"

    def __init__(
        self,
        threads: int | None = None,
        rounds: int = 7,
        careful_rounds: int = 40,
        dtype: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.threads = _threads("latency", threads)
        self.rounds = _checks.positive_int("latency.rounds", rounds)
        self.careful_rounds = _checks.positive_int("latency.careful_rounds", careful_rounds)
        self.deployment = Deployment(dtype, channels_last, compile, param="latency")

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return metrics.latency(
            model, example_input, threads=self.threads, deployment=self.deployment
        )

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
            deployment=self.deployment,
        )
        return 1.0 / r.speedup

    def describe(self) -> str:
        return f"latency (batch 1{self._form()}, interleaved with the original)"

    def __repr__(self) -> str:
        return f"Latency({self._form_args().removeprefix(', ')})"


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

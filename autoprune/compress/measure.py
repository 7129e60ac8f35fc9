"""Measuring a model before and after: accuracy, size, MACs and speed, as one typed record.

:class:`Measurements` reads like the mapping it is saved as (``m["macs"]``), so a result
loaded from ``result.json`` and one fresh from a run are used the same way.

    >>> m = Measurements(val_accuracy=0.9, test_accuracy=0.89, params=100.0)
    >>> m["params"], "throughput" in m, m.get("throughput")
    (100.0, False, None)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from .. import metrics
from ..data import Loaders
from ..deployment import Deployment
from .context import AccuracyFn, RunContext


@dataclass
class Measurements(Mapping):
    """What was measured of one model; a field never measured is None (and absent from
    :meth:`to_dict`).

    Attributes:
        val_accuracy, test_accuracy: the accuracy on the validation and test splits.
        deployed_val_accuracy, deployed_test_accuracy: the same, with the model in the
            lower precision the objectives deploy it in (None in float32).
        params, nonzero_params, macs: counts; MACs per image.
        dense_bytes, sparse_bytes, sparse_bytes_fp16: stored size, dense fp32 and in the
            sparse format with fp32 or fp16 values.
        throughput: images/s at batch 64; latency_ms: at batch 1 (both in the deployment
            form).
        speedup, latency_speedup: the compressed model's, as ratios to the original
            measured interleaved with it.
    """

    val_accuracy: float | None = None
    test_accuracy: float | None = None
    deployed_val_accuracy: float | None = None
    deployed_test_accuracy: float | None = None
    params: float | None = None
    nonzero_params: float | None = None
    macs: float | None = None
    dense_bytes: float | None = None
    sparse_bytes: float | None = None
    sparse_bytes_fp16: float | None = None
    throughput: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    latency_speedup: float | None = None

    # -- reading as a mapping -------------------------------------------------------------
    def to_dict(self) -> dict[str, float]:
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: v for k, v in values if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurements:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def __getitem__(self, key: str) -> float:
        value = self.to_dict().get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def measure(
    model: nn.Module,
    loaders: Loaders,
    example_input: torch.Tensor,
    accuracy: AccuracyFn,
    deployment: Deployment | None = None,
) -> Measurements:
    """Accuracy on the validation and test splits (also in the ``deployment``'s dtype when
    it lowers the precision), and the model's counts and sizes."""
    s = metrics.summarize(model, example_input)
    out = Measurements(
        val_accuracy=float(accuracy(model, loaders.val)),
        test_accuracy=float(accuracy(model, loaders.test)),
        params=float(s.params),
        nonzero_params=float(s.nonzero_params),
        macs=float(s.macs),
        dense_bytes=float(s.dense_bytes),
        sparse_bytes=float(s.sparse_bytes),
        sparse_bytes_fp16=float(s.sparse_bytes_fp16),
    )
    if deployment is not None and deployment.lowers_precision:
        deployed = deployment.evaluated(model)
        out.deployed_val_accuracy = float(accuracy(deployed, loaders.val))
        out.deployed_test_accuracy = float(accuracy(deployed, loaders.test))
    return out


def measure_speed(
    original: nn.Module,
    model: nn.Module,
    example_input: torch.Tensor,
    before: Measurements,
    after: Measurements,
    deployment: Deployment | None = None,
) -> None:
    """Time ``model`` interleaved with ``original`` (batch 64 and batch 1, median of 20
    rounds), both in their ``deployment`` form, and fill in both records' speeds."""
    thr = metrics.compare_speed(
        original, model, example_input, batch_size=64, rounds=20, warmup=5, deployment=deployment
    )
    lat = metrics.compare_speed(
        original,
        model,
        example_input[:1],
        batch_size=1,
        rounds=20,
        warmup=5,
        inner=5,
        deployment=deployment,
    )
    before.throughput = thr.reference.images_per_s
    after.throughput = thr.candidate.images_per_s
    before.latency_ms = lat.reference.latency_ms
    after.latency_ms = lat.candidate.latency_ms
    after.speedup = thr.speedup
    after.latency_speedup = lat.speedup


def measure_final(
    ctx: RunContext, compressed: nn.Module, before: Measurements, after_val: float | None
) -> tuple[Measurements, dict[str, float]]:
    """Measure the compressed model, its speed interleaved with the original's, and each
    objective carefully, as a ratio to the original; ``after_val`` (the accuracy measured
    when it was recovered) stands for its validation accuracy."""
    after = measure(compressed, ctx.loaders, ctx.example_input, ctx.accuracy, ctx.deployment)
    if after_val is not None:
        after.val_accuracy = after_val
    measure_speed(ctx.original, compressed, ctx.example_input, before, after, ctx.deployment)
    final = {
        o.name: o.metric.ratio(
            compressed, ctx.original, ctx.example_input, ctx.reference.get(o.name), careful=True
        )
        for o in ctx.objectives
    }
    return after, final

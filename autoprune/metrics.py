"""Honest measurements: parameters, FLOPs/MACs, sizes, throughput, latency, per-layer rows.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> count_params(net)
    Params(total=10, nonzero=10)
    >>> count_macs(net, torch.randn(1, 4))
    8

FLOPs come from :mod:`torch.utils.flop_counter` (a multiply-add is 2 FLOPs, so MACs are
half of them); they count the dense work the model does, zeros included. Timings run
under ``torch.inference_mode()`` with an explicit thread count, warm-up runs and the median
of repeats (on CUDA, between CUDA events); they report the threads, batch size, device and
deployment form (:class:`~autoprune.deployment.Deployment`: dtype, channels-last, compiled)
they were measured with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import encoding
from .deployment import Deployment
from .plan import get_plan


class Params(NamedTuple):
    total: int
    nonzero: int


def count_params(model: nn.Module) -> Params:
    """Parameters in the model, and how many of them are nonzero."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return Params(total, nonzero)


def _flop_counts(model: nn.Module, example_input: torch.Tensor) -> tuple[int, dict[str, int]]:
    was = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(example_input)
    finally:
        model.train(was)
    per_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        _, _, name = key.partition(".")
        per_module[name] = int(sum(ops.values()))
    return int(counter.get_total_flops()), per_module


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example_input`` (its batch size included)."""
    return _flop_counts(model, example_input)[0]


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2)."""
    return count_flops(model, example_input) // 2


def dense_size(model: nn.Module | Mapping[str, torch.Tensor]) -> int:
    """Bytes of the ``state_dict`` stored densely (every parameter and buffer)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return sum(t.numel() * t.element_size() for t in state.values())


def sparse_size(
    model: nn.Module, values: str = "fp32", encoding_: str = "auto", inference: bool = False
) -> int:
    """Bytes of the model's tensors in autoprune's sparse format (:mod:`autoprune.encoding`).

    This is the payload: the file adds a header of names and shapes (a few kB), just as
    :func:`dense_size` counts tensor bytes without a container. Block-pruned layers (per
    the model's plan) may use the block encoding. ``inference`` stores BatchNorm as the
    scale and shift inference needs (:func:`autoprune.encoding.inference_state`).
    """
    state = encoding.inference_state(model) if inference else model
    blob = encoding.encode(state, values=values, encoding=encoding_, blocks=block_hints(model))
    return sum(info.nbytes for info in encoding.describe(blob))


def block_hints(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{weight name: block shape}`` for the block-pruned layers of a model's plan."""
    return {
        f"{e.layer}.weight": tuple(e.block) for e in get_plan(model).layers if e.block is not None
    }


# -- timing -----------------------------------------------------------------------------


@dataclass
class Timing:
    """A timing: the median over repeats, and the conditions it was taken in."""

    median_s: float
    runs: list[float]
    batch_size: int
    threads: int
    device: str
    deployment: str = "float32"

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_s

    @property
    def latency_ms(self) -> float:
        return self.median_s * 1e3

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s, "latency_ms": self.latency_ms}


class _Threads:
    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> int:
        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)
        return torch.get_num_threads()

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def _runner(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model(x)

    return run


def _timed(run: Callable[[], None], device: torch.device, times: int = 1) -> float:
    """Seconds one call of ``run`` takes (the mean of ``times``): on CUDA between two
    events recorded on the stream, so that launch overhead and the host's clock don't count;
    elsewhere by the wall clock."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(times):
            run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / times
    t0 = time.perf_counter()
    for _ in range(times):
        run()
    return (time.perf_counter() - t0) / times


def _batch(example_input: torch.Tensor, batch_size: int) -> torch.Tensor:
    reps = -(-batch_size // example_input.shape[0])
    return example_input.repeat(reps, *([1] * (example_input.dim() - 1)))[:batch_size]


def measure(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    batch_size: int = 64,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    deployment: Deployment | None = None,
) -> Timing:
    """Time a forward pass at ``batch_size``: warm-up runs, then the median of ``repeats``,
    with the model in its ``deployment`` form (default: as it is)."""
    deployment = deployment or Deployment()
    x = deployment.input(_batch(example_input, batch_size))
    was = model.training
    model.eval()
    try:
        with _Threads(threads) as n, torch.inference_mode():
            run = _runner(deployment.model(model), x)
            for _ in range(warmup):
                run()
            runs = [_timed(run, x.device) for _ in range(repeats)]
    finally:
        model.train(was)
    return Timing(
        statistics.median(runs), runs, batch_size, n, str(x.device), deployment.describe()
    )


def throughput(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    batch_size: int = 64,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    deployment: Deployment | None = None,
) -> float:
    """Images per second at ``batch_size`` (median of repeats)."""
    return measure(
        model,
        example_input,
        batch_size=batch_size,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        deployment=deployment,
    ).images_per_s


def latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 20,
    deployment: Deployment | None = None,
) -> float:
    """Milliseconds per forward pass at batch size 1 (median of repeats)."""
    return measure(
        model,
        example_input[:1],
        batch_size=1,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        deployment=deployment,
    ).latency_ms


@dataclass
class Ratio:
    """Speed of a candidate over a reference, timed interleaved (A B A B ...)."""

    speedup: float  # median over rounds of reference time / candidate time
    ratios: list[float]
    reference: Timing
    candidate: Timing


def compare_speed(
    reference: nn.Module,
    candidate: nn.Module,
    example_input: torch.Tensor,
    *,
    batch_size: int = 64,
    threads: int | None = None,
    warmup: int = 3,
    rounds: int = 10,
    inner: int = 1,
    deployment: Deployment | None = None,
) -> Ratio:
    """How many times faster ``candidate`` runs than ``reference``, measured side by side,
    both in their ``deployment`` form (default: as they are).

    On a shared machine, load from other processes changes timings by several times
    within minutes; timing the two models alternately and taking the median of the
    per-round ratios cancels most of it. On CUDA each timing is between CUDA events.
    """
    deployment = deployment or Deployment()
    x = deployment.input(_batch(example_input, batch_size))
    modes = (reference.training, candidate.training)
    reference.eval()
    candidate.eval()
    ta: list[float] = []
    tb: list[float] = []
    try:
        with _Threads(threads) as n, torch.inference_mode():
            ra = _runner(deployment.model(reference), x)
            rb = _runner(deployment.model(candidate), x)
            for _ in range(warmup):
                ra()
                rb()
            for _ in range(rounds):
                ta.append(_timed(ra, x.device, inner))
                tb.append(_timed(rb, x.device, inner))
    finally:
        reference.train(modes[0])
        candidate.train(modes[1])
    ratios = [a / b for a, b in zip(ta, tb)]
    dev, form = str(x.device), deployment.describe()
    return Ratio(
        statistics.median(ratios),
        ratios,
        Timing(statistics.median(ta), ta, batch_size, n, dev, form),
        Timing(statistics.median(tb), tb, batch_size, n, dev, form),
    )


# -- per-layer report -------------------------------------------------------------------


@dataclass
class LayerRow:
    """One Conv/Linear layer, before and after pruning."""

    name: str
    type: str
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...]
    sparsity: float  # 1 - nonzero weights after / weights before
    params_before: int
    params_after: int  # nonzero parameters (weight and bias) after
    macs_before: int
    macs_after: int


def layer_report(
    original: nn.Module, pruned: nn.Module, example_input: torch.Tensor
) -> list[LayerRow]:
    """Per-layer rows comparing a pruned model with its original (layers matched by name)."""
    _, flops_a = _flop_counts(original, example_input)
    _, flops_b = _flop_counts(pruned, example_input)
    after = dict(pruned.named_modules())
    rows = []
    for name, m in original.named_modules():
        if not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or name not in after:
            continue
        p = after[name]
        params_before = sum(t.numel() for t in m.parameters(recurse=False))
        params_after = sum(
            int(torch.count_nonzero(t.detach())) for t in p.parameters(recurse=False)
        )
        rows.append(
            LayerRow(
                name=name,
                type=type(m).__name__,
                shape_before=tuple(m.weight.shape),
                shape_after=tuple(p.weight.shape),
                sparsity=1.0 - int(torch.count_nonzero(p.weight.detach())) / m.weight.numel(),
                params_before=params_before,
                params_after=params_after,
                macs_before=flops_a.get(name, 0) // 2,
                macs_after=flops_b.get(name, 0) // 2,
            )
        )
    return rows


def _fmt_int(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_table(rows: list[dict[str, Any]] | list[Any], columns: list[str] | None = None) -> str:
    """A plain-text table of dicts or dataclasses, columns aligned."""
    dicts = [r if isinstance(r, dict) else asdict(r) for r in rows]
    if not dicts:
        return "(no rows)"
    columns = columns or list(dicts[0])

    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, int):
            return _fmt_int(v)
        if isinstance(v, tuple):
            return "x".join(str(i) for i in v)
        return str(v)

    table = [[cell(d.get(c, "")) for c in columns] for d in dicts]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    return "\n".join(lines)


@dataclass
class Summary:
    """Whole-model measurements (see :func:`summarize`)."""

    params: int
    nonzero_params: int
    macs: int
    dense_bytes: int
    sparse_bytes: int
    sparse_bytes_fp16: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def summarize(model: nn.Module, example_input: torch.Tensor) -> Summary:
    """Parameters, MACs and sizes of a model for one input of ``example_input``'s shape."""
    p = count_params(model)
    return Summary(
        params=p.total,
        nonzero_params=p.nonzero,
        macs=count_macs(model, example_input[:1]),
        dense_bytes=dense_size(model),
        sparse_bytes=sparse_size(model, "fp32"),
        sparse_bytes_fp16=sparse_size(model, "fp16"),
    )

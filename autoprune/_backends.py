"""Numerics that do not depend on the backend's shortcuts, for checks that must be exact.

On CUDA, PyTorch lets cuDNN run fp32 convolutions in TF32 (a 10-bit mantissa) and may pick
a different algorithm for each shape, so a masked model and its physically smaller copy
can differ by about 1e-5 relative from arithmetic alone, or agree where they should not.
:func:`exact_math` turns TF32 off for convolutions and matmuls, asks cuDNN for
deterministic algorithms without benchmarking, and puts every flag back afterwards.

    >>> before = torch.backends.cudnn.allow_tf32
    >>> with exact_math():
    ...     torch.backends.cudnn.allow_tf32
    False
    >>> torch.backends.cudnn.allow_tf32 == before
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .errors import ConfigError

DEVICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(value: Any, param: str = "device") -> torch.device:
    """The device a run uses: ``"auto"`` is CUDA when PyTorch sees one, else the CPU.

    Asking for CUDA where there is none is a :class:`ConfigError` that says why.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    text = str(value) if isinstance(value, torch.device) else value
    if not isinstance(text, str):
        raise ConfigError(f"{param}: expected {DEVICES}, got {value!r}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{param}: expected {DEVICES}, got {value!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{param}: expected {DEVICES}, got {value!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise ConfigError(
                f"{param}: {text!r} was asked for, but PyTorch {torch.__version__} sees no "
                f"CUDA device ({build}); use 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{param}: {text!r} was asked for, but there are "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def describe_device(device: torch.device) -> str:
    """The device as a report names it, with the GPU's name on CUDA."""
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@contextmanager
def exact_math() -> Iterator[None]:
    """fp32 math in full precision on every backend, inside the block only."""
    matmul = torch.get_float32_matmul_precision()
    cuda_matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(
            enabled=torch.backends.cudnn.enabled,
            benchmark=False,
            deterministic=True,
            allow_tf32=False,
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = cuda_matmul_tf32
        torch.set_float32_matmul_precision(matmul)

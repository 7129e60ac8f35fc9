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

import torch


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

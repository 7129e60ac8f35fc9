"""A sparse storage format for pruned weights, and the sizes it achieves.

The format (``.apz``, "autoprune sparse", version 2) stores a ``state_dict``:

* ``b"APZ2"``, then a little-endian ``uint32`` header length, then the header: UTF-8
  JSON compressed with zlib, then the payload segments the header points to (offset and
  length in bytes);
* each tensor says where its stored values go in one of six encodings, by default
  whichever makes the tensor smallest:

  ============  ============================================================================
  ``dense``     every value
  ``bitmask``   one bit per element (``numpy.packbits``, big-endian bit order), then the
                nonzero values in row-major order
  ``delta``     relative indices (Han et al., 2016): per nonzero, a ``uint8`` gap from the
                previous one, then its value; a gap over 255 inserts filler entries of gap
                255 and value 0
  ``rice``      the same gaps in a Golomb-Rice code: each gap's quotient by ``2**k`` in
                unary (one bit stream), its remainder in ``k`` bits (another), ``k`` chosen
                per tensor; about ``H(density) / density`` bits per nonzero
  ``block``     one bit per block of a block-pruned weight matrix (Conv viewed as
                ``out x in*kh*kw``), then the values of the kept blocks' elements
  ``constant``  one value that every element holds (e.g. a BatchNorm's
                ``num_batches_tracked``, or an all-zero tensor)
  ============  ============================================================================

* floating-point values are stored as ``fp32`` or, with ``values="fp16"``, as ``fp16``
  (lossy: a round trip gives ``w.half().float()``); other dtypes are stored as they are;
* a tensor whose stored values take at most 256 distinct values (a quantized one, see
  :class:`autoprune.schemes.Quantize`) keeps them as a table plus one
  ``ceil(log2(size))``-bit index per value, when that is smaller; this is exact.

Version 1 files (``b"APZ1"``, an uncompressed header, no ``rice``, no tables) still read.

A round trip with fp32 values is exact::

    >>> import torch
    >>> w = torch.tensor([[0.0, 1.5], [0.0, 0.0]])
    >>> torch.equal(decode(encode({"w": w}))["w"], w)
    True
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ._io import atomic_write
from .errors import ConfigError, DataError

MAGIC = b"APZ2"  # version 1 wrote b"APZ1" and an uncompressed header
FORMAT = "autoprune.sparse/2"
ENCODINGS = ("dense", "bitmask", "delta", "rice", "block", "constant")
_NP_DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    encoding: str
    nbytes: int


def _value_dtype(t: torch.Tensor, values: str) -> np.dtype:
    if t.is_floating_point():
        return np.dtype(_NP_DTYPES[values])
    return t.numpy().dtype


def _as_matrix(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)


def _block_mask(matrix: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Bool ``(R, C)``: blocks holding any nonzero."""
    bh, bw = block
    rows, cols = matrix.shape
    padded = np.zeros((-(-rows // bh) * bh, -(-cols // bw) * bw), dtype=bool)
    padded[:rows, :cols] = matrix != 0
    r, c = padded.shape[0] // bh, padded.shape[1] // bw
    return padded.reshape(r, bh, c, bw).any(axis=(1, 3))


def _expand(blocks: np.ndarray, block: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    full = np.repeat(np.repeat(blocks, block[0], axis=0), block[1], axis=1)
    return full[: shape[0], : shape[1]]


def _pack_bits(ints: np.ndarray, bits: int) -> bytes:
    """``ints`` (non-negative, below ``2**bits``) as ``bits``-bit fields, MSB first."""
    if bits == 0 or ints.size == 0:
        return b""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    fields = (ints.astype(np.int64)[:, None] >> shifts) & 1
    return np.packbits(fields.astype(np.uint8).reshape(-1)).tobytes()


def _unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    if bits == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits)
    return flat.reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))


def _rice(gaps: np.ndarray) -> tuple[list[bytes], dict]:
    """Golomb-Rice code of the gaps: quotients in unary (one stream), remainders in ``k``
    bits (another), ``k`` chosen to make the two smallest."""
    costs = [int(((gaps >> k) + 1).sum()) + k * gaps.size for k in range(24)]
    k = int(np.argmin(costs))
    q = gaps >> k
    unary = np.ones(int((q + 1).sum()), dtype=np.uint8)
    unary[np.cumsum(q + 1) - 1] = 0
    rem = gaps & ((1 << k) - 1)
    meta = {"k": k, "count": int(gaps.size), "unary_bits": int(unary.size)}
    return [np.packbits(unary).tobytes(), _pack_bits(rem, k)], meta


def _unrice(unary_seg: bytes, rem_seg: bytes, meta: dict) -> np.ndarray:
    unary = np.unpackbits(np.frombuffer(unary_seg, dtype=np.uint8), count=meta["unary_bits"])
    ends = np.flatnonzero(unary == 0)
    q = np.diff(np.concatenate([[-1], ends])) - 1
    return (q << meta["k"]) | _unpack_bits(rem_seg, meta["k"], meta["count"])


def _positions(
    a: np.ndarray, encoding: str, block: tuple[int, int] | None
) -> tuple[list[bytes], np.ndarray, dict]:
    """The segments that say where the stored values go, the values, and extra header."""
    flat = a.reshape(-1)
    if encoding == "dense":
        return [], flat, {}
    if encoding == "constant":
        return [], flat[:1], {}
    if encoding == "bitmask":
        nz = flat != 0
        return [np.packbits(nz).tobytes()], flat[nz], {}
    if encoding == "delta":
        pos = np.flatnonzero(flat)
        gaps = np.diff(np.concatenate([[-1], pos])) - 1
        fillers = gaps // 256
        n = len(pos) + int(fillers.sum())
        idx = np.full(n, 255, dtype=np.uint8)
        vals = np.zeros(n, dtype=flat.dtype)
        real = np.cumsum(fillers + 1) - 1  # entry index of each real nonzero
        idx[real] = (gaps - 256 * fillers).astype(np.uint8)
        vals[real] = flat[pos]
        return [idx.tobytes()], vals, {}
    if encoding == "rice":
        pos = np.flatnonzero(flat)
        segs, meta = _rice(np.diff(np.concatenate([[-1], pos])) - 1)
        return segs, flat[pos], {"rice": meta}
    if encoding == "block":
        assert block is not None
        m = _as_matrix(a)
        keep = _block_mask(m, block)
        values = m[_expand(keep, block, m.shape)]
        return (
            [np.packbits(keep.reshape(-1)).tobytes()],
            values,
            {"block": list(block), "grid": list(keep.shape)},
        )
    raise ConfigError(f"encoding: expected one of {', '.join(ENCODINGS)}, got {encoding!r}")


def _values(vals: np.ndarray, vdt: np.dtype) -> tuple[list[bytes], dict]:
    """The values as ``vdt``, or, when that is smaller, as a table of the distinct values
    (at most 256) and one ``bits``-bit index per value. Both are exact."""
    raw = vals.astype(vdt)
    plain = ([raw.tobytes()], {})
    if raw.size < 2 or np.unique(raw[:1024]).size > 256:  # the sample shows it is no use
        return plain
    table, index = np.unique(raw, return_inverse=True)
    if table.size > 256:
        return plain
    bits = max(1, int(np.ceil(np.log2(table.size))))
    segs = [table.tobytes(), _pack_bits(index.reshape(-1), bits)]
    if sum(len(s) for s in segs) >= raw.nbytes:
        return plain
    return segs, {"codebook": {"size": int(table.size), "bits": bits, "count": int(raw.size)}}


def _encode_tensor(
    a: np.ndarray, encoding: str, vdt: np.dtype, block: tuple[int, int] | None
) -> tuple[list[bytes], dict]:
    segs, vals, extra = _positions(a, encoding, block)
    vsegs, vextra = _values(vals, vdt) if a.dtype.kind == "f" else ([vals.tobytes()], {})
    return segs + vsegs, {**extra, **vextra}


def _read_values(segments: list[bytes], meta: dict, vdt: np.dtype) -> np.ndarray:
    book = meta.get("codebook")
    if book is None:
        return np.frombuffer(segments[0], dtype=vdt)
    table = np.frombuffer(segments[0], dtype=vdt)
    return table[_unpack_bits(segments[1], book["bits"], book["count"])]


def _decode_tensor(segments: list[bytes], meta: dict, vdt: np.dtype) -> np.ndarray:
    shape = tuple(meta["shape"])
    numel = int(np.prod(shape)) if shape else 1
    enc = meta["encoding"]
    n_pos = {"dense": 0, "constant": 0, "bitmask": 1, "delta": 1, "rice": 2, "block": 1}
    if enc not in n_pos:
        raise DataError(f"unknown tensor encoding {enc!r} in file")
    vals = _read_values(segments[n_pos[enc] :], meta, vdt)
    if enc == "dense":
        out = vals
    elif enc == "constant":
        out = np.full(numel, vals[0], dtype=vdt)
    elif enc == "bitmask":
        nz = np.unpackbits(np.frombuffer(segments[0], dtype=np.uint8), count=numel).astype(bool)
        out = np.zeros(numel, dtype=vdt)
        out[nz] = vals
    elif enc in ("delta", "rice"):
        if enc == "delta":
            gaps = np.frombuffer(segments[0], dtype=np.uint8).astype(np.int64)
        else:
            gaps = _unrice(segments[0], segments[1], meta["rice"])
        out = np.zeros(numel, dtype=vdt)
        if len(gaps):
            out[np.cumsum(gaps + 1) - 1] = vals
    else:  # block
        grid = tuple(meta["grid"])
        keep = (
            np.unpackbits(np.frombuffer(segments[0], dtype=np.uint8), count=grid[0] * grid[1])
            .astype(bool)
            .reshape(grid)
        )
        mshape = (shape[0], numel // shape[0]) if len(shape) >= 2 else (1, numel)
        m = np.zeros(mshape, dtype=vdt)
        m[_expand(keep, tuple(meta["block"]), mshape)] = vals
        out = m.reshape(-1)
    return out.reshape(shape)


def _state(obj: torch.nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return obj.state_dict() if isinstance(obj, torch.nn.Module) else obj


def encode(
    state: torch.nn.Module | Mapping[str, torch.Tensor],
    *,
    values: str = "fp32",
    encoding: str = "auto",
    blocks: Mapping[str, tuple[int, int]] | None = None,
) -> bytes:
    """Encode a ``state_dict`` (or a module's) into the ``.apz`` byte format.

    Args:
        values: ``"fp32"`` or ``"fp16"`` for floating-point values.
        encoding: ``"auto"`` (smallest per tensor) or one of ``dense``, ``bitmask``,
            ``delta``, ``rice`` for every tensor.
        blocks: ``{tensor name: (rows, cols)}`` to consider the ``block`` encoding for.
    """
    if values not in _NP_DTYPES:
        raise ConfigError(f"values: expected 'fp32' or 'fp16', got {values!r}")
    if encoding != "auto" and encoding not in ENCODINGS[:4]:
        raise ConfigError(
            f"encoding: expected 'auto', 'dense', 'bitmask', 'delta' or 'rice', got {encoding!r}"
        )
    blocks = dict(blocks or {})
    header: dict = {"format": FORMAT, "values": values, "tensors": []}
    payload = io.BytesIO()
    for name, tensor in _state(state).items():
        t = tensor.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        a = t.numpy()
        vdt = _value_dtype(t, values)
        constant = a.size > 1 and bool(np.all(a.reshape(-1) == a.reshape(-1)[0]))
        if not t.is_floating_point() or t.dim() == 0:
            candidates = ["dense"] + (["constant"] if constant and encoding == "auto" else [])
        elif encoding == "auto":
            candidates = ["dense", "bitmask", "delta", "rice"] + (
                ["block"] if name in blocks else []
            )
            candidates += ["constant"] if constant else []
        else:
            candidates = [encoding]
        best = None
        for enc in candidates:
            segs, extra = _encode_tensor(a, enc, vdt, blocks.get(name))
            size = sum(len(s) for s in segs)
            if best is None or size < best[0]:
                best = (size, enc, segs, extra)
        size, enc, segs, extra = best
        offsets = []
        for s in segs:
            offsets.append([payload.tell(), len(s)])
            payload.write(s)
        header["tensors"].append(
            {
                "name": name,
                "shape": list(a.shape),
                "dtype": str(t.dtype),
                "encoding": enc,
                "segments": offsets,
                **extra,
            }
        )
    head = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    return MAGIC + struct.pack("<I", len(head)) + head + payload.getvalue()


def inference_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's ``state_dict`` as inference needs it: every BatchNorm folded into a
    scale and a shift.

    In eval mode BatchNorm computes ``(x - mean) / sqrt(var + eps) * weight + bias``, i.e.
    ``a * x + c``. The returned state stores ``a`` as the weight, ``c`` as the bias, a zero
    mean and a variance of ``1 - eps``, so the same module computes the same outputs from
    it, while the constant mean and variance cost a few bytes in the ``constant`` encoding.
    Training statistics are not kept.
    """
    state = dict(model.state_dict())
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or m.running_var is None:
            continue
        p = f"{name}." if name else ""
        std = torch.sqrt(m.running_var.detach() + m.eps)
        weight = m.weight.detach() if m.weight is not None else torch.ones_like(std)
        bias = m.bias.detach() if m.bias is not None else torch.zeros_like(std)
        a = weight / std
        c = bias - m.running_mean.detach() * a
        if m.weight is not None:
            state[p + "weight"], state[p + "bias"] = a, c
            state[p + "running_mean"] = torch.zeros_like(a)
            state[p + "running_var"] = torch.full_like(a, 1.0 - m.eps)
        else:  # no affine parameters: keep the statistics as they are
            continue
        if p + "num_batches_tracked" in state:
            state[p + "num_batches_tracked"] = torch.zeros_like(state[p + "num_batches_tracked"])
    return state


def _header(data: bytes) -> tuple[dict, int]:
    """The JSON header and the payload's offset."""
    if data[:4] not in (MAGIC, b"APZ1") or len(data) < 8:
        raise DataError("not an autoprune sparse file (bad magic bytes)")
    (n,) = struct.unpack("<I", data[4:8])
    head = data[8 : 8 + n]
    try:
        header = json.loads(zlib.decompress(head) if data[:4] == MAGIC else head)
    except (zlib.error, ValueError):
        raise DataError("corrupt autoprune sparse file (its header does not decode)") from None
    return header, 8 + n


def decode(data: bytes) -> dict[str, torch.Tensor]:
    """Decode ``.apz`` bytes back into a ``state_dict``."""
    header, base = _header(data)
    if header.get("format") not in ("autoprune.sparse/1", FORMAT):
        raise DataError(
            f"unsupported sparse format {header.get('format')!r}; this autoprune reads "
            f"autoprune.sparse/1 and {FORMAT} (upgrade autoprune to read newer files)"
        )
    out: dict[str, torch.Tensor] = {}
    for meta in header["tensors"]:
        dtype = getattr(torch, meta["dtype"].removeprefix("torch."))
        is_float = torch.empty(0, dtype=dtype).is_floating_point()
        vdt = (
            np.dtype(_NP_DTYPES[header["values"]])
            if is_float
            else torch.empty(0, dtype=dtype).numpy().dtype
        )
        segs = [data[base + off : base + off + ln] for off, ln in meta["segments"]]
        arr = _decode_tensor(segs, meta, vdt)
        out[meta["name"]] = torch.from_numpy(arr.copy()).to(dtype)
    return out


def describe(data: bytes) -> list[TensorInfo]:
    """What each tensor of an encoded blob uses: encoding and payload bytes."""
    header, _ = _header(data)
    return [
        TensorInfo(m["name"], tuple(m["shape"]), m["encoding"], sum(ln for _, ln in m["segments"]))
        for m in header["tensors"]
    ]


def save(
    state: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, **kwargs
) -> int:
    """Encode and write atomically to ``path``; returns the bytes written."""
    data = encode(state, **kwargs)
    atomic_write(path, data)
    return len(data)


def load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an ``.apz`` file back into a ``state_dict``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"sparse model file not found: {path}")
    with open(path, "rb") as f:
        return decode(f.read())

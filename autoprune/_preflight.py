"""The pre-flight that ``validate``, ``search`` and ``sensitivity`` share: everything a
spec names is built and tried once, before any training, and each fault is one
:class:`~autoprune.spec.SpecError` that names the key path.

What a spec's keys alone cannot tell is checked here: the data loads (an npz has ``x``
and ``y`` of equal length with integer labels, an image folder decodes); the model builds,
its checkpoint loads into it, and it runs one forward pass on one input of the data's
shape with one output per class; the scheme's patterns each match a layer and leave
something to search; the objectives, the recovery and the bounds build; the storage URL
connects.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from . import _runner as runner
from .data import Data
from .errors import AutopruneError
from .models import load_checkpoint
from .objectives import Objective
from .recovery import Recovery
from .schemes import Compose, Scheme
from .schemes.base import matches
from .spec import Spec, SpecError

T = TypeVar("T")


@dataclass
class Checked:
    """What the pre-flight built: reused by the run, so nothing is loaded twice."""

    data: Data
    model: nn.Module  # the architecture; the checkpoint's weights when the spec gives one
    example_input: torch.Tensor
    scheme: Scheme
    objectives: list[Objective]
    recovery: Recovery
    device: torch.device


def preflight(spec: Spec, out_dir: str | None = None) -> Checked:
    """Build and try everything ``spec`` names (see the module docstring).

    ``out_dir``: the run directory, where a cached baseline may stand in for training.
    Libraries' warnings while trying are not shown: a fault is the one line raised.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _preflight(spec, out_dir)


def _preflight(spec: Spec, out_dir: str | None) -> Checked:
    device = _at("device", runner.build_device, spec)
    data = _data(spec)
    model, x = _model(spec, data)
    _weights(spec, model, data, out_dir)
    scheme = _at("scheme", runner.build_scheme, spec)
    _scheme_fits(spec, scheme, model, x)
    objectives = _at("objective", runner.build_objectives, spec)
    recovery = _at("recovery", runner.build_recovery, spec)
    _bounds(spec, scheme, model, x)
    _storage(spec.resolved["search"]["storage"])
    return Checked(data, model, x, scheme, objectives, recovery, device)


def _at(path: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, its error relayed under ``path`` when it does not name one itself."""
    try:
        return fn(*args)
    except AutopruneError as exc:
        raise _under(path, str(exc)) from None


def _under(path: str, message: str) -> SpecError:
    head = message.split(":", 1)[0]
    if head.startswith(path.split(".")[0]):
        return SpecError(message)
    return SpecError(f"{path}: {message}")


def _first_line(exc: BaseException) -> str:
    """An exception as one line, without terminal colours."""
    text = str(exc).replace("\x1b[", "").strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line[:300]


def _data(spec: Spec) -> Data:
    d = spec.resolved["data"]
    try:
        data = runner.build_data(spec)
    except AutopruneError as exc:
        message = str(exc)
        key = message.split(":", 1)[0]
        if key in d["options"] or key in ("train", "test", "root", "val_fraction"):
            raise SpecError(f"data.options.{message}") from None
        raise _under("data", message) from None
    except Exception as exc:  # a provider of the user's, or a library under it
        raise SpecError(f"data: {d['name']} could not be loaded: {_first_line(exc)}") from None
    sizes = data.sizes()
    for split, n in zip(("train", "val", "test"), sizes):
        if n == 0:
            raise SpecError(
                f"data: the {split} split of {d['name']} is empty ({sizes[0]} train, "
                f"{sizes[1]} val, {sizes[2]} test); check data.options' fractions"
            )
    return data


def _model(spec: Spec, data: Data) -> tuple[nn.Module, torch.Tensor]:
    """The architecture, run once on one input of the data's shape."""
    m = spec.resolved["model"]
    try:
        model = runner.create_model(m["name"], data.num_classes, data.input_shape, **m["options"])
    except AutopruneError as exc:
        message = str(exc).removeprefix("model: ")
        head = message.split(":", 1)[0].split("[", 1)[0]
        if head in m["options"]:
            raise SpecError(f"model.options.{message}") from None
        raise SpecError(f"model.name: {message}") from None
    except Exception as exc:
        raise SpecError(
            f"model: {m['name']} could not be built with options {m['options']}: {_first_line(exc)}"
        ) from None
    x = data.example_input(1)
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise SpecError(
            f"model: {m['name']} cannot run on the data's input of shape "
            f"{tuple(data.input_shape)}: {_first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, data.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(
            f"model: {m['name']} gives outputs of shape {got} for one input; the data has "
            f"{data.num_classes} classes, so (1, {data.num_classes}) was expected"
        )
    return model, x


def _weights(spec: Spec, model: nn.Module, data: Data, out_dir: str | None) -> None:
    """The checkpoint loads into the model, or there is a baseline to train (or cached)."""
    m = spec.resolved["model"]
    if m.get("checkpoint"):
        try:
            load_checkpoint(model, m["checkpoint"])
        except AutopruneError as exc:
            raise SpecError(f"model.checkpoint: {exc}") from None
        return
    if m["train"]["epochs"] > 0:
        return
    cache = runner.baseline_cache(spec, data, out_dir) if out_dir else None
    if cache is None or not os.path.isfile(cache):
        raise SpecError(
            "model.train.epochs: 0 trains nothing and there is no model.checkpoint; give "
            "one of them"
        )


def _layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _parts(scheme: Scheme) -> list[Scheme]:
    return list(scheme.schemes) if isinstance(scheme, Compose) else [scheme]


def _scheme_fits(spec: Spec, scheme: Scheme, model: nn.Module, x: torch.Tensor) -> None:
    """Every pattern matches a layer, and the scheme leaves something to search."""
    names = _layer_names(model)
    items = spec.resolved["scheme"]
    for i, part in enumerate(_parts(scheme)):
        path = f"scheme[{i}].{part.op}" if len(items) > 1 else f"scheme.{part.op}"
        for key in ("include", "exclude"):
            for pattern in _patterns(getattr(part, key, None)):
                if not any(matches(n, [pattern]) for n in names):
                    raise SpecError(
                        f"{path}.{key}: {pattern!r} matches no layer of the model; its "
                        f"layers include {', '.join(names[:6])}"
                    )
        sparsity = getattr(part, "sparsity", None)
        if isinstance(sparsity, dict):
            for pattern in sparsity:
                if not any(matches(n, [pattern]) for n in names):
                    raise SpecError(
                        f"{path}.sparsity: {pattern!r} matches no layer of the model; its "
                        f"layers include {', '.join(names[:6])}"
                    )
    try:
        units = scheme.units(copy.deepcopy(model), x)
    except AutopruneError as exc:
        raise _under("scheme", str(exc)) from None
    if not units:
        ops = ", ".join(p.op for p in _parts(scheme))
        raise SpecError(
            f"scheme: {ops} leaves nothing for the search to set in this model (no prunable "
            "layer or group); add a pruning operator, e.g. [{prune: {}}, {quantize: {}}], "
            "or widen include"
        )


def _patterns(value: Any) -> Iterable[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _bounds(spec: Spec, scheme: Scheme, model: nn.Module, x: torch.Tensor) -> None:
    """Per-unit bounds name units of the scheme."""
    from .compress.bounds import Bounds, build_units

    raw = spec.resolved["search"]["bounds"]
    try:
        bounds = Bounds.parse(raw, "search.bounds")
        units = build_units(scheme, model, x, bounds)
    except AutopruneError as exc:
        raise _under("search.bounds", str(exc)) from None
    for pattern in [p for p, _, _ in bounds.rules if p != "*"]:
        if not any(matches(u.name, [pattern]) or matches(u.layer, [pattern]) for u in units):
            raise SpecError(
                f"search.bounds: {pattern!r} matches no unit of the search; its units include "
                f"{', '.join(u.name for u in units[:6])}"
            )


def _storage(url: str | None) -> None:
    """An Optuna storage URL that connects (nothing is created)."""
    if url is None:
        return
    import sqlalchemy

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        folder = os.path.dirname(os.path.abspath(path)) if path and path != ":memory:" else "."
        if not os.path.isdir(folder):
            raise SpecError(f"search.storage: the directory of {url!r} does not exist: {folder}")
        return
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
    except Exception as exc:  # the driver's errors have no common base
        raise SpecError(
            f"search.storage: cannot connect to {url!r}: {_first_line(exc)}; give an "
            "SQLAlchemy URL of a reachable database (sqlite:///path.db, postgresql://...)"
        ) from None

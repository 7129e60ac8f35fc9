"""The YAML spec: schema, validation with key paths, and resolution into objects.

A spec is checked whole before any work starts. Each fault is one :class:`SpecError` whose
message names the key path, what was expected and what was found::

    >>> validate({"eps": -0.1})
    Traceback (most recent call last):
    ...
    autoprune.spec.SpecError: eps: expected a number in [0, 1), got -0.1

``docs/spec.md`` documents every key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import AutopruneError
from ..registry import did_you_mean
from ._checkers import (
    SpecError,
    _abspath,
    _bool,
    _fail,
    _keys,
    _kwargs_for,
    _mapping,
    _number,
    _relay,
    _str,
)
from ._search import _build, evaluation_options, search_section, sensitivity_options

__all__ = ["Spec", "SpecError", "evaluation_options", "load", "sensitivity_options", "validate"]

# -- the schema --------------------------------------------------------------------------

TOP = [
    "model",
    "data",
    "scheme",
    "objective",
    "eps",
    "relative",
    "search",
    "recovery",
    "sensitivity",
    "device",
    "output",
]
MODEL = ["name", "options", "checkpoint", "train"]
TRAIN = ["epochs", "lr", "batch_size", "seed"]
DATA = ["name", "root", "options", "batch_size", "eval_batch_size", "seed"]
SENSITIVITY = ["levels", "bn_batches", "finetune_steps", "finetune_lr", "val_batches", "threshold"]
OUTPUT = ["dir", "report"]
OBJECTIVE_KEYS = ["maximize", "minimize"]
PATH_OPTIONS = ("train", "test", "root", "path")


@dataclass
class Spec:
    """A validated spec with every default filled in (``resolved``), plus where it lives."""

    resolved: dict[str, Any]
    base_dir: str = "."
    source: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved, sort_keys=False)


def load(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read a YAML spec with ``yaml.safe_load`` and validate it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpecError(f"spec: file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"spec: {path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    try:
        _no_duplicates(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"spec: {path} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"spec: {path} must hold a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    for key, value in (overrides or {}).items():
        _set_path(raw, key, value)
    return validate(raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


def _no_duplicates(node: Any, path: str = "") -> None:
    """A key given twice in one mapping is an error (YAML would keep the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value in node.value:
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key in seen:
                raise SpecError(
                    f"{where}: duplicate key (line {key_node.start_mark.line + 1}); give each "
                    "key once per section"
                )
            seen.add(key)
            _no_duplicates(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicates(item, f"{path}[{i}]")


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), Mapping):
            node[part] = {}
        node[part] = dict(node[part])
        node = node[part]
    node[parts[-1]] = value


def validate(raw: Mapping[str, Any], base_dir: str = ".", source: str | None = None) -> Spec:
    """Check every key of a spec and fill in the defaults; raises :class:`SpecError`."""
    raw = _mapping("spec", raw)
    _keys("", raw, TOP)
    out: dict[str, Any] = {}
    out["model"] = _model(raw.get("model"), base_dir)
    out["data"] = _data(raw.get("data"), base_dir)
    out["scheme"] = _scheme(raw.get("scheme", {"filter_prune": {}}))
    out["objective"] = _objective(raw.get("objective", "throughput"))
    out["eps"] = _number("eps", raw.get("eps", 0.01), 0.0, 1.0, high_open=True)
    out["relative"] = _bool("relative", raw.get("relative", False))
    out["search"] = search_section(raw.get("search"), base_dir)
    from ..compress.options import check_space

    _build("search", check_space, out["search"]["space"], len(out["objective"]))
    out["recovery"] = _recovery(raw.get("recovery", "finetune"))
    out["sensitivity"] = _sensitivity(raw.get("sensitivity"))
    out["device"] = _device(raw.get("device", "auto"))
    out["output"] = _output(raw.get("output"), base_dir, source)
    return Spec(out, base_dir=base_dir, source=source)


def _model(raw: Any, base_dir: str) -> dict:
    from ..models import models, torchvision_models

    if raw is None:
        raw = {"name": "small_cnn"}
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = _mapping("model", raw)
    _keys("model", raw, MODEL)
    name = _str("model.name", raw.get("name", "small_cnn"))
    if ":" not in name and name not in models and name not in torchvision_models():
        known = models.names() + [
            "<any torchvision classification model>",
            "package.module:function",
        ]
        hint = did_you_mean(name, models.names() + torchvision_models())
        raise SpecError(f"model.name: unknown model {name!r}{hint}; known: {', '.join(known)}")
    options = _mapping("model.options", raw.get("options"))
    if name in models:
        _kwargs_for("model.options", models.get(name), options, skip=("num_classes", "input_shape"))
    out: dict[str, Any] = {"name": name, "options": options}
    if raw.get("checkpoint") is not None:
        ck = _abspath(base_dir, _str("model.checkpoint", raw["checkpoint"]))
        if not os.path.isfile(ck):
            raise SpecError(f"model.checkpoint: file not found: {ck}")
        out["checkpoint"] = ck
    train = _mapping("model.train", raw.get("train"))
    _keys("model.train", train, TRAIN)
    out["train"] = {
        "epochs": _number("model.train.epochs", train.get("epochs", 10), 0, None),
        "lr": _number("model.train.lr", train.get("lr", 0.05), 0, None, low_open=True),
        "batch_size": _number(
            "model.train.batch_size", train.get("batch_size", 128), 1, None, integer=True
        ),
        "seed": _number("model.train.seed", train.get("seed", 0), integer=True),
    }
    return out


def _data(raw: Any, base_dir: str) -> dict:
    from ..data import datasets

    if raw is None:
        raw = {"name": "digits"}
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = _mapping("data", raw)
    _keys("data", raw, DATA)
    name = _str("data.name", raw.get("name", "digits"))
    if ":" not in name and name not in datasets:
        raise SpecError(
            f"data.name: unknown dataset {name!r}{did_you_mean(name, datasets.names())}; "
            f"known: {', '.join(datasets.names())}, package.module:function"
        )
    root = raw.get("root")
    root = _abspath(base_dir, _str("data.root", root)) if root is not None else None
    options = _mapping("data.options", raw.get("options"))
    if name in datasets:
        _kwargs_for("data.options", datasets.get(name), options)
    resolved_options = dict(options)
    for key in PATH_OPTIONS:
        if key in options and isinstance(options[key], str):
            resolved_options[key] = _abspath(root or base_dir, options[key])
            if not os.path.exists(resolved_options[key]):
                hint = " (set data.root or --data-root)" if root is None else ""
                raise SpecError(f"data.options.{key}: not found: {resolved_options[key]}{hint}")
    if root is not None and not os.path.isdir(root):
        raise SpecError(f"data.root: directory not found: {root} (set data.root or --data-root)")
    return {
        "name": name,
        "root": root,
        "options": resolved_options,
        "batch_size": _number("data.batch_size", raw.get("batch_size", 128), 1, None, integer=True),
        "eval_batch_size": _number(
            "data.eval_batch_size", raw.get("eval_batch_size", 512), 1, None, integer=True
        ),
        "seed": _number("data.seed", raw.get("seed", 0), integer=True),
    }


def _scheme(raw: Any) -> list[dict]:
    from ..schemes import schemes

    ops = [n for n in schemes.names() if n != "compose"]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise SpecError("scheme: expected an operator, e.g. {filter_prune: {sparsity: 0.5}}")
    out = []
    for i, item in enumerate(items):
        path = f"scheme[{i}]" if isinstance(raw, list) else "scheme"
        if isinstance(item, str):
            item = {item: {}}
        op, options = _component(path, item, schemes, "scheme", ops)
        out.append({op: options})
    return out


def _component(
    path: str, raw: Any, registry: Any, kind: str, names: list[str] | None = None
) -> tuple[str, dict]:
    """Check ``{name: {options}}`` against ``registry``: one known name, options it accepts."""
    names = list(registry.names()) if names is None else names
    raw = _mapping(path, raw)
    if len(raw) != 1:
        raise SpecError(
            f"{path}: expected one {kind} name as key ({', '.join(names)}), "
            f"got {list(raw) or 'nothing'}"
        )
    ((name, options),) = raw.items()
    if name not in names:
        raise SpecError(
            f"{path}.{name}: unknown {kind}{did_you_mean(str(name), names)}; "
            f"known: {', '.join(names)}"
        )
    options = _mapping(f"{path}.{name}", options)
    cls = registry.get(name)
    _kwargs_for(f"{path}.{name}", cls.__init__, options)
    try:
        cls(**options)
    except AutopruneError as exc:
        raise _relay(f"{path}.{name}", exc) from None
    return name, options


def _objective(raw: Any) -> list[dict]:
    from ..objectives import objective_registry

    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise SpecError("objective: expected at least one objective, e.g. throughput")
    out = []
    for i, item in enumerate(items):
        path = f"objective[{i}]" if isinstance(raw, list) else "objective"
        if isinstance(item, str):
            item = {
                objective_registry.get(item).natural
                if item in objective_registry
                else "maximize": item
            }
        item = _mapping(path, item)
        directions = [k for k in OBJECTIVE_KEYS if k in item]
        if len(directions) != 1:
            raise SpecError(
                f"{path}: expected 'maximize: NAME' or 'minimize: NAME', got {dict(item)!r}"
            )
        direction = directions[0]
        name = _str(f"{path}.{direction}", item[direction])
        options = {k: v for k, v in item.items() if k != direction}
        if ":" not in name and name not in objective_registry:
            raise SpecError(
                f"{path}.{direction}: unknown objective {name!r}"
                f"{did_you_mean(name, objective_registry.names())}; known: "
                f"{', '.join(objective_registry.names())}, package.module:function"
            )
        if options:
            _metric_with_options(f"{path}", name, options)
        out.append({direction: name, **options})
    names = [next(iter(o.values())) for o in out]
    if len(set(names)) != len(names):
        raise SpecError(f"objective: the same objective is listed twice ({names})")
    return out


def _metric_with_options(path: str, name: str, options: dict) -> Any:
    from ..objectives import Latency, Size, Throughput, objective_registry

    classes = {"throughput": Throughput, "latency": Latency}
    base = objective_registry.get(name) if name in objective_registry else None
    if name in classes:
        cls, fixed = classes[name], {}
    elif isinstance(base, Size):
        cls = Size
        fixed = {"values": base.values, "encoding": base.encoding, "inference": base.inference}
    else:
        raise SpecError(f"{path}: objective {name!r} takes no options, got {sorted(options)}")
    _kwargs_for(path, cls, options)
    try:
        return cls(**{**fixed, **options})
    except AutopruneError as exc:
        raise _relay(path, exc) from None


def _recovery(raw: Any) -> dict:
    from ..recovery import recoveries

    if isinstance(raw, str):
        raw = {raw: {}}
    name, options = _component("recovery", raw, recoveries, "recovery")
    return {name: options}


def _sensitivity(raw: Any) -> dict:
    raw = _mapping("sensitivity", raw)
    _keys("sensitivity", raw, SENSITIVITY)
    levels = raw.get("levels")
    if levels is not None and not isinstance(levels, list):
        raise _fail("sensitivity.levels", "a list of sparsities", levels)
    options = sensitivity_options(raw)
    return options.to_dict()


def _output(raw: Any, base_dir: str, source: str | None) -> dict:
    raw = _mapping("output", raw)
    _keys("output", raw, OUTPUT)
    default = "runs/" + (os.path.splitext(os.path.basename(source))[0] if source else "autoprune")
    return {
        "dir": _str("output.dir", raw.get("dir", default)),
        "report": _bool("output.report", raw.get("report", True)),
    }


def _device(raw: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA must be there when asked for."""
    from .._backends import resolve_device

    if not isinstance(raw, str):
        raise _fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", raw)
    try:
        resolve_device(raw)
    except AutopruneError as exc:
        raise SpecError(str(exc)) from None
    return raw

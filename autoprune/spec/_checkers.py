"""Checking a spec's values: each fault is a :class:`SpecError` that names the key path."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from .. import _checks
from ..errors import AutopruneError, ConfigError
from ..registry import did_you_mean


class SpecError(ConfigError):
    """A spec is invalid; the message starts with the key path."""

    __module__ = "autoprune.spec"  # where users import it from


def _fail(path: str, what: str, value: Any) -> SpecError:
    return SpecError(str(_checks.fail(path, what, value)))


def _number(path: str, value: Any, *args: Any, **kwargs: Any) -> Any:
    """:func:`autoprune._checks.number`, raising a :class:`SpecError`."""
    try:
        return _checks.number(path, value, *args, **kwargs)
    except ConfigError as exc:
        raise SpecError(str(exc) + _yaml_number_hint(value)) from None


def _yaml_number_hint(value: Any) -> str:
    """Why a number came as a string: YAML 1.1 reads ``1e-2`` (no dot) as text."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return f" (YAML reads {value} as text: write it with a dot, e.g. 1.0e-2, or as 0.01)"


def _str(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "a non-empty string", value)
    return value


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _mapping(path: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(path, "a mapping", value)
    return dict(value)


def _keys(path: str, value: Mapping, allowed: list[str]) -> None:
    for key in value:
        if key not in allowed:
            where = f"{path}." if path else ""
            raise SpecError(
                f"{where}{key}: unknown key{did_you_mean(str(key), allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )


def _relay(path: str, exc: AutopruneError) -> SpecError:
    """Re-raise a constructor's ConfigError ("param: ...") under the spec's key path."""
    msg = str(exc)
    if msg.startswith(path):
        return SpecError(msg)
    parent, _, last = path.rpartition(".")
    if parent and msg.startswith(f"{last}."):  # "lc.mu_init: ..." under "recovery.lc"
        return SpecError(f"{parent}.{msg}")
    return SpecError(f"{path}.{msg}")


def _kwargs_for(path: str, fn: Callable, options: Mapping, skip: tuple[str, ...] = ()) -> None:
    """Unknown option names for ``fn`` are spec errors with suggestions."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n in params if n not in skip and n != "self"]
    _keys(path, options, allowed)


def _abspath(base_dir: str, value: str) -> str:
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))

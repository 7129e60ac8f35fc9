"""One registry pattern for models, datasets, schemes, criteria and objectives.

A :class:`Registry` maps spec names to constructors, like timm's ``register_model``::

    >>> from autoprune.registry import Registry
    >>> widgets = Registry("widget")
    >>> @widgets.register("square")
    ... def square(x: int) -> int:
    ...     return x * x
    >>> widgets.get("square")(3)
    9
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def import_callable(ref: str, what: str = "callable") -> Callable[..., Any]:
    """Import ``package.module:function`` and return the function.

    >>> import_callable("math:sqrt")(16.0)
    4.0
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise ConfigError(f"{what}: expected 'package.module:function', got {ref!r}")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{what}: {ref!r} is not callable")
    return obj


class Registry:
    """A name -> object mapping with helpful errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator that registers an object under ``name`` (default: its ``__name__``)."""

        def deco(obj: Any) -> Any:
            key = name or obj.__name__
            self._items[key] = obj
            return obj

        return deco

    def add(self, name: str, obj: Any) -> None:
        """Register ``obj`` under ``name`` (replacing an earlier entry)."""
        self._items[name] = obj

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; unknown names raise :class:`ConfigError`."""
        if name in self._items:
            return self._items[name]
        known = ", ".join(sorted(self._items))
        raise ConfigError(
            f"unknown {self.kind} {name!r}{did_you_mean(str(name), list(self._items))}; "
            f"known: {known}"
        )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

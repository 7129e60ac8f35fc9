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
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``; a choice that
    differs in case alone comes first.

    >>> did_you_mean("TPE", ["random", "tpe"]), did_you_mean("l2x", ["l1", "l2"])
    (" (did you mean 'tpe'?)", " (did you mean 'l2'?)")
    """
    same = [c for c in choices if c.lower() == str(name).lower()]
    close = same or difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def import_callable(ref: str, what: str = "callable") -> Callable[..., Any]:
    """Import ``package.module:function`` and return the function.

    The standard library and builtins are refused: a spec names the user's own code.
    Naming a callable in a spec runs that module's code, as importing it would.

    >>> import_callable("autoprune.models:create_model").__name__
    'create_model'
    >>> import_callable("os:getcwd", "model.name")
    Traceback (most recent call last):
    ...
    autoprune.errors.ConfigError: model.name: 'os:getcwd' is in Python's standard library; \
name a function or class of your own importable module (package.module:function)
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise ConfigError(f"{what}: expected 'package.module:function', got {ref!r}")
    module_name, _, attr = ref.partition(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ConfigError(
            f"{what}: {ref!r} is in Python's standard library; name a function or class "
            "of your own importable module (package.module:function)"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raises on import
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

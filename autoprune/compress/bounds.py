"""Per-unit sparsity ranges: the five shapes ``bounds`` takes, in one normalised form, and
the search units they give.

    >>> Bounds.parse({"conv*": (0.0, 0.5)}).for_unit("conv1", 0.9)
    (0.0, 0.5)
    >>> Bounds.parse(None).for_unit("conv1", 0.9)
    (0.0, 0.9)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import _checks
from ..errors import ConfigError
from ..schemes import Compose, Scheme
from ..schemes.base import matches
from .sensitivity import Sensitivity
from .space import Unit, operator_of


@dataclass(frozen=True)
class Bounds:
    """Per-unit sparsity ranges, from any of the five shapes ``bounds`` takes.

    ``None`` (each unit's operator's default range), ``(low, high)`` for every unit,
    ``{unit or pattern: (low, high)}``, ``"sensitivity"`` (analyse first, then bound each
    unit where its drop stays within a threshold), or a :class:`Sensitivity` (or the path
    of its ``.json``) already measured.

    Attributes:
        rules: ``(pattern, low, high)`` in order; for a unit, the last that matches wins;
            the pattern ``"*"`` stands for one pair given for every unit.
        sensitivity: an analysis given; ``from_sensitivity`` also when one is to be run.
    """

    rules: tuple[tuple[str, float, float], ...] = ()
    from_sensitivity: bool = False
    sensitivity: Sensitivity | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, value: Any, param: str = "bounds") -> Bounds:
        """Normalise ``value`` (see the class docstring); errors name ``param``."""
        if value is None:
            return cls()
        if isinstance(value, Bounds):
            return value
        if isinstance(value, Sensitivity):
            return cls(from_sensitivity=True, sensitivity=value)
        if isinstance(value, (str, os.PathLike)):
            text = os.fspath(value)
            if text == "sensitivity":
                return cls(from_sensitivity=True)
            if text.endswith(".json"):
                return cls(from_sensitivity=True, sensitivity=Sensitivity.load(text))
            raise ConfigError(
                f"{param}: expected (low, high), a mapping, 'sensitivity' or a sensitivity "
                f".json file, got {value!r}"
            )
        if isinstance(value, Mapping):
            rules = []
            for pattern, pair in value.items():
                low, high = _checks.bounds_pair(f"{param}[{pattern!r}]", pair)
                rules.append((str(pattern), low, high))
            return cls(rules=tuple(rules))
        low, high = _checks.bounds_pair(param, value)
        return cls(rules=(("*", low, high),))

    def for_unit(
        self, name: str, default_high: float, bare: str | None = None
    ) -> tuple[float, float]:
        """``(low, high)`` of unit ``name`` (``bare``: its name without the operator)."""
        low, high = 0.0, default_high
        for pattern, lo, hi in self.rules:
            if matches(name, [pattern]) or (bare is not None and matches(bare, [pattern])):
                low, high = lo, hi
        return low, high

    def setting(self) -> Any:
        """How the run's settings record these bounds."""
        if self.sensitivity is not None:
            return "sensitivity (given)"
        if self.from_sensitivity:
            return "sensitivity"
        if not self.rules:
            return None
        if len(self.rules) == 1 and self.rules[0][0] == "*":
            return [self.rules[0][1], self.rules[0][2]]
        return {p: [lo, hi] for p, lo, hi in self.rules}


def build_units(
    scheme: Scheme, model: nn.Module, example_input: torch.Tensor, bounds: Bounds
) -> list[Unit]:
    """The scheme's units in ``model``, each with its range: its operator's default
    (``search_high``) unless ``bounds`` set one."""
    units = []
    for name, size in scheme.units(copy.deepcopy(model), example_input).items():
        op = name.split(":", 1)[0] if isinstance(scheme, Compose) else scheme.op
        bare = name.split(":", 1)[-1]
        operator = operator_of(scheme, op)
        low, high = bounds.for_unit(name, operator.search_high, bare)
        units.append(Unit(name, int(size), low, high, op, operator.channel_step(int(size))))
    return units

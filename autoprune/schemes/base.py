"""What every scheme operator shares: layer selection, sparsity arguments, the registry.

Every operator follows the same rules:

* one sparsity for all its layers, or a per-layer mapping ``{layer name or pattern: s}``;
* layers are chosen by module type and by name patterns (``include``/``exclude``,
  shell-style as in :mod:`fnmatch`); the classifier's output layer is left alone;
* sparsity is the fraction of the layer's units removed, never compounded with an
  earlier call (pruning twice at 0.5 leaves 0.5, not 0.75).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .._checks import fraction
from .._structure import output_layer
from ..errors import ConfigError, PruningError
from ..plan import Plan
from ..registry import Registry, did_you_mean

schemes = Registry("scheme")


def register_scheme(name: str | None = None) -> Callable[[Any], Any]:
    """Register a scheme operator class (a :class:`Scheme`) under ``name``."""
    return schemes.register(name)


def list_schemes() -> list[str]:
    """The registered scheme operator names.

    >>> "filter_prune" in list_schemes()
    True
    """
    return schemes.names()


Sparsity = float | Mapping[str, float]

_TYPE_NAMES: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.modules.conv._ConvNd,),
    "linear": (nn.Linear,),
}


def check_fraction(value: Any, param: str) -> float:
    """Return ``value`` as a float in [0, 1), or raise naming ``param``."""
    return fraction(param, value)


def check_sparsity(sparsity: Any, param: str = "sparsity") -> Sparsity:
    """Validate a sparsity argument: a number in [0, 1) or a mapping of them."""
    if isinstance(sparsity, Mapping):
        out = {}
        for key, value in sparsity.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{param}: keys must be layer names or patterns, got {key!r}")
            out[key] = check_fraction(value, f"{param}[{key!r}]")
        return out
    return check_fraction(sparsity, param)


def _patterns(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{param}: expected a layer-name pattern or a list of them, got {value!r}")


def resolve_types(types: Any, default: tuple[type[nn.Module], ...]) -> tuple[type[nn.Module], ...]:
    """Module types from classes or the names ``"conv"`` / ``"linear"``."""
    if types is None:
        return default
    if isinstance(types, (str, type)):
        types = [types]
    out: list[type[nn.Module]] = []
    for t in types:
        if isinstance(t, str):
            if t.lower() not in _TYPE_NAMES:
                raise ConfigError(
                    f"types: unknown module type {t!r}{did_you_mean(t.lower(), list(_TYPE_NAMES))};"
                    f" known: {', '.join(_TYPE_NAMES)}"
                )
            out.extend(_TYPE_NAMES[t.lower()])
        elif isinstance(t, type) and issubclass(t, nn.Module):
            out.append(t)
        else:
            raise ConfigError(f"types: expected module classes or 'conv'/'linear', got {t!r}")
    return tuple(out)


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def resolve_sparsity(
    sparsity: Sparsity, units: Mapping[str, str], param: str = "sparsity"
) -> dict[str, float]:
    """Sparsity per unit from a number or a ``{name or pattern: value}`` mapping.

    ``units`` maps every selectable layer name to its unit (a layer, or the coupled group
    it belongs to). Patterns apply in order; exact names win over patterns. Units that
    no key matches get 0. Layers of one group given different values are an error.
    """
    unit_names = list(dict.fromkeys(units.values()))
    if not isinstance(sparsity, Mapping):
        return dict.fromkeys(unit_names, float(sparsity))
    out: dict[str, float] = {}
    source: dict[str, str] = {}
    exact = [(k, v) for k, v in sparsity.items() if k in units]
    patterns = [(k, v) for k, v in sparsity.items() if k not in units]
    for key, value in patterns:
        hit = [n for n in units if fnmatch.fnmatchcase(n, key)]
        if not hit:
            raise ConfigError(
                f"{param}[{key!r}]: no prunable layer matches"
                f"{did_you_mean(key, list(units))}; prunable: {', '.join(list(units)[:12])}"
                + (" ..." if len(units) > 12 else "")
            )
        for name in hit:
            out[units[name]] = value
            source[units[name]] = key
    for key, value in exact:
        unit = units[key]
        if unit in source and source[unit] in units and out[unit] != value:
            raise ConfigError(
                f"{param}: {key!r} and {source[unit]!r} are coupled (group {unit!r}) but have "
                f"different sparsities {value:g} and {out[unit]:g}; give them one value"
            )
        out[unit] = value
        source[unit] = key
    return {u: out.get(u, 0.0) for u in unit_names}


def count_to_remove(sparsity: float, total: int, multiple: int = 1, min_keep: int = 1) -> int:
    """Units to remove for ``sparsity`` of ``total``: rounded to a multiple, keeping some."""
    k = round(sparsity * total / multiple) * multiple
    return max(0, min(k, total - max(min_keep, multiple)))


class Scheme:
    """Base class of scheme operators: which layers they act on, and their interface.

    Subclasses implement :meth:`apply`, which changes ``model`` in place and returns the
    :class:`~autoprune.plan.Plan` of this call. The plan of everything applied so far is
    kept with the model (:func:`autoprune.plan.get_plan`). Operators that remove
    something derive from :class:`Pruning`, which adds the sparsity the search sets.

    Class attributes the search reads:
        search_high: the default upper end of a unit's searched sparsity range.
        sensitivity_cap: the most a sensitivity analysis may open a unit's range to.
        calibration_start: the calibration bisects uniform levels from here (a trained
            network practically always keeps its accuracy, after fine-tuning, with three
            quarters of its weights or half its blocks removed).
    """

    op: ClassVar[str] = ""
    default_types: ClassVar[tuple[type[nn.Module], ...]] = (nn.modules.conv._ConvNd, nn.Linear)
    search_high: ClassVar[float] = 0.9
    sensitivity_cap: ClassVar[float] = 0.9
    calibration_start: ClassVar[float] = 0.0

    def __init__(
        self,
        *,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        types: Any = None,
        include_output: bool = False,
        seed: int = 0,
    ) -> None:
        self.include = _patterns(include, "include")
        self.exclude = _patterns(exclude, "exclude")
        self.types = resolve_types(types, self.default_types)
        self.include_output = bool(include_output)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed: expected an integer, got {seed!r}")
        self.seed = seed

    # -- selection --------------------------------------------------------------------
    def selected(self, name: str, module: nn.Module, output_layer: str | None) -> bool:
        """Whether layer ``name`` is one this operator may act on."""
        if not isinstance(module, self.types):
            return False
        if name == output_layer and not self.include_output:
            return False
        if self.include and not matches(name, self.include):
            return False
        return not matches(name, self.exclude)

    def weight_layers(
        self, model: nn.Module, example_input: torch.Tensor | None, min_dim: int = 1
    ) -> dict[str, nn.Module]:
        """The selected layers that hold a ``weight`` tensor of ``min_dim`` dims or more."""
        out_name = output_layer(model, example_input)
        layers = {
            n: m
            for n, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)
            and m.weight.dim() >= min_dim
            and self.selected(n, m, out_name)
        }
        if not layers:
            raise self._nothing_selected(
                n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
            )
        return layers

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def _nothing_selected(self, candidates: Iterable[str]) -> PruningError:
        names = list(candidates)
        hint = f"; candidates: {', '.join(names[:12])}" if names else ""
        return PruningError(
            f"{self.op}: no layer of the model is selected (types {self._type_names()}, "
            f"include {list(self.include) or 'all'}, exclude {list(self.exclude)}){hint}"
        )

    def _type_names(self) -> str:
        return "/".join(t.__name__ for t in self.types)

    # -- interface --------------------------------------------------------------------
    def units(self, model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, int]:
        """The units a search sets a sparsity for: ``{name: original units}`` (none here)."""
        return {}

    def apply(self, model: nn.Module, example_input: torch.Tensor | None = None) -> Plan:
        """Change ``model`` in place and return the plan of this call."""
        raise NotImplementedError

    def reapply_after_training(
        self, model: nn.Module, example_input: torch.Tensor | None = None
    ) -> bool:
        """Impose again what training does not keep (recovery calls it after training).

        Masks keep pruned weights at zero by themselves, so pruning operators do nothing
        here; :class:`~autoprune.schemes.Quantize` quantizes again. Returns whether the
        model changed (then BatchNorm statistics are recalibrated).
        """
        return False

    def with_sparsities(self, per_unit: Mapping[str, float]) -> Scheme:
        """A copy with one sparsity per unit, keyed as :meth:`units` names them."""
        raise PruningError(f"{self.op}: has no sparsity to set")

    def channel_step(self, size: int) -> int:
        """A unit of ``size`` keeps a multiple of this many (1: any count); the search
        snaps its units' sparsities to those multiples."""
        return 1

    def for_run(self, device: torch.device, timed: bool) -> Scheme:
        """This operator as a run on ``device`` uses it (``timed``: an objective is a
        timing): settings left to the run, such as ``round_to="auto"``, resolved."""
        return self

    def scaled(self, factor: float) -> Scheme | None:
        """A masked copy removing ``factor`` of this operator's sparsity, for one step of
        gradual pruning; None when there is nothing to remove gradually."""
        return None

    def config(self) -> dict[str, Any]:
        """The operator's settings, as a spec would write them."""
        out: dict[str, Any] = {}
        if self.include:
            out["include"] = list(self.include)
        if self.exclude:
            out["exclude"] = list(self.exclude)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Pruning(Scheme):
    """Base class of the operators that remove something: a sparsity, which the search sets."""

    def __init__(self, sparsity: Sparsity = 0.5, **selection: Any) -> None:
        """``selection``: :class:`Scheme`'s ``include``, ``exclude``, ``types``,
        ``include_output`` and ``seed``."""
        super().__init__(**selection)
        self.sparsity = check_sparsity(sparsity)

    def with_sparsity(self, sparsity: Sparsity) -> Pruning:
        """A copy of this operator with another sparsity (used by the search)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.sparsity = check_sparsity(sparsity)
        return clone

    def with_sparsities(self, per_unit: Mapping[str, float]) -> Pruning:
        """A copy with one sparsity per unit, keyed as :meth:`units` names them."""
        if getattr(self, "scope", "layer") == "global":
            return self.with_sparsity(float(per_unit["global"]))
        return self.with_sparsity(dict(per_unit))

    def scaled(self, factor: float) -> Pruning:
        """A masked copy removing ``factor`` of this operator's sparsity, for one step of
        gradual pruning (:class:`~autoprune.recovery.FineTune` with ``gradual``).

        >>> from autoprune import Prune
        >>> Prune(0.8).scaled(0.5).sparsity
        0.4
        """
        if isinstance(self.sparsity, Mapping):
            sparsity: Sparsity = {k: v * factor for k, v in self.sparsity.items()}
        else:
            sparsity = float(self.sparsity) * factor
        return self.with_sparsity(sparsity)

    def config(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, **super().config()}


def lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` lowest scores (ties by position); every ``-inf`` is included.

    ``-inf`` marks units already removed: they stay removed even when ``k`` is smaller.
    """
    order = torch.argsort(scores, stable=True)
    already = int(torch.isneginf(scores).sum())
    return order[: max(k, already)]


def choose(
    scores: Mapping[str, torch.Tensor],
    per_unit: Mapping[str, float] | None,
    global_sparsity: float | None,
) -> dict[str, torch.Tensor]:
    """Indices to remove in each unit's score vector: per unit, or by one global ranking."""
    if global_sparsity is None:
        assert per_unit is not None
        return {n: lowest(s, round(per_unit[n] * s.numel())) for n, s in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n] for n in names]) if names else torch.zeros(0)
    picked = lowest(flat, round(global_sparsity * flat.numel()))
    owner = torch.repeat_interleave(
        torch.arange(len(names)), torch.tensor([scores[n].numel() for n in names])
    )
    offsets = torch.cumsum(torch.tensor([0] + [scores[n].numel() for n in names]), 0)
    return {n: picked[owner[picked] == i] - offsets[i] for i, n in enumerate(names)}


def check_scope(scope: Any, sparsity: Sparsity) -> str:
    if scope not in ("layer", "global"):
        raise ConfigError(f"scope: expected 'layer' or 'global', got {scope!r}")
    if scope == "global" and isinstance(sparsity, Mapping):
        raise ConfigError("sparsity: a global ranking takes one number, not a per-layer mapping")
    return scope

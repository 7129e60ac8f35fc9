"""``Compose``: several operators applied in order, e.g. filters first, then weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..plan import Plan
from .base import Scheme, schemes


@schemes.register("compose")
class Compose(Scheme):
    """Apply several scheme operators in order; the plan holds all their entries.

    Example:
        >>> import torch
        >>> from autoprune.models import create_model
        >>> from autoprune.schemes import FilterPrune, Prune
        >>> net = create_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), width=8)
        >>> scheme = Compose([FilterPrune(0.25, physical=True), Prune(0.5)])
        >>> plan = scheme.apply(net, torch.randn(1, 1, 8, 8))
        >>> sorted({row["op"] for row in plan.rows()})
        ['filter_prune', 'prune']
    """

    op = "compose"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def operator(self, op: str) -> Scheme:
        """The first operator of this composition named ``op``."""
        return next(s for s in self.schemes if s.op == op)

    def __init__(self, schemes: Sequence[Scheme]) -> None:  # noqa: D107
        schemes = list(schemes)
        if not schemes or not all(isinstance(s, Scheme) for s in schemes):
            raise ConfigError("schemes: expected a non-empty list of scheme operators")
        self.schemes = schemes

    def units(self, model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.schemes:
            out.update({f"{s.op}:{k}": v for k, v in s.units(model, example_input).items()})
        return out

    def with_sparsities(self, per_unit: Mapping[str, float]) -> Compose:
        """Per-unit sparsities keyed ``"op:unit"`` (as :meth:`units` names them)."""
        parts = []
        for s in self.schemes:
            prefix = f"{s.op}:"
            mine = {k[len(prefix) :]: v for k, v in per_unit.items() if k.startswith(prefix)}
            parts.append(s.with_sparsities(mine) if mine else s)
        return Compose(parts)

    def for_run(self, device: torch.device, timed: bool) -> Compose:
        return Compose([s.for_run(device, timed) for s in self.schemes])

    def scaled(self, factor: float) -> Compose | None:
        parts = [p for p in (s.scaled(factor) for s in self.schemes) if p is not None]
        return Compose(parts) if parts else None

    def apply(self, model: nn.Module, example_input: torch.Tensor | None = None) -> Plan:
        plan = Plan()
        for scheme in self.schemes:
            plan = plan.merge(scheme.apply(model, example_input))
        return plan

    def reapply_after_training(
        self, model: nn.Module, example_input: torch.Tensor | None = None
    ) -> bool:
        changed = [s.reapply_after_training(model, example_input) for s in self.schemes]
        return any(changed)

    def config(self) -> dict[str, Any]:
        return {"schemes": [{s.op: s.config()} for s in self.schemes]}

    def __repr__(self) -> str:
        return f"Compose({self.schemes!r})"

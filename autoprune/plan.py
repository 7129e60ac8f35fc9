"""The plan: what was removed from a model, as a small value that converts to and from JSON.

One plan travels the whole way: a scheme applies it, recovery keeps it, a saved model
records it and reports show it. Structured entries (:class:`GroupPlan`) hold the indices
of removed channels in the ORIGINAL numbering, so the same physical model can be rebuilt
from the original architecture. Unstructured and block entries (:class:`LayerPlan`) hold
counts; which weights are zero is stored in the weights themselves.

    >>> plan = Plan()
    >>> plan.set_layer(LayerPlan(op="prune", layer="fc", total=100, removed=25))
    >>> Plan.from_json(plan.to_json()).sparsities()
    {'fc': 0.25}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "autoprune.plan/2"  # version 1 called GroupPlan.materialized "gone"; it still reads


@dataclass
class GroupPlan:
    """Channels (or neurons) of one coupled group, removed together.

    Attributes:
        op: the operator that removed them (``filter_prune`` or ``neuron_prune``).
        root: name of the group's first producer layer; the group's name.
        layers: the producer layers whose outputs are these channels.
        total: channels in the original model.
        removed: removed channel indices in the original numbering, sorted.
        materialized: those of ``removed`` that are physically gone from the tensors
            (:func:`~autoprune.materialize`); the rest are masked (zero).
        criterion: the importance criterion that chose them.
    """

    op: str
    root: str
    layers: list[str]
    total: int
    removed: list[int] = field(default_factory=list)
    materialized: list[int] = field(default_factory=list)
    criterion: str = "l1"

    @property
    def sparsity(self) -> float:
        return len(self.removed) / self.total if self.total else 0.0

    @property
    def physical(self) -> bool:
        """True when every removed channel is gone from the tensors."""
        return set(self.materialized) == set(self.removed)

    @property
    def in_tensors(self) -> list[int]:
        """Original indices of the channels the tensors hold now, masked ones included (in
        their order)."""
        gone = set(self.materialized)
        return [i for i in range(self.total) if i not in gone]

    @property
    def surviving(self) -> list[int]:
        """Original indices of the channels the plan keeps."""
        removed = set(self.removed)
        return [i for i in range(self.total) if i not in removed]


@dataclass
class LayerPlan:
    """Unstructured (``prune``) or block (``block_prune``) sparsity of one layer's weight.

    ``total`` and ``removed`` count weights, or blocks for ``block_prune``; ``total``
    refers to the layer as it was when first pruned.
    """

    op: str
    layer: str
    total: int
    removed: int
    criterion: str = "magnitude"
    block: tuple[int, int] | None = None

    @property
    def sparsity(self) -> float:
        return self.removed / self.total if self.total else 0.0


@dataclass
class Plan:
    """Everything removed from a model, by every operator applied to it."""

    groups: dict[str, GroupPlan] = field(default_factory=dict)
    layers: list[LayerPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quantized: dict[str, int] = field(default_factory=dict)
    """Layers whose weights share ``2**bits`` values: ``{layer: bits}``."""

    # -- building -----------------------------------------------------------------------
    def set_group(self, group: GroupPlan) -> None:
        self.groups[group.root] = group

    def set_layer(self, entry: LayerPlan) -> None:
        self.layers = [e for e in self.layers if (e.op, e.layer) != (entry.op, entry.layer)]
        self.layers.append(entry)

    def merge(self, other: Plan) -> Plan:
        """Return a new plan with ``other``'s entries over this one's."""
        out = Plan.from_dict(self.to_dict())
        for group in other.groups.values():
            out.set_group(GroupPlan(**asdict(group)))
        for entry in other.layers:
            out.set_layer(LayerPlan(**asdict(entry)))
        out.quantized.update(other.quantized)
        out.notes.extend(n for n in other.notes if n not in out.notes)
        return out

    # -- reading ------------------------------------------------------------------------
    @property
    def physical(self) -> bool:
        """True when every structured entry is physically removed (and there is one)."""
        return bool(self.groups) and all(g.physical for g in self.groups.values())

    def sparsities(self) -> dict[str, float]:
        """Sparsity per entry: group roots for structured, layer names otherwise.

        When a layer has several unstructured entries the last one applied is shown.
        """
        out = {root: g.sparsity for root, g in self.groups.items()}
        for entry in self.layers:
            out[entry.layer] = entry.sparsity
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per entry, for tables and reports."""
        rows: list[dict[str, Any]] = []
        for g in self.groups.values():
            rows.append(
                {
                    "op": g.op,
                    "name": g.root,
                    "layers": len(g.layers),
                    "units": "channels" if g.op == "filter_prune" else "neurons",
                    "total": g.total,
                    "removed": len(g.removed),
                    "sparsity": g.sparsity,
                    "physical": g.physical,
                }
            )
        for e in self.layers:
            rows.append(
                {
                    "op": e.op,
                    "name": e.layer,
                    "layers": 1,
                    "units": "blocks" if e.block else "weights",
                    "total": e.total,
                    "removed": e.removed,
                    "sparsity": e.sparsity,
                    "physical": False,
                }
            )
        return rows

    def __bool__(self) -> bool:
        return bool(self.groups or self.layers or self.quantized)

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "groups": [asdict(g) for g in self.groups.values()],
            "layers": [asdict(e) for e in self.layers],
            "quantized": dict(self.quantized),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        plan = cls()
        for g in data.get("groups", []):
            g = dict(g)
            if "gone" in g:  # version 1 named the physically removed channels "gone"
                g["materialized"] = g.pop("gone")
            plan.set_group(GroupPlan(**g))
        for e in data.get("layers", []):
            e = dict(e)
            if e.get("block") is not None:
                e["block"] = tuple(e["block"])
            plan.set_layer(LayerPlan(**e))
        plan.quantized = {str(k): int(v) for k, v in data.get("quantized", {}).items()}
        plan.notes = list(data.get("notes", []))
        return plan

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


_PLAN = "_autoprune_plan"


def get_plan(model: Any) -> Plan:
    """The plan of everything applied to ``model`` so far (empty for an unpruned model)."""
    plan = model.__dict__.get(_PLAN)
    if plan is None:
        plan = Plan()
        model.__dict__[_PLAN] = plan
    return plan


def set_plan(model: Any, plan: Plan) -> None:
    model.__dict__[_PLAN] = plan

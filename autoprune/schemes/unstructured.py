"""``prune``: unstructured magnitude pruning (zero the smallest weights)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .. import _masking as masking
from ..criteria import check_criterion, weight_criteria, weight_scores
from ..plan import LayerPlan, Plan, get_plan, set_plan
from .base import Pruning, Sparsity, check_scope, choose, resolve_sparsity, schemes


@schemes.register("prune")
class Prune(Pruning):
    """Unstructured pruning: zero the lowest-scoring weights of each selected layer.

    Args:
        sparsity: fraction of each layer's weights to zero, or ``{layer or pattern: s}``.
            Weights removed by a structured operator in masked mode are not counted:
            sparsity is a fraction of what such an operator left.
        criterion: ``"magnitude"`` (L1, the default) or ``"random"``.
        scope: ``"layer"`` ranks within each layer; ``"global"`` ranks all selected
            weights together and removes ``sparsity`` of them overall.
        include, exclude: layer-name patterns; types: ``"conv"``/``"linear"`` or classes.
        include_output: also prune the classifier's output layer (off by default).
        seed: seeds the random criterion.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear
        >>> model = torch.nn.Sequential(lin(8, 8), torch.nn.ReLU(), lin(8, 2))
        >>> plan = Prune(0.5).apply(model)
        >>> plan.sparsities()
        {'0': 0.5}
    """

    op = "prune"
    search_high = 0.995
    sensitivity_cap = 0.995
    calibration_start = 0.75

    def __init__(
        self,
        sparsity: Sparsity = 0.5,
        *,
        criterion: str = "magnitude",
        scope: str = "layer",
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        types: Any = None,
        include_output: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(
            sparsity,
            include=include,
            exclude=exclude,
            types=types,
            include_output=include_output,
            seed=seed,
        )
        self.criterion = check_criterion(criterion, weight_criteria)
        self.scope = check_scope(scope, self.sparsity)

    def units(self, model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, int]:
        sizes = {
            n: int(masking.alive(model, f"{n}.weight").sum())
            for n in self.weight_layers(model, example_input)
        }
        return {"global": sum(sizes.values())} if self.scope == "global" else sizes

    def apply(self, model: nn.Module, example_input: torch.Tensor | None = None) -> Plan:
        layers = self.weight_layers(model, example_input)
        gen = self._generator()
        scores, alive_idx = {}, {}
        for name, module in layers.items():
            alive = masking.alive(model, f"{name}.weight").flatten()
            alive_idx[name] = alive.nonzero().flatten()
            scores[name] = weight_scores(self.criterion, module.weight, gen).flatten()[alive]
        if self.scope == "global":
            picked = choose(scores, None, float(self.sparsity))
        else:
            picked = choose(scores, resolve_sparsity(self.sparsity, {n: n for n in layers}), None)
        plan = Plan()
        for name, module in layers.items():
            keep = torch.ones(module.weight.numel(), dtype=torch.bool)
            keep[alive_idx[name][picked[name]]] = False
            masking.set_mask(model, f"{name}.weight", keep.view(module.weight.shape))
            w = module.weight.detach().flatten().cpu()[alive_idx[name]]
            plan.set_layer(
                LayerPlan(
                    op=self.op,
                    layer=name,
                    total=int(w.numel()),
                    removed=int((w == 0).sum()),
                    criterion=self.criterion,
                )
            )
        set_plan(model, get_plan(model).merge(plan))
        return plan

    def config(self) -> dict[str, Any]:
        return {**super().config(), "criterion": self.criterion, "scope": self.scope}


def prune(
    model: nn.Module,
    sparsity: Sparsity = 0.5,
    example_input: torch.Tensor | None = None,
    **kwargs: Any,
) -> Plan:
    """Unstructured pruning in one call: ``Prune(sparsity, **kwargs).apply(model, example_input)``.

    With ``example_input`` the output layer is found by running the model.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    >>> prune(net, 0.3).sparsities()
    {'0': 0.3}
    """
    return Prune(sparsity, **kwargs).apply(model, example_input)

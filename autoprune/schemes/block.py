"""``block_prune``: zero whole blocks (e.g. 4x4, 1x8) of weight matrices."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import _masking as masking
from ..errors import ConfigError
from ..plan import LayerPlan, Plan, get_plan, set_plan
from .base import Pruning, Sparsity, check_scope, choose, resolve_sparsity, schemes

BLOCK_CRITERIA = ("l2", "l1", "random")


def check_block(block: Any) -> tuple[int, int]:
    if (
        isinstance(block, (tuple, list))
        and len(block) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in block)
    ):
        return int(block[0]), int(block[1])
    raise ConfigError(f"block: expected two positive integers (rows, cols), got {block!r}")


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as a matrix: Linear ``out x in``; Conv ``out x (in*kh*kw)``."""
    return weight.reshape(weight.shape[0], -1)


def block_grid(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """``(R, C, bh*bw)`` view of the matrix cut into blocks, zero-padded at the edges."""
    bh, bw = block
    rows, cols = matrix.shape
    padded = F.pad(matrix, (0, (-cols) % bw, 0, (-rows) % bh))
    r, c = padded.shape[0] // bh, padded.shape[1] // bw
    return padded.reshape(r, bh, c, bw).permute(0, 2, 1, 3).reshape(r, c, bh * bw)


def blocks_to_mask(
    keep_blocks: torch.Tensor, block: tuple[int, int], shape: torch.Size
) -> torch.Tensor:
    """Expand a ``(R, C)`` block mask to an element mask of the matrix ``shape``."""
    bh, bw = block
    full = keep_blocks.repeat_interleave(bh, 0).repeat_interleave(bw, 1)
    return full[: shape[0], : shape[1]]


@schemes.register("block_prune")
class BlockPrune(Pruning):
    """Block pruning: zero whole ``block``-shaped tiles of each weight matrix.

    A Linear weight is its ``out x in`` matrix; a Conv weight is viewed as
    ``out x (in*kh*kw)``. Blocks are ranked by their norm; blocks at the matrix edges may
    be smaller. Sparsity is the fraction of blocks removed.

    Args:
        sparsity: fraction of blocks, or ``{layer or pattern: s}``.
        block: block shape ``(rows, cols)``, e.g. ``(4, 4)`` or ``(1, 8)``.
        criterion: ``"l2"`` (default), ``"l1"`` or ``"random"``.
        scope: ``"layer"`` or ``"global"``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 2))
        >>> BlockPrune(0.5, block=(4, 4)).apply(net).sparsities()
        {'0': 0.5}
    """

    op = "block_prune"
    search_high = 0.95
    sensitivity_cap = 0.98
    calibration_start = 0.5

    def __init__(
        self,
        sparsity: Sparsity = 0.5,
        *,
        block: tuple[int, int] = (4, 4),
        criterion: str = "l2",
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
        self.block = check_block(block)
        if criterion not in BLOCK_CRITERIA:
            raise ConfigError(
                f"criterion: block_prune takes one of {', '.join(BLOCK_CRITERIA)}, "
                f"got {criterion!r}"
            )
        self.criterion = criterion
        self.scope = check_scope(scope, self.sparsity)

    def _layers(self, model: nn.Module, example_input: torch.Tensor | None) -> dict[str, nn.Module]:
        return self.weight_layers(model, example_input, min_dim=2)

    def _blocks(self, model: nn.Module, name: str, module: nn.Module, gen: torch.Generator):
        """Scores of the layer's live blocks (``-inf`` for blocks already zero)."""
        w = as_matrix(module.weight.detach().float().cpu())
        live = as_matrix(masking.alive(model, f"{name}.weight")).float()
        grid = block_grid(w * live, self.block)
        live_blocks = block_grid(live, self.block).amax(dim=2) > 0
        if self.criterion == "l2":
            scores = grid.pow(2).sum(dim=2).sqrt()
        elif self.criterion == "l1":
            scores = grid.abs().sum(dim=2)
        else:
            scores = torch.rand(live_blocks.shape, generator=gen)
        zero = grid.abs().amax(dim=2) == 0
        scores = scores.masked_fill(zero, float("-inf"))
        return scores, live_blocks

    def units(self, model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, int]:
        gen = self._generator()
        sizes = {
            n: int(self._blocks(model, n, m, gen)[1].sum())
            for n, m in self._layers(model, example_input).items()
        }
        return {"global": sum(sizes.values())} if self.scope == "global" else sizes

    def apply(self, model: nn.Module, example_input: torch.Tensor | None = None) -> Plan:
        layers = self._layers(model, example_input)
        gen = self._generator()
        scores, live = {}, {}
        for name, module in layers.items():
            s, lb = self._blocks(model, name, module, gen)
            live[name] = lb
            scores[name] = s[lb]
        if self.scope == "global":
            picked = choose(scores, None, float(self.sparsity))
        else:
            picked = choose(scores, resolve_sparsity(self.sparsity, {n: n for n in layers}), None)
        plan = Plan()
        for name, module in layers.items():
            lb = live[name]
            keep_live = torch.ones(int(lb.sum()), dtype=torch.bool)
            keep_live[picked[name]] = False
            keep_blocks = torch.ones(lb.shape, dtype=torch.bool)
            keep_blocks[lb] = keep_live
            matrix_shape = as_matrix(module.weight).shape
            keep = blocks_to_mask(keep_blocks, self.block, matrix_shape)
            masking.set_mask(model, f"{name}.weight", keep.reshape(module.weight.shape))
            s, _ = self._blocks(model, name, module, gen)
            plan.set_layer(
                LayerPlan(
                    op=self.op,
                    layer=name,
                    total=int(lb.sum()),
                    removed=int(torch.isneginf(s[lb]).sum()),
                    criterion=self.criterion,
                    block=self.block,
                )
            )
        set_plan(model, get_plan(model).merge(plan))
        return plan

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "block": list(self.block),
            "criterion": self.criterion,
            "scope": self.scope,
        }


def block_prune(
    model: nn.Module,
    sparsity: Sparsity = 0.5,
    example_input: torch.Tensor | None = None,
    **kwargs: Any,
) -> Plan:
    """Block pruning in one call: ``BlockPrune(sparsity, **kwargs).apply(model, example_input)``.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> block_prune(net, 0.5, block=(2, 2)).sparsities()
    {'0': 0.5}
    """
    return BlockPrune(sparsity, **kwargs).apply(model, example_input)

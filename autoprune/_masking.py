"""Masks that keep pruned weights at zero, and exact masking of channel-spanning norms.

A masked model keeps its shapes; pruned units are zero. The masks live beside the model
(not in its ``state_dict``), keyed by parameter name, so a ``state_dict`` saved from a
masked model loads into a plain copy of the architecture.

Training loops call :func:`apply_masks` after every optimizer step so that pruned weights
stay at zero::

    >>> import torch
    >>> from autoprune._masking import set_mask, apply_masks
    >>> lin = torch.nn.Linear(2, 2)
    >>> set_mask(lin, "weight", torch.tensor([[True, False], [True, True]]))
    >>> with torch.no_grad():
    ...     _ = lin.weight.fill_(1.0)
    >>> apply_masks(lin)
    >>> lin.weight.tolist()
    [[1.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Two kinds of mask, kept apart: "struct" masks come from structured operators in masked
# mode (whole channels, gone once the model is made physical); "weights" masks come from
# unstructured and block pruning (they stay, and move with the weights).
_KINDS = {"struct": "_autoprune_struct_masks", "weights": "_autoprune_weight_masks"}


def get_masks(model: nn.Module, kind: str = "weights") -> dict[str, torch.Tensor]:
    """Return the model's masks of one kind, ``{parameter name: bool tensor}`` (True = kept)."""
    return model.__dict__.setdefault(_KINDS[kind], {})


def set_mask(model: nn.Module, name: str, keep: torch.Tensor, kind: str = "weights") -> None:
    """AND ``keep`` into the ``kind`` mask of parameter ``name`` and zero what it removes."""
    param = model.get_parameter(name)
    keep = keep.to(device=param.device, dtype=torch.bool)
    if keep.shape != param.shape:
        raise ValueError(f"mask for {name} has shape {tuple(keep.shape)}, not {tuple(param.shape)}")
    masks = get_masks(model, kind)
    if name in masks and masks[name].shape == keep.shape:
        keep = keep & masks[name].to(keep.device)
    masks[name] = keep
    with torch.no_grad():
        param.mul_(keep)


def alive(model: nn.Module, name: str) -> torch.Tensor:
    """Bool tensor: the entries of parameter ``name`` not removed by a structured mask."""
    param = model.get_parameter(name)
    keep = get_masks(model, "struct").get(name)
    if keep is None or keep.shape != param.shape:
        return torch.ones(param.shape, dtype=torch.bool)
    return keep.cpu()


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every masked weight again (call after each optimizer step)."""
    for kind in _KINDS:
        masks = get_masks(model, kind)
        for name, keep in masks.items():
            param = model.get_parameter(name)
            if keep.device != param.device:
                keep = masks[name] = keep.to(param.device)
            param.mul_(keep)


def clear_masks(model: nn.Module, kind: str | None = None) -> None:
    """Forget masks of one kind, or all (the zeros stay in the weights)."""
    for k in [kind] if kind else list(_KINDS):
        model.__dict__[_KINDS[k]] = {}


def masks_from_zeros(model: nn.Module, names: list[str]) -> None:
    """Rebuild weight masks for the named parameters from their zeros (after a reload, or
    after a physical reshape where a stored mask no longer fits)."""
    masks = get_masks(model, "weights")
    for name in names:
        masks[name] = model.get_parameter(name).detach() != 0


# ---------------------------------------------------------------------------------------
# Norm layers that normalise across channels (LayerNorm over C, GroupNorm) cannot be
# masked by zeroing: the zeroed channel still enters the mean and variance of the kept
# ones. A forward hook recomputes such a layer on the kept channels only, which is exactly
# what the physically smaller layer computes.


class KeepChannels:
    """Forward hook: recompute a channel-spanning norm on the kept channels only."""

    def __init__(self, keep: torch.Tensor, dim: int) -> None:
        self.keep = keep
        self.dim = dim

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        dim = self.dim % x.dim()
        keep = self.keep.to(x.device)
        xk = x.index_select(dim, keep)
        weight = module.weight.index_select(0, keep) if module.weight is not None else None
        bias = module.bias.index_select(0, keep) if module.bias is not None else None
        if isinstance(module, nn.GroupNorm):
            y = F.group_norm(xk, module.num_groups, weight, bias, module.eps)
        else:
            y = F.layer_norm(xk.movedim(dim, -1), (len(keep),), weight, bias, module.eps)
            y = y.movedim(-1, dim)
        out = torch.zeros_like(output)
        return out.index_copy(dim, keep, y.to(out.dtype))


def norm_channel_dim(module: nn.Module) -> int | None:
    """The input dim along which ``module`` normalises channels, or None if not supported.

    Plain ``nn.LayerNorm`` over one trailing dim normalises the last dim; torchvision's
    ``LayerNorm2d`` (ConvNeXt) permutes NCHW and normalises dim 1; ``nn.GroupNorm`` dim 1.
    """
    if isinstance(module, nn.GroupNorm):
        return 1
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        if type(module).forward is nn.LayerNorm.forward:
            return -1
        qualname = f"{type(module).__module__}.{type(module).__qualname__}"
        if qualname == "torchvision.models.convnext.LayerNorm2d":
            return 1
    return None


def set_norm_keep(module: nn.Module, keep: torch.Tensor, dim: int) -> None:
    """Install (or narrow) the exact-masking hook of a channel-spanning norm."""
    for hook in module._forward_hooks.values():
        if isinstance(hook, KeepChannels):
            kept = set(hook.keep.tolist()) & set(keep.tolist())
            hook.keep = torch.tensor(sorted(kept), dtype=torch.long)
            return
    module.register_forward_hook(KeepChannels(keep.to(torch.long).cpu(), dim))


def remove_norm_hooks(model: nn.Module) -> None:
    """Remove every exact-masking hook (before physical removal)."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, KeepChannels):
                del module._forward_hooks[key]

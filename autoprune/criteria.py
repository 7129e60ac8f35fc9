"""Importance criteria: which units to remove first (the lowest scores go).

Channel criteria score each output channel of a coupled group from ``rows``, the
flattened weights that produce the channel (all producer layers of the group,
concatenated), and ``bn_scale``, the summed ``|gamma|`` of the BatchNorms that follow::

    >>> import torch
    >>> rows = torch.tensor([[1.0, -1.0], [0.1, 0.2], [3.0, 0.0]])
    >>> channel_scores("l1", rows).tolist()
    [2.0, 0.30000001192092896, 3.0]

Weight criteria score every weight of a tensor (``prune``) and blocks of it
(``block_prune``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError
from .registry import Registry

channel_criteria = Registry("channel criterion")
weight_criteria = Registry("weight criterion")


def register_channel_criterion(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Register ``fn(rows, bn_scale, generator) -> scores`` as a channel criterion."""
    channel_criteria.add(name, fn)


def list_channel_criteria() -> list[str]:
    """The registered channel criteria.

    >>> "l1" in list_channel_criteria()
    True
    """
    return channel_criteria.names()


def register_weight_criterion(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Register ``fn(weight, generator) -> scores`` as a weight criterion."""
    weight_criteria.add(name, fn)


def list_weight_criteria() -> list[str]:
    """The registered weight criteria."""
    return weight_criteria.names()


ChannelCriterion = Callable[[torch.Tensor, "torch.Tensor | None", torch.Generator], torch.Tensor]


@channel_criteria.register("l1")
def l1(rows: torch.Tensor, bn_scale=None, generator=None) -> torch.Tensor:
    """L1 norm of each channel's filter (Li et al., 2017)."""
    return rows.abs().sum(dim=1)


@channel_criteria.register("l2")
def l2(rows: torch.Tensor, bn_scale=None, generator=None) -> torch.Tensor:
    """L2 norm of each channel's filter."""
    return rows.pow(2).sum(dim=1).sqrt()


@channel_criteria.register("linf")
def linf(rows: torch.Tensor, bn_scale=None, generator=None) -> torch.Tensor:
    """Largest absolute weight of each channel's filter."""
    return rows.abs().amax(dim=1) if rows.shape[1] else torch.zeros(rows.shape[0])


@channel_criteria.register("random")
def random_channels(rows: torch.Tensor, bn_scale=None, generator=None) -> torch.Tensor:
    """Uniform random scores from the seeded generator (a baseline)."""
    return torch.rand(rows.shape[0], generator=generator)


@channel_criteria.register("fpgm")
def fpgm(rows: torch.Tensor, bn_scale=None, generator=None) -> torch.Tensor:
    """Filter pruning via geometric median (He et al., 2019).

    A filter close to all others (small summed distance) is the most replaceable.
    """
    r = rows.double()
    return torch.cdist(r, r).sum(dim=1).float()


@channel_criteria.register("bn_scale")
def bn_scale(rows: torch.Tensor, bn_scale=None, generator=None) -> torch.Tensor:
    """``|gamma|`` of the BatchNorm after the channel (network slimming, Liu et al., 2017).

    Groups without a BatchNorm fall back to the L2 norm of the filter.
    """
    if bn_scale is None:
        return l2(rows)
    return bn_scale


def channel_scores(
    criterion: str,
    rows: torch.Tensor,
    bn_scale: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Score channels with the named criterion (higher = more important)."""
    fn = channel_criteria.get(criterion)
    return fn(rows.detach().float().cpu(), bn_scale, generator)


@weight_criteria.register("magnitude")
def magnitude(weight: torch.Tensor, generator=None) -> torch.Tensor:
    """``|w|`` (L1 magnitude of each weight)."""
    return weight.abs()


weight_criteria.add("l1", magnitude)


@weight_criteria.register("random")
def random_weights(weight: torch.Tensor, generator=None) -> torch.Tensor:
    """Uniform random scores (a baseline)."""
    return torch.rand(weight.shape, generator=generator)


def weight_scores(
    criterion: str, weight: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Score every weight with the named criterion; weights already zero score ``-inf``.

    Scoring zeros lowest is what makes pruning non-compounding: a second call at the same
    sparsity finds its quota already removed.
    """
    w = weight.detach().float().cpu()
    scores = weight_criteria.get(criterion)(w, generator).clone()
    scores[w == 0] = float("-inf")
    return scores


def check_criterion(criterion: str, registry: Registry, param: str = "criterion") -> str:
    """Return ``criterion`` if ``registry`` knows it, else raise naming ``param``."""
    if not isinstance(criterion, str) or criterion not in registry:
        try:
            registry.get(str(criterion))
        except ConfigError as exc:
            raise ConfigError(f"{param}: {exc}") from None
    return criterion

"""Coupled channel groups and their removal, masked or physical.

Channels that must go together (through residual adds, BatchNorm, concatenation,
depthwise and grouped convolution, flatten-to-Linear) are found with Torch-Pruning's
dependency graph (DepGraph). This module wraps it behind autoprune's own small interface:
a :class:`StructureGraph` lists :class:`Group` objects by name, masks a group's channels
on any copy of the architecture, and removes them physically from the traced model.

    >>> import torch
    >>> from autoprune.models import create_model
    >>> model = create_model("resnet10", num_classes=10, input_shape=(1, 8, 8), width=8)
    >>> graph = StructureGraph(model, torch.randn(1, 1, 8, 8))
    >>> [g.root for g in graph.groups][:3]
    ['conv1', 'layer1.0.conv1', 'layer2.0.conv1']

Masking zeroes every producer of the channel and every per-channel norm parameter in the
group, so the masked model computes what the smaller model computes. Norms that
normalise across channels (LayerNorm over C, GroupNorm) get a forward hook that
normalises over the kept channels only (see :mod:`autoprune.masking`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from . import _masking as masking
from .errors import ModelError, PruningError

CONV = nn.modules.conv._ConvNd
PRODUCER_TYPES = (CONV, nn.Linear)

# Modules for which "zero the channel's parameters" gives exactly the removed output.
_PER_CHANNEL_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass
class Member:
    """One layer (or bare parameter) touched when a group's channels are removed."""

    name: str
    kind: str  # "producer", "norm", "param", "consumer" or "other"
    module_type: str
    idxs: list[int]
    root_idxs: list[int]
    dim: int = 0  # for bare parameters: the pruned dim


def _channel_blocks(module: nn.Module) -> int:
    """The equal blocks a layer's channels split into, which removals must repeat across
    (a grouped, non-depthwise conv; a GroupNorm of several channels a group); else 1."""
    if isinstance(module, CONV) and module.groups > 1:
        depthwise = module.groups == module.out_channels and module.out_channels > 1
        return 1 if depthwise else module.groups
    if isinstance(module, nn.GroupNorm) and module.num_groups not in (1, module.num_channels):
        return module.num_groups
    return 1


def _member_kind(module: nn.Module, is_out: bool) -> str:
    """What removing a group's channels does to ``module``: ``consumer`` (its inputs),
    ``producer`` (its outputs), ``norm`` (its per-channel parameters) or ``other``."""
    if not is_out:
        return "consumer"
    if isinstance(module, PRODUCER_TYPES):
        return "producer"
    per_channel = (*_PER_CHANNEL_NORMS, nn.PReLU, nn.LayerNorm, nn.GroupNorm, nn.Embedding)
    return "norm" if isinstance(module, per_channel) else "other"


def _mask_inputs(model: nn.Module, prefix: str, module: nn.Module, idx: list[int]) -> None:
    """Zero a consumer's input weights for channels ``idx``."""
    if isinstance(module, nn.Linear):
        _mask_along(model, prefix + "weight", 1, idx)
    elif isinstance(module, CONV):
        _mask_conv_inputs(model, prefix + "weight", module, idx)


def _mask_outputs(
    model: nn.Module, prefix: str, module: nn.Module, idx: list[int], producer: bool
) -> None:
    """Zero a producer's filters, or a norm's per-channel parameters, for channels ``idx``."""
    if producer:
        transposed = isinstance(module, CONV) and module.transposed
        _mask_along(model, prefix + "weight", 1 if transposed else 0, idx)
    elif isinstance(module, nn.Embedding):
        _mask_along(model, prefix + "weight", 1, idx)
    elif getattr(module, "weight", None) is not None:
        _mask_along(model, prefix + "weight", 0, idx)
    if getattr(module, "bias", None) is not None:
        _mask_along(model, prefix + "bias", 0, idx)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        module.running_mean[idx] = 0.0  # zero in, zero out without affine
    norm_dim = masking.norm_channel_dim(module)
    if norm_dim is not None:
        n = module.num_channels if isinstance(module, nn.GroupNorm) else module.normalized_shape[0]
        keep = torch.tensor(sorted(set(range(n)) - set(idx)), dtype=torch.long)
        masking.set_norm_keep(module, keep, norm_dim)


@dataclass
class Group:
    """A set of channels that are removed together.

    Attributes:
        root: the group's name, its first producer layer in ``named_modules`` order.
        size: channels in the group now.
        producers: Conv/Linear layers whose output channels these are.
        channel_groups: removals must repeat across this many equal blocks (grouped conv).
        members: every layer the removal touches.
    """

    root: str
    size: int
    producers: list[str]
    producer_types: list[str]
    channel_groups: int
    members: list[Member] = field(default_factory=list)

    @property
    def is_conv(self) -> bool:
        return any(t.startswith("Conv") for t in self.producer_types)


def execution_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of Conv/Linear modules in the order a forward pass runs them."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: order.append(names[mod]))
        for m in model.modules()
        if isinstance(m, PRODUCER_TYPES)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    except Exception as exc:
        raise ModelError(
            f"the model fails on an input of shape {tuple(example_input.shape)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def output_layer(model: nn.Module, example_input: torch.Tensor | None = None) -> str | None:
    """The classifier's output layer: the last Conv/Linear run (or defined, without input)."""
    if example_input is not None:
        order = execution_order(model, example_input)
        return order[-1] if order else None
    names = [n for n, m in model.named_modules() if isinstance(m, PRODUCER_TYPES)]
    return names[-1] if names else None


def _mask_along(model: nn.Module, name: str, dim: int, idx: list[int]) -> None:
    param = model.get_parameter(name)
    keep = torch.ones(param.shape, dtype=torch.bool)
    keep.index_fill_(dim % param.dim(), torch.tensor(idx), False)
    masking.set_mask(model, name, keep, kind="struct")


def _mask_conv_inputs(model: nn.Module, name: str, conv: nn.Module, idx: list[int]) -> None:
    """Zero the weights that read input channels ``idx`` of a (possibly grouped) conv."""
    param = model.get_parameter(name)
    keep = torch.ones(param.shape, dtype=torch.bool)
    if conv.transposed:  # weight: (in, out/groups, ...)
        keep[idx] = False
    else:  # weight: (out, in/groups, ...); input i feeds group i // per_group
        per_group = conv.in_channels // conv.groups
        out_per_group = conv.out_channels // conv.groups
        for i in idx:
            g, j = divmod(i, per_group)
            keep[g * out_per_group : (g + 1) * out_per_group, j] = False
    masking.set_mask(model, name, keep, kind="struct")


def _flat_rows(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach()
    if isinstance(module, CONV) and module.transposed:
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)


class StructureGraph:
    """The coupled channel groups of a model, traced with an example input.

    Args:
        model: the model; it is traced, not changed (its train/eval mode is restored).
        example_input: a tensor the model accepts, e.g. ``torch.randn(1, 3, 32, 32)``.
        ignore: layer names whose output channels must never be removed. The output
            layer is always ignored.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        ignore: Iterable[str] = (),
    ) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.output_layer = output_layer(model, example_input)
        ignored = {n for n in ignore if n in self.modules}
        if self.output_layer:
            ignored.add(self.output_layer)
        was_training = model.training
        try:
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, verbose=False
                )
        except Exception as exc:  # tracing arbitrary user models fails in many ways
            raise ModelError(
                f"cannot trace the model's channel dependencies ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            model.train(was_training)
        self._param_names = dict(self.dg._param_to_name)
        order = {n: i for i, n in enumerate(self.modules)}
        ignored_modules = [self.modules[n] for n in ignored]
        groups = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for tp_group in self.dg.get_all_groups(
                ignored_layers=ignored_modules, root_module_types=PRODUCER_TYPES
            ):
                producers = sorted(
                    {
                        self.dg._module2name[it.dep.target.module]
                        for it in tp_group.items
                        if self.dg.is_out_channel_pruning_fn(it.dep.handler)
                        and isinstance(it.dep.target.module, PRODUCER_TYPES)
                    },
                    key=order.__getitem__,
                )
                groups.append(self._describe(producers[0]))
        self.groups: list[Group] = sorted(groups, key=lambda g: order[g.root])
        self.by_root = {g.root: g for g in self.groups}
        self.by_layer = {p: g for g in self.groups for p in g.producers}

    # -- description ------------------------------------------------------------------
    def _tp_group(self, root: str, idxs: Sequence[int]):
        module = self.modules[root]
        pruner = self.dg.get_pruner_of_module(module)
        return self.dg.get_pruning_group(module, pruner.prune_out_channels, list(idxs))

    def _describe(self, root: str) -> Group:
        module = self.modules[root]
        size = self.dg.get_pruner_of_module(module).get_out_channels(module)
        members: list[Member] = []
        producers: list[str] = []
        producer_types: list[str] = []
        channel_groups = 1
        for item in self._tp_group(root, range(size)).items:
            target, handler = item.dep.target.module, item.dep.handler
            is_out = self.dg.is_out_channel_pruning_fn(handler)
            idxs, root_idxs = list(item.idxs), list(item.root_idxs)
            if isinstance(target, nn.Parameter):
                name = self._param_names.get(target)
                if name is None:
                    continue
                dim = self.dg.module2node[target].pruning_dim
                members.append(Member(name, "param", "Parameter", idxs, root_idxs, dim))
                continue
            name = self.dg._module2name.get(target)
            if name is None or name not in self.modules:
                continue  # torch-pruning's own placeholders for cat/split/reshape/add
            mtype = type(target).__name__
            channel_groups = math.lcm(channel_groups, _channel_blocks(target))
            kind = _member_kind(target, is_out)
            if kind == "producer":
                producers.append(name)
                producer_types.append(mtype)
            members.append(Member(name, kind, mtype, idxs, root_idxs))
        order = {n: i for i, n in enumerate(self.modules)}
        pairs = sorted(zip(producers, producer_types), key=lambda p: order[p[0]])
        if size % channel_groups:
            channel_groups = 1
        return Group(
            root=root,
            size=size,
            producers=[p for p, _ in pairs],
            producer_types=[t for _, t in pairs],
            channel_groups=channel_groups,
            members=members,
        )

    # -- importance -------------------------------------------------------------------
    def channel_rows(self, group: Group, model: nn.Module | None = None):
        """Producer weights per channel, ``(size, D)``, and summed BN ``|gamma|`` (or None).

        ``model`` may be any copy of the traced architecture (default: the traced model).
        """
        model = model if model is not None else self.model
        mods = dict(model.named_modules())
        blocks = []
        gamma = None
        for m in group.members:
            if m.kind == "producer":
                rows = _flat_rows(mods[m.name]).float().cpu()
                full = torch.zeros(group.size, rows.shape[1])
                full.index_add_(0, torch.tensor(m.root_idxs), rows[m.idxs])
                blocks.append(full)
            elif m.kind == "norm" and isinstance(mods[m.name], nn.modules.batchnorm._BatchNorm):
                bn = mods[m.name]
                if bn.weight is not None:
                    g = torch.zeros(group.size)
                    g.index_add_(
                        0, torch.tensor(m.root_idxs), bn.weight.detach().abs().cpu()[m.idxs]
                    )
                    gamma = g if gamma is None else gamma + g
        return torch.cat(blocks, dim=1), gamma

    # -- masking ----------------------------------------------------------------------
    @torch.no_grad()
    def mask(self, model: nn.Module, group: Group, remove: Sequence[int]) -> None:
        """Zero channels ``remove`` (the group's current numbering) of ``group`` in ``model``.

        ``model`` is the traced model or a copy of it with the same current shapes. The
        producers' filters and the norms' per-channel parameters are zeroed, and so are
        the consumers' input weights for these channels, so the masked weights hold
        exactly what removal leaves.
        """
        remove_set = {int(i) for i in remove}
        if not remove_set:
            return
        mods = dict(model.named_modules())
        for m in group.members:
            idx = [i for i, r in zip(m.idxs, m.root_idxs) if r in remove_set]
            if not idx or m.kind == "other":
                continue
            if m.kind == "param":
                _mask_along(model, m.name, m.dim, idx)
                continue
            module = mods[m.name]
            prefix = f"{m.name}." if m.name else ""
            if m.kind == "consumer":
                _mask_inputs(model, prefix, module, idx)
            elif not isinstance(module, nn.PReLU):  # PReLU(0) == 0 whatever its slope
                _mask_outputs(model, prefix, module, idx, producer=m.kind == "producer")

    # -- physical removal -------------------------------------------------------------
    def remove(self, removals: dict[str, Sequence[int]]) -> None:
        """Physically remove channels from the traced model, ``{root: current indices}``."""
        for group in self.groups:
            idxs = sorted(int(i) for i in removals.get(group.root, ()))
            if not idxs:
                continue
            if len(idxs) >= group.size:
                raise PruningError(f"cannot remove all {group.size} channels of {group.root}")
            tp_group = self._tp_group(group.root, idxs)
            if not self.dg.check_pruning_group(tp_group):
                raise PruningError(f"removing {len(idxs)} channels of {group.root} empties a layer")
            tp_group.prune()

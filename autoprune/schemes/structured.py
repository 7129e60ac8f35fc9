"""``filter_prune`` and ``neuron_prune``: remove whole channels, masked or physically.

Both work on coupled groups (:mod:`autoprune.structure`): channels tied together through
residual adds, BatchNorm, concatenation or grouped convolution are removed together, and
a per-layer sparsity names any layer of a group.

Masked mode zeroes the channels, so the model keeps its shapes and computes what the
smaller model computes. Physical mode (``physical=True``, or :func:`materialize` later)
builds the smaller dense model and checks that its outputs equal the masked model's; when
they do not (a model the dependency graph cannot follow, e.g. a channel shuffle), the
masked model is kept and the plan's ``notes`` say why.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import _checks
from .. import _masking as masking
from .._backends import exact_math
from .._structure import CONV, Group, StructureGraph
from ..criteria import channel_criteria, channel_scores, check_criterion
from ..errors import ConfigError, ModelError, PruningError
from ..plan import GroupPlan, Plan, get_plan, set_plan
from ..training import inference
from .base import Pruning, Sparsity, count_to_remove, lowest, matches, resolve_sparsity, schemes


def _require_input(example_input: torch.Tensor | None, op: str) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise ConfigError(
            f"example_input: {op} traces the model, so it needs an input tensor "
            "(e.g. torch.randn(1, 3, 32, 32))"
        )
    return example_input


class StructuredPrune(Pruning):
    """Base of the channel-removing operators (see :class:`FilterPrune`)."""

    unit = "channels"
    search_high = 0.9
    sensitivity_cap = 0.95

    def __init__(
        self,
        sparsity: Sparsity = 0.5,
        *,
        criterion: str = "l1",
        physical: bool = False,
        round_to: int | str = "auto",
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        types: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__(sparsity, include=include, exclude=exclude, types=types, seed=seed)
        self.criterion = check_criterion(criterion, channel_criteria)
        self.physical = bool(physical)
        self.auto_multiple = 1  # what "auto" rounds to: set for a timed run by for_run
        self.round_to: int | str = (
            "auto"
            if round_to == "auto"
            else _checks.number(
                f"{self.op}.round_to", round_to, 1, integer=True, what="'auto' or an integer >= 1"
            )
        )

    def channel_step(self, size: int) -> int:
        """The multiple a group of ``size`` channels keeps: ``round_to``; for ``"auto"``,
        1, or in a run that times the model on a device (:meth:`for_run`), that device's
        multiple (:data:`AUTO_ROUND_TO`) capped at a quarter of the group
        (:func:`auto_step`)."""
        if isinstance(self.round_to, int):
            return self.round_to
        return auto_step(self.auto_multiple, size)

    def for_run(self, device: torch.device, timed: bool) -> StructuredPrune:
        """A copy whose ``round_to="auto"`` uses ``device``'s multiple when the run
        optimises a timing (counts and sizes gain nothing from rounding)."""
        if self.round_to != "auto":
            return self
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.auto_multiple = AUTO_ROUND_TO.get(device.type, 1) if timed else 1
        return clone

    def scaled(self, factor: float) -> StructuredPrune:
        """A masked copy removing ``factor`` of the sparsity (see :meth:`Pruning.scaled`):
        the ramp of gradual pruning stays masked, the model is made physical after it."""
        clone = super().scaled(factor)
        assert isinstance(clone, StructuredPrune)
        clone.physical = False
        return clone

    # -- which groups -----------------------------------------------------------------
    def _kind_ok(self, group: Group) -> bool:
        raise NotImplementedError

    def eligible(self, graph: StructureGraph) -> list[Group]:
        """The groups this operator may prune."""
        out = []
        for g in graph.groups:
            if not self._kind_ok(g):
                continue
            mods = [graph.modules[p] for p in g.producers]
            if not any(isinstance(m, self.types) for m in mods):
                continue
            if any(matches(p, self.exclude) for p in g.producers):
                continue
            if self.include and not any(matches(p, self.include) for p in g.producers):
                continue
            out.append(g)
        return out

    def _groups(
        self, model: nn.Module, example_input: torch.Tensor | None
    ) -> tuple[StructureGraph, list[Group]]:
        graph = StructureGraph(model, _require_input(example_input, self.op))
        groups = self.eligible(graph)
        if not groups:
            raise self._nothing_selected(g.root for g in graph.groups)
        return graph, groups

    def units(self, model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, int]:
        """``{group root: channels in the original model}`` of the groups it would prune."""
        plan = get_plan(model)
        _, groups = self._groups(model, example_input)
        return {
            g.root: plan.groups[g.root].total if g.root in plan.groups else g.size for g in groups
        }

    def channel_importance(
        self, model: nn.Module, example_input: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{group root: a score per channel}`` under the operator's criterion (higher:
        more important), for the groups it would prune; grouped convolutions' blocks
        share their scores."""
        graph, groups = self._groups(model, example_input)
        gen = self._generator()
        out = {}
        for g in groups:
            rows, gamma = graph.channel_rows(g, model)
            scores = channel_scores(self.criterion, rows, gamma, gen)
            G = g.channel_groups
            out[g.root] = scores.view(G, -1).sum(dim=0).repeat(G)
        return out

    # -- pruning ----------------------------------------------------------------------
    def apply(self, model: nn.Module, example_input: torch.Tensor | None = None) -> Plan:
        graph, groups = self._groups(model, example_input)
        per = resolve_sparsity(self.sparsity, {p: g.root for g in groups for p in g.producers})
        model_plan = get_plan(model)
        gen = self._generator()

        plan = Plan()
        for g in groups:
            prev = model_plan.groups.get(g.root)
            entry = GroupPlan(
                op=self.op,
                root=g.root,
                layers=list(g.producers),
                total=prev.total if prev else g.size,
                removed=list(prev.removed) if prev else [],
                materialized=list(prev.materialized) if prev else [],
                criterion=self.criterion,
            )
            present = entry.in_tensors
            if len(present) != g.size:
                raise PruningError(
                    f"{g.root}: the model has {g.size} channels but its plan expects "
                    f"{len(present)}; was it changed outside autoprune?"
                )
            G = g.channel_groups
            target = count_to_remove(per[g.root], entry.total, multiple=G, min_keep=G)
            step = self.channel_step(entry.total)
            if step > 1:
                target = round_kept(target, entry.total, step, G)
            removed = set(entry.removed)
            if target > len(removed):
                rows, gamma = graph.channel_rows(g, model)
                scores = channel_scores(self.criterion, rows, gamma, gen)
                cur_removed = torch.tensor([i in removed for i in present])
                scores = scores.masked_fill(cur_removed, float("-inf"))
                # grouped convs: the same positions go in every block of size/G channels
                per_block = scores.view(G, -1).sum(dim=0)
                # channels to remove among those present (the masked ones score -inf)
                picked = lowest(per_block, (target - len(entry.materialized)) // G)
                block = g.size // G
                cur = (picked[None, :] + block * torch.arange(G)[:, None]).flatten().tolist()
                removed |= {present[i] for i in cur}
            entry.removed = sorted(removed)
            pos = {orig: j for j, orig in enumerate(present)}
            graph.mask(model, g, [pos[i] for i in entry.removed if i in pos])
            plan.set_group(entry)
        set_plan(model, model_plan.merge(plan))
        if self.physical:
            result = materialize(model, example_input)
            if result.physical:
                if result.model is not model:
                    _adopt(model, result.model)
            else:
                note = f"{self.op}: kept the masked model: {result.reason}"
                warnings.warn(note, stacklevel=2)
                plan.notes.append(note)
                get_plan(model).notes.append(note)
        for root in plan.groups:
            plan.groups[root] = get_plan(model).groups[root]
        return plan

    def config(self) -> dict[str, Any]:
        out = {**super().config(), "criterion": self.criterion, "physical": self.physical}
        if self.round_to != "auto":
            return out | {"round_to": self.round_to}
        return out | ({"auto_multiple": self.auto_multiple} if self.auto_multiple > 1 else {})


#: The channel multiple each device type runs fastest, which ``round_to="auto"`` keeps in
#: a run that times the model (:func:`auto_step`), measured with
#: ``benchmarks/channel_rounding.py`` (docs/measurements.md#channel-counts). CUDA: on an
#: H200, resnet50 in float16 with channel counts as they fall ran at 0.57x-0.69x the
#: original's speed, rounded to 32 at 1.30x-1.68x. CPU: oneDNN's AVX-512 kernels work in
#: blocks of 16 channels; rounded to 16, resnet50 ran 3-16% faster per MAC than unrounded.
AUTO_ROUND_TO = {"cuda": 32, "cpu": 16}


def auto_step(multiple: int, size: int) -> int:
    """The multiple a group of ``size`` channels keeps under ``round_to="auto"``:
    ``multiple``, but at most the largest power of two within a quarter of the group, so
    that a small group keeps at least four choices (its convolutions are bound by
    overheads that rounding does not change).

    >>> [auto_step(16, n) for n in (8, 16, 32, 64, 256)]
    [2, 4, 8, 16, 16]
    >>> auto_step(32, 100), auto_step(32, 3), auto_step(1, 512)
    (16, 1, 1)
    """
    quarter = size // 4
    if multiple <= 1 or quarter < 2:
        return 1
    return min(multiple, 1 << (quarter.bit_length() - 1))


def round_kept(remove: int, total: int, round_to: int, channel_groups: int = 1) -> int:
    """Channels to remove so that the number kept is the nearest multiple of ``round_to``
    (and of ``channel_groups``), at least one multiple; a group smaller than that is kept
    whole. GPUs' tensor cores want channel counts in multiples of 8 to 32.

    >>> round_kept(30, 64, 8), round_kept(10, 64, 8), round_kept(60, 64, 8), round_kept(2, 6, 8)
    (32, 8, 56, 0)
    """
    step = math.lcm(round_to, channel_groups)
    if total < step:
        return 0
    kept = max(step, round((total - remove) / step) * step)
    return max(0, total - min(kept, total - total % step))


@schemes.register("filter_prune")
class FilterPrune(StructuredPrune):
    """Filter pruning: remove whole conv output channels (and what they are coupled to).

    Args:
        sparsity: fraction of each group's original channels, or ``{layer or pattern: s}``
            (any layer of a coupled group names the group).
        criterion: ``l1`` (default), ``l2``, ``linf``, ``random``, ``fpgm`` or ``bn_scale``.
        physical: build the smaller dense model now (default: mask).
        round_to: every group keeps a multiple of this many channels (the nearest to its
            sparsity, at least one multiple; smaller groups are kept whole): GPUs run
            channel counts in multiples of 8 to 32 far faster (docs/measurements.md).
            ``"auto"`` (default): 1 when applied directly (exactly the sparsity asked);
            in a :class:`~autoprune.Compressor` run whose objective is a timing, the
            multiple the run's device is fastest with (:data:`AUTO_ROUND_TO`: 32 on CUDA,
            16 on the CPU), at most a quarter of each group (:func:`auto_step`).
        include, exclude: layer-name patterns; a group is skipped if any of its layers
            is excluded. The classifier's output layer is never pruned.
        seed: seeds the random criterion.

    Example:
        >>> import torch
        >>> from autoprune.models import create_model
        >>> net = create_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), width=8)
        >>> x = torch.randn(1, 1, 8, 8)
        >>> plan = FilterPrune(0.5, physical=True).apply(net, x)
        >>> net.conv1.out_channels
        4
    """

    op = "filter_prune"
    default_types = (CONV, nn.Linear)

    def _kind_ok(self, group: Group) -> bool:
        return group.is_conv


@schemes.register("neuron_prune")
class NeuronPrune(StructuredPrune):
    """Neuron pruning: remove whole Linear output neurons (and what they feed).

    Takes the same arguments as :class:`FilterPrune`, for groups made of Linear layers.

    Example:
        >>> import torch
        >>> from autoprune.models import create_model
        >>> net = create_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(32, 16))
        >>> plan = NeuronPrune(0.25, physical=True).apply(net, torch.randn(1, 1, 8, 8))
        >>> net.fc1.out_features
        24
    """

    op = "neuron_prune"
    unit = "neurons"
    default_types = (nn.Linear,)

    def _kind_ok(self, group: Group) -> bool:
        return not group.is_conv


def filter_prune(
    model: nn.Module,
    sparsity: Sparsity = 0.5,
    example_input: torch.Tensor | None = None,
    **kwargs: Any,
) -> Plan:
    """Filter pruning in one call: ``FilterPrune(sparsity, **kwargs).apply(model, example_input)``.

    >>> import torch
    >>> from autoprune.models import create_model
    >>> net = create_model("resnet10", num_classes=10, input_shape=(1, 8, 8), width=8)
    >>> plan = filter_prune(net, 0.5, torch.randn(1, 1, 8, 8), physical=True)
    >>> plan.physical
    True
    """
    return FilterPrune(sparsity, **kwargs).apply(model, example_input)


def neuron_prune(
    model: nn.Module,
    sparsity: Sparsity = 0.5,
    example_input: torch.Tensor | None = None,
    **kwargs: Any,
) -> Plan:
    """Neuron pruning in one call: ``NeuronPrune(sparsity, **kwargs).apply(model, example_input)``.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> neuron_prune(net, 0.5, torch.randn(1, 4), physical=True).physical
    True
    """
    return NeuronPrune(sparsity, **kwargs).apply(model, example_input)


# ---------------------------------------------------------------------------------------


@dataclass
class Materialized:
    """The outcome of :func:`materialize`.

    Attributes:
        model: the physical model, or the unchanged masked model when ``physical`` is False.
        physical: whether every structured removal is now physical.
        reason: why not, when ``physical`` is False.
        max_abs_diff: largest difference between physical and masked outputs (if checked).
    """

    model: nn.Module
    physical: bool
    reason: str | None = None
    max_abs_diff: float | None = None


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = inference(model, x)
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    return torch.cat([t.flatten() for t in out if isinstance(t, torch.Tensor)])


def materialize(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> Materialized:
    """A physically smaller copy of a masked model, checked against it.

    The copy removes every masked channel of the model's plan with Torch-Pruning, carries
    the unstructured masks over, and must give the masked model's outputs on random
    inputs (``allclose`` with ``rtol``/``atol``, atol scaled by the output's magnitude),
    computed with TF32 off and cuDNN deterministic (:func:`autoprune._backends.exact_math`),
    so the verdict is the same on every device.
    If any step fails, the masked model comes back with ``physical=False`` and a reason:
    never a silently wrong model.

    >>> import torch
    >>> from autoprune.models import create_model
    >>> net = create_model("resnet10", num_classes=10, input_shape=(1, 8, 8), width=8)
    >>> x = torch.randn(1, 1, 8, 8)
    >>> _ = filter_prune(net, 0.5, x)
    >>> result = materialize(net, x)
    >>> result.physical, result.model.conv1.out_channels
    (True, 4)
    """
    _require_input(example_input, "materialize")
    plan = get_plan(model)
    pending = {r: g for r, g in plan.groups.items() if not g.physical}
    if not pending:
        return Materialized(
            model,
            physical=bool(plan.groups),
            reason=None if plan.groups else "no structured pruning to materialize",
        )
    phys = copy.deepcopy(model)
    masking.remove_norm_hooks(phys)
    weight_masks = list(masking.get_masks(phys, "weights"))
    try:
        graph = StructureGraph(phys, example_input)
        removals = {}
        for root, entry in pending.items():
            if root not in graph.by_root:
                raise PruningError(f"group {root} is not in the traced model")
            pos = {orig: j for j, orig in enumerate(entry.in_tensors)}
            removals[root] = [pos[i] for i in entry.removed if i in pos]
        graph.remove(removals)
    except (PruningError, ModelError) as exc:
        return Materialized(model, physical=False, reason=str(exc))
    except Exception as exc:  # torch-pruning may fail on unusual graphs
        return Materialized(
            model, physical=False, reason=f"torch-pruning failed ({type(exc).__name__}: {exc})"
        )
    masking.clear_masks(phys)
    masking.masks_from_zeros(phys, [n for n in weight_masks if _has_param(phys, n)])
    new_plan = Plan.from_dict(plan.to_dict())
    for root in pending:
        new_plan.groups[root].materialized = list(new_plan.groups[root].removed)
    set_plan(phys, new_plan)
    diff = None
    if verify:
        gen = torch.Generator().manual_seed(0)
        shape = (max(2, example_input.shape[0]), *example_input.shape[1:])
        x = torch.randn(shape, generator=gen).to(example_input.device, example_input.dtype)
        try:
            with exact_math():  # TF32 or cuDNN's choice of algorithm must not decide
                ref, out = _outputs(model, x), _outputs(phys, x)
        except Exception as exc:
            return Materialized(
                model,
                physical=False,
                reason=f"the physical model fails to run ({type(exc).__name__}: {exc})",
            )
        if ref.shape != out.shape:
            return Materialized(
                model,
                physical=False,
                reason=f"physical output shape {tuple(out.shape)} != masked {tuple(ref.shape)}",
            )
        diff = float((ref - out).abs().max()) if ref.numel() else 0.0
        scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
        if not torch.allclose(out, ref, rtol=rtol, atol=atol * scale):
            return Materialized(
                model,
                physical=False,
                max_abs_diff=diff,
                reason=f"physical and masked outputs differ (max |diff| {diff:.3g})",
            )
    return Materialized(phys, physical=True, max_abs_diff=diff)


def _has_param(model: nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True


def _adopt(model: nn.Module, other: nn.Module) -> None:
    """Make ``model`` (same class) take over ``other``'s state, in place."""
    model.__dict__.clear()
    model.__dict__.update(other.__dict__)


def apply_plan(model: nn.Module, plan: Plan, example_input: torch.Tensor) -> nn.Module:
    """Rebuild a plan's structure on a fresh copy of the original architecture, in place.

    Masks the plan's removed channels by their recorded indices (no criterion is
    consulted) and, where the plan's channels are physically gone, makes the model
    physical, so that a ``state_dict`` saved from the compressed model loads into it.
    Unstructured and block entries need nothing here: their zeros are in the weights.

    >>> import torch
    >>> from autoprune.models import create_model
    >>> x = torch.randn(1, 1, 8, 8)
    >>> net = create_model("small_cnn", 10, (1, 8, 8), width=8)
    >>> plan = filter_prune(net, 0.5, x, physical=True)
    >>> fresh = apply_plan(create_model("small_cnn", 10, (1, 8, 8), width=8), get_plan(net), x)
    >>> fresh.load_state_dict(net.state_dict())
    <All keys matched successfully>
    """
    if not plan.groups:
        set_plan(model, Plan.from_dict(plan.to_dict()))
        return model
    graph = StructureGraph(model, _require_input(example_input, "apply_plan"))
    masked = Plan.from_dict(plan.to_dict())
    for root, entry in masked.groups.items():
        group = graph.by_root.get(root)
        if group is None or group.size != entry.total:
            raise PruningError(
                f"plan group {root} ({entry.total} channels) does not match this model; "
                "rebuild from the original architecture"
            )
        graph.mask(model, group, entry.removed)
        entry.materialized = []
    set_plan(model, masked)
    if any(g.materialized for g in plan.groups.values()):
        result = materialize(model, example_input)
        if not result.physical:
            raise PruningError(f"cannot rebuild the physical model: {result.reason}")
        _adopt(model, result.model)
    return model

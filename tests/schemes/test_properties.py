"""Properties of the operators, over sparsities hypothesis draws: exact counts, plans that
change nothing when applied again, plans that survive JSON."""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoprune.models import create_model
from autoprune.plan import Plan, get_plan
from autoprune.schemes import BlockPrune, FilterPrune, NeuronPrune, Prune
from autoprune.schemes.base import count_to_remove

SPARSITY = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
FEW = settings(max_examples=25, deadline=None)
X = torch.randn(1, 1, 8, 8)


def cnn():
    torch.manual_seed(0)
    return create_model("small_cnn", 10, (1, 8, 8), width=8).eval()


def mlp():
    torch.manual_seed(0)
    return create_model("mlp", 10, (1, 8, 8), hidden=(24, 12)).eval()


@FEW
@given(SPARSITY)
def test_unstructured_pruning_removes_exactly_its_share_of_every_layer(s):
    model = cnn()
    plan = Prune(s).apply(model, X)
    for entry in plan.layers:
        weight = model.get_submodule(entry.layer).weight
        assert int((weight == 0).sum()) == round(s * weight.numel()) == entry.removed


@FEW
@given(SPARSITY, st.sampled_from([FilterPrune, NeuronPrune]))
def test_structured_pruning_removes_exact_channel_counts(s, op):
    model = cnn() if op is FilterPrune else mlp()
    plan = op(s, round_to=1).apply(model, X)
    assert plan.groups
    for group in plan.groups.values():
        assert len(group.removed) == count_to_remove(s, group.total)


@FEW
@given(SPARSITY, st.sampled_from([Prune, FilterPrune, NeuronPrune, BlockPrune]))
def test_applying_a_scheme_twice_changes_nothing(s, op):
    model = mlp() if op in (NeuronPrune, BlockPrune) else cnn()
    scheme = op(s, block=(4, 4)) if op is BlockPrune else op(s)
    scheme.apply(model, X)
    once = copy.deepcopy(model.state_dict())
    first = get_plan(model).to_dict()
    scheme.apply(model, X)
    assert get_plan(model).to_dict() == first
    again = model.state_dict()
    assert all(torch.equal(once[k], again[k]) for k in once)


@FEW
@given(SPARSITY, st.sampled_from([Prune, FilterPrune, NeuronPrune]), st.booleans())
def test_a_plan_survives_json(s, op, physical):
    model = mlp() if op is NeuronPrune else cnn()
    scheme = op(s) if op is Prune else op(s, physical=physical)
    scheme.apply(model, X)
    plan = get_plan(model)
    back = Plan.from_json(plan.to_json())
    assert back.to_dict() == plan.to_dict()
    assert Plan.from_json(back.to_json(indent=2)).to_json() == plan.to_json()

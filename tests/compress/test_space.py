"""The search space: parameters to per-unit sparsities, snapped to the channel multiples."""

import copy
import random

import pytest
import torch

import autoprune as ap
from autoprune.compress.bounds import Bounds, build_units
from autoprune.compress.space import SearchSpace, Unit
from autoprune.plan import get_plan


def test_levels_map_into_each_units_range():
    space = SearchSpace([Unit("a", 16, 0.0, 0.8), Unit("b", 32, 0.2, 0.6)], mode="uniform")
    assert space.from_params({"level": 0.5}) == {"a": 0.4, "b": 0.4}
    assert space.from_params({"level": 1.0}) == {"a": 0.8, "b": 0.6}


@pytest.mark.parametrize("step", [8, 16])
def test_units_snap_to_the_multiples_the_scheme_keeps(step):
    torch.manual_seed(0)
    model = ap.create_model("resnet10", 10, (1, 28, 28), width=16).eval()
    x = torch.randn(1, 1, 28, 28)
    scheme = ap.FilterPrune(round_to=step)
    units = build_units(scheme, model, x, Bounds.parse(None))
    assert {u.step for u in units} == {step}
    space = SearchSpace(units)
    rng = random.Random(0)
    for _ in range(5):
        params = {"level": rng.random()}
        params |= {space._key(i): rng.uniform(-0.35, 0.35) for i in range(len(units))}
        sparsities = space.from_params(params)
        for u in units:  # every proposed sparsity keeps a whole multiple, in range
            kept = round(u.size * (1 - sparsities[u.name]), 6)
            assert kept % step == 0 and kept >= step
            assert u.low - 1e-9 <= sparsities[u.name] <= u.high + 1e-9
        pruned = copy.deepcopy(model)
        scheme.with_sparsities(sparsities).apply(pruned, x)
        for root, group in get_plan(pruned).groups.items():  # and the scheme keeps exactly that
            assert group.total - len(group.removed) == round(group.total * (1 - sparsities[root]))


def test_a_unit_smaller_than_one_multiple_is_kept_whole():
    assert Unit("tiny", 6, 0.0, 0.9, step=8).snap(0.7) == 0.0
    # the nearest multiple inside the range wins over a nearer one outside it
    assert Unit("c", 64, 0.4, 0.9, step=32).snap(0.3) == 0.5

"""The allocation priors of the preparation (no training)."""

from types import SimpleNamespace

import torch

import autoprune as ap
from autoprune.compress.bounds import Bounds, build_units
from autoprune.compress.preparation import global_prior


def test_the_global_channel_prior_prunes_the_group_with_the_weakest_channels_first():
    torch.manual_seed(0)
    model = ap.create_model("resnet10", 10, (1, 16, 16), width=8).eval()
    x = torch.randn(2, 1, 16, 16)
    scheme = ap.FilterPrune()
    units = build_units(scheme, model, x, Bounds.parse(None))
    weak = units[-1]  # three quarters of its channels all but zero
    conv = model.get_submodule(weak.layer)
    with torch.no_grad():
        conv.weight[: 3 * conv.out_channels // 4] *= 1e-3
    prior = global_prior(SimpleNamespace(original=model, scheme=scheme, example_input=x), units)
    assert set(prior) == {u.name for u in units}
    for table in prior.values():
        assert table[0] == 0.0 and all(b >= a for a, b in zip(table, table[1:]))
    others = [prior[u.name][5] for u in units if u is not weak]
    assert prior[weak.name][5] > max(others)  # at level 0.25 the weak group goes first
    # a level's mean over units stays near the uniform position: one global ranking
    assert 0.1 < sum(t[10] for t in prior.values()) / len(prior) < 0.9

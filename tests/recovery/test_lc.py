import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.plan import get_plan
from autoprune.recovery import LC
from autoprune.schemes import FilterPrune, Prune


def test_lc_pulls_w_to_theta_and_ends_exactly_compressed(trained):
    model, loaders, x = trained
    lc = LC(steps=6, mu_multiplier=3.0, finetune_epochs=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = lc.recover(model, Prune(0.8), loaders, x)
    distances = [h["distance"] for h in lc.history]
    assert len(distances) == 6
    assert distances[-1] < 0.5 * distances[0]
    mus = [h["mu"] for h in lc.history]
    assert all(b == pytest.approx(a * 3.0) for a, b in zip(mus, mus[1:]))
    for entry in get_plan(out).layers:
        w = out.get_submodule(entry.layer).weight
        assert int((w == 0).sum()) == round(0.8 * w.numel())
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_lc_structured_ends_physical(trained):
    model, loaders, x = trained
    lc = LC(steps=4, mu_multiplier=4.0, finetune_epochs=0)
    out = lc.recover(model, FilterPrune(0.5), loaders, x)
    assert get_plan(out).physical
    assert out.conv1.out_channels == 4
    assert lc.history[-1]["distance"] < lc.history[0]["distance"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "lc.steps: expected a positive integer"),
        ({"mu_init": -1}, "lc.mu_init: expected a positive number"),
        ({"mu_multiplier": 0.5}, "lc.mu_multiplier: expected a number >= 1"),
        ({"lr": 0}, "lc.lr: expected a positive number"),
    ],
)
def test_lc_arguments_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LC(**kwargs)
    LC()  # and the defaults work

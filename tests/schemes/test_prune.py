import pytest
import torch

from autoprune.errors import ConfigError, PruningError
from autoprune.plan import get_plan
from autoprune.schemes import Prune, prune


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


@pytest.mark.parametrize("s", [0.0, 0.1, 0.37, 0.5, 0.9, 0.99])
def test_achieved_sparsity_is_exact(tiny_mlp, s):
    plan = prune(tiny_mlp, s)
    for name in ("1", "3"):
        w = tiny_mlp.get_submodule(name).weight
        assert zeros(w) == round(s * w.numel())
        entry = next(e for e in plan.layers if e.layer == name)
        assert entry.removed == zeros(w) and entry.total == w.numel()
        assert entry.sparsity == zeros(w) / w.numel()


def test_output_layer_is_left_alone_unless_asked(tiny_mlp):
    prune(tiny_mlp, 0.5)
    assert zeros(tiny_mlp[5].weight) == 0
    prune(tiny_mlp, 0.5, include_output=True)
    assert zeros(tiny_mlp[5].weight) == 12


def test_pruning_twice_does_not_compound(tiny_mlp):
    prune(tiny_mlp, 0.5)
    first = tiny_mlp[1].weight.clone()
    prune(tiny_mlp, 0.5)
    assert torch.equal(first, tiny_mlp[1].weight)
    prune(tiny_mlp, 0.75)
    assert zeros(tiny_mlp[1].weight) == round(0.75 * 16 * 12)
    # the earlier zeros are kept: the new mask contains the old one
    assert torch.all(tiny_mlp[1].weight[first == 0] == 0)


def test_random_criterion_is_seeded_and_non_compounding(tiny_mlp):
    import copy

    a, b = copy.deepcopy(tiny_mlp), copy.deepcopy(tiny_mlp)
    Prune(0.5, criterion="random", seed=1).apply(a)
    Prune(0.5, criterion="random", seed=1).apply(b)
    assert torch.equal(a[1].weight, b[1].weight)
    Prune(0.5, criterion="random", seed=2).apply(a)  # another draw, same quota
    assert zeros(a[1].weight) == 96


def test_magnitude_removes_smallest(tiny_mlp):
    w = tiny_mlp[1].weight.detach().abs().clone().flatten()
    prune(tiny_mlp, 0.25)
    removed = tiny_mlp[1].weight.detach().flatten() == 0
    assert w[removed].max() <= w[~removed].min()


def test_global_scope_ranks_across_layers(tiny_mlp):
    all_w = torch.cat([tiny_mlp[i].weight.detach().abs().flatten() for i in (1, 3)])
    prune(tiny_mlp, 0.6, scope="global")
    total = zeros(tiny_mlp[1].weight) + zeros(tiny_mlp[3].weight)
    assert total == round(0.6 * all_w.numel())
    threshold = all_w.sort().values[total - 1]
    for i in (1, 3):
        w = tiny_mlp[i].weight.detach()
        assert torch.all(w[w != 0].abs() >= threshold)


def test_per_layer_mapping_and_patterns(tiny_mlp):
    plan = prune(tiny_mlp, {"1": 0.25, "3": 0.5})
    assert plan.sparsities() == {"1": 0.25, "3": 0.5}
    plan = Prune({"*": 0.8}).apply(tiny_mlp)
    # exact: round(0.8 * 192) / 192 and round(0.8 * 96) / 96
    assert plan.sparsities() == {"1": 154 / 192, "3": 77 / 96}


def test_selection_by_type_and_name(digits_data):
    from autoprune.models import create_model

    net = create_model("small_cnn", 10, (1, 8, 8), width=4)
    x = digits_data.example_input()
    plan = Prune(0.5, types="conv", exclude="conv1").apply(net, x)
    assert sorted(plan.sparsities()) == ["conv2", "conv3"]
    plan = Prune(0.5, include="fc").apply(net, x)
    assert list(plan.sparsities()) == ["fc"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 1.5}, r"sparsity: expected a number in \[0, 1\), got 1.5"),
        ({"sparsity": -0.1}, r"sparsity: expected a number in \[0, 1\), got -0.1"),
        ({"sparsity": "half"}, r"sparsity: expected a number in \[0, 1\), got 'half'"),
        ({"sparsity": {"1": 1.0}}, r"sparsity\['1'\]: expected a number in \[0, 1\), got 1"),
        ({"sparsity": 0.5, "criterion": "l3"}, r"unknown weight criterion 'l3'"),
        ({"sparsity": 0.5, "scope": "net"}, r"scope: expected 'layer' or 'global'"),
        ({"sparsity": {"1": 0.5}, "scope": "global"}, r"global ranking takes one number"),
        ({"sparsity": 0.5, "types": "lstm"}, r"types: unknown module type 'lstm'"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Prune(**kwargs)


def test_unknown_layer_in_mapping_and_empty_selection(tiny_mlp):
    with pytest.raises(ConfigError, match=r"sparsity\['fc9'\]: no prunable layer matches"):
        prune(tiny_mlp, {"fc9": 0.5})
    with pytest.raises(PruningError, match="no layer of the model is selected"):
        prune(tiny_mlp, 0.5, include="nothing*")


def test_plan_accumulates_on_the_model(tiny_mlp):
    prune(tiny_mlp, 0.5)
    prune(tiny_mlp, 0.7, include="3")
    assert get_plan(tiny_mlp).sparsities() == {"1": 0.5, "3": round(0.7 * 96) / 96}

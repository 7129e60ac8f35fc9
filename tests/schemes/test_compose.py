import torch

from autoprune.models import create_model
from autoprune.plan import get_plan
from autoprune.schemes import BlockPrune, Compose, FilterPrune, NeuronPrune, Prune


def small_cnn():
    torch.manual_seed(0)
    return create_model("small_cnn", 10, (1, 8, 8), width=8)


X = torch.randn(1, 1, 8, 8)


def test_filters_physically_then_weights_on_what_is_left():
    model = small_cnn()
    plan = Compose([FilterPrune(0.5, physical=True), Prune(0.8)]).apply(model, X)
    assert model.conv2.out_channels == 8
    w = model.conv2.weight
    assert int((w == 0).sum()) == round(0.8 * w.numel())
    assert {r["op"] for r in plan.rows()} == {"filter_prune", "prune"}


def test_masked_filters_then_weights_count_only_what_is_left():
    """Masked and physical filter pruning leave prune the same pool of weights."""
    masked, physical = small_cnn(), small_cnn()
    Compose([FilterPrune(0.5), Prune(0.8)]).apply(masked, X)
    Compose([FilterPrune(0.5, physical=True), Prune(0.8)]).apply(physical, X)
    a = get_plan(masked).layers
    b = get_plan(physical).layers
    assert [(e.layer, e.total, e.removed) for e in a] == [(e.layer, e.total, e.removed) for e in b]
    nonzero = lambda m: sum(int((p != 0).sum()) for p in m.parameters())  # noqa: E731
    assert nonzero(masked) == nonzero(physical)


def test_all_four_operators_compose():
    model = small_cnn()
    scheme = Compose(
        [
            FilterPrune(0.25),
            NeuronPrune(0.5),
            BlockPrune(0.5, block=(2, 2)),
            Prune(0.5, types="conv"),
        ]
    )
    plan = scheme.apply(model, X)
    assert {r["op"] for r in plan.rows()} == {
        "filter_prune",
        "neuron_prune",
        "block_prune",
        "prune",
    }
    assert "Compose" in repr(scheme)
    assert scheme.config()["schemes"][0]["filter_prune"]["sparsity"] == 0.25

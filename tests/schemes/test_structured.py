import copy

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError, ModelError
from autoprune.models import create_model
from autoprune.plan import get_plan
from autoprune.schemes import (
    Compose,
    FilterPrune,
    NeuronPrune,
    filter_prune,
    materialize,
    neuron_prune,
)
from autoprune.testing import randomize_norms


# -- small models with the couplings the contract must survive --------------------------
class TinyDense(nn.Module):
    """DenseNet-style: every layer reads the concatenation of all earlier outputs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList()
        c = 8
        for _ in range(3):
            self.layers.append(
                nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 6, 3, padding=1))
            )
            c += 6
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        x = torch.relu(self.norm(torch.cat(feats, 1)))
        return self.fc(x.mean((2, 3)))


class TinyGroupedSE(nn.Module):
    """Grouped conv (ResNeXt), depthwise conv and squeeze-excitation gating."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.bn_a = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn_b = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn_dw = nn.BatchNorm2d(16)
        self.se1 = nn.Conv2d(16, 4, 1)
        self.se2 = nn.Conv2d(4, 16, 1)
        self.c = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.bn_a(self.a(x)))
        x = torch.relu(self.bn_b(self.b(x)))
        x = nn.functional.silu(self.bn_dw(self.dw(x)))
        gate = torch.sigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        x = self.c(x * gate)
        return self.fc(x.mean((2, 3)))


class TinyConvNeXt(nn.Module):
    """LayerNorm over channels (channels-last), inverted bottleneck Linear, layer scale."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.pw1 = nn.Linear(8, 32)
        self.pw2 = nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.rand(8))
        self.head_norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(nn.functional.gelu(self.pw1(self.norm(y)))) * self.gamma
        x = x + y.permute(0, 3, 1, 2)
        return self.fc(self.head_norm(x.mean((2, 3))))


def _torchvision(name):
    return lambda: create_model(name, num_classes=10, input_shape=(3, 64, 64))


CONTRACT = {
    "mlp": (lambda: create_model("mlp", 10, (3, 16, 16), hidden=(64, 32)), (3, 16, 16)),
    "small_cnn": (lambda: create_model("small_cnn", 10, (1, 28, 28), width=8), (1, 28, 28)),
    "resnet10": (lambda: create_model("resnet10", 10, (3, 32, 32), width=8), (3, 32, 32)),
    "tiny_dense": (TinyDense, (3, 16, 16)),
    "tiny_grouped_se": (TinyGroupedSE, (3, 16, 16)),
    "tiny_convnext": (TinyConvNeXt, (3, 16, 16)),
    "resnet18": (_torchvision("resnet18"), (3, 64, 64)),
    "mobilenet_v2": (_torchvision("mobilenet_v2"), (3, 64, 64)),
    "vgg11_bn": (_torchvision("vgg11_bn"), (3, 64, 64)),
    "densenet121": (_torchvision("densenet121"), (3, 64, 64)),
    "efficientnet_b0": (_torchvision("efficientnet_b0"), (3, 64, 64)),
    "regnet_x_400mf": (_torchvision("regnet_x_400mf"), (3, 64, 64)),
    "convnext_tiny": (_torchvision("convnext_tiny"), (3, 64, 64)),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_physical_equals_masked(name):
    """The contract: removing channels gives exactly what masking them gives."""
    build, shape = CONTRACT[name]
    torch.manual_seed(0)
    model = randomize_norms(build())
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    op = NeuronPrune if name == "mlp" else FilterPrune
    with torch.no_grad():
        dense_out = model(x)
    op(0.5, criterion="random", seed=3).apply(model, x[:1])
    with torch.no_grad():
        masked_out = model(x)
    assert not torch.allclose(masked_out, dense_out, atol=1e-3)  # pruning did something
    result = materialize(model, x[:1])
    assert result.physical, result.reason
    physical = result.model.eval()
    with torch.no_grad():
        physical_out = physical(x)
    torch.testing.assert_close(physical_out, masked_out, rtol=1e-4, atol=1e-5)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in physical.parameters())
    assert after < before
    assert get_plan(physical).physical


def test_verification_catches_a_wrong_physical_model(monkeypatch):
    """If masking were not exact, materialize keeps the masked model and says why."""
    model = randomize_norms(TinyConvNeXt())
    x = torch.randn(1, 3, 16, 16)
    import autoprune._structure as structure

    monkeypatch.setattr(structure.masking, "set_norm_keep", lambda *a, **k: None)
    FilterPrune(0.5).apply(model, x)
    result = materialize(model, x)
    assert not result.physical
    assert "outputs differ" in result.reason
    assert result.model is model


def test_physical_mode_keeps_masked_model_when_it_cannot_verify(monkeypatch):
    import autoprune._structure as structure

    monkeypatch.setattr(structure.masking, "set_norm_keep", lambda *a, **k: None)
    model = randomize_norms(TinyConvNeXt())
    x = torch.randn(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="kept the masked model"):
        plan = FilterPrune(0.5, physical=True).apply(model, x)
    assert not plan.physical and plan.notes
    assert model.stem.out_channels == 8  # shapes unchanged


def resnet(width=8):
    torch.manual_seed(0)
    return create_model("resnet10", 10, (1, 16, 16), width=width)


X = torch.randn(1, 1, 16, 16)


@pytest.mark.parametrize("s", [0.1, 0.3, 0.5, 0.8])
def test_achieved_sparsity_is_exact_and_reported(s):
    model = resnet()
    plan = filter_prune(model, s, X, physical=True)
    for root, g in plan.groups.items():
        assert len(g.removed) == round(s * g.total)
        assert g.sparsity == len(g.removed) / g.total
        assert model.get_submodule(root).out_channels == g.total - len(g.removed)


def test_residual_coupling_removes_together():
    model = resnet()
    plan = filter_prune(model, 0.5, X, physical=True)
    stem = plan.groups["conv1"]
    assert set(stem.layers) == {"conv1", "layer1.0.conv2"}  # identity shortcut couples them
    assert model.conv1.out_channels == model.layer1[0].conv2.out_channels == 4
    assert model.layer2[0].shortcut[0].in_channels == 4


def test_filter_pruning_twice_does_not_compound_masked_or_physical():
    model = resnet()
    filter_prune(model, 0.5, X)
    first = {r: list(g.removed) for r, g in get_plan(model).groups.items()}
    filter_prune(model, 0.5, X, criterion="random")
    assert {r: g.removed for r, g in get_plan(model).groups.items()} == first
    filter_prune(model, 0.5, X, physical=True)
    assert model.conv1.out_channels == 4
    filter_prune(model, 0.5, X, physical=True)
    assert model.conv1.out_channels == 4  # 50% of the original 8, not of 4
    filter_prune(model, 0.75, X, physical=True)
    assert model.conv1.out_channels == 2
    assert len(get_plan(model).groups["conv1"].removed) == 6


def test_per_layer_mapping_uses_any_layer_of_a_group():
    model = resnet()
    plan = filter_prune(model, {"layer1.0.conv2": 0.5, "layer4.*": 0.25}, X)
    assert plan.groups["conv1"].sparsity == 0.5
    assert plan.groups["layer4.0.conv1"].sparsity == 0.25
    assert plan.groups["layer2.0.conv1"].sparsity == 0.0
    with pytest.raises(ConfigError, match="are coupled"):
        filter_prune(resnet(), {"conv1": 0.5, "layer1.0.conv2": 0.25}, X)


def test_exclusion_skips_whole_group():
    model = resnet()
    plan = filter_prune(model, 0.5, X, exclude=["layer1.0.conv2"])
    assert "conv1" not in plan.groups
    assert "layer1.0.conv1" in plan.groups


@pytest.mark.parametrize("criterion", ["l1", "l2", "linf", "random", "fpgm", "bn_scale"])
def test_every_criterion_runs(criterion):
    model = resnet()
    plan = filter_prune(model, 0.5, X, criterion=criterion, physical=True)
    assert plan.physical and model.conv1.out_channels == 4


def test_bn_scale_removes_smallest_gamma():
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)
    )
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.9, 0.1, 0.5, 0.05, 2.0, 0.3]))
    plan = filter_prune(model, 0.5, torch.randn(1, 1, 6, 6), criterion="bn_scale")
    assert plan.groups["0"].removed == [1, 3, 5]


def test_l1_removes_smallest_filters():
    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([3.0, -0.5, 1.0, 0.1]).view(4, 1, 1, 1))
    plan = filter_prune(model, 0.5, torch.randn(1, 1, 2, 2))
    assert plan.groups["0"].removed == [1, 3]


def test_grouped_conv_removes_the_same_positions_in_each_group():
    model = randomize_norms(TinyGroupedSE())
    x = torch.randn(1, 3, 8, 8)
    plan = filter_prune(model, 0.5, x, physical=True)
    removed = plan.groups["a"].removed
    assert len(removed) == 8
    blocks = [sorted(i % 4 for i in removed if i // 4 == b) for b in range(4)]
    assert all(b == blocks[0] for b in blocks)
    assert model.b.in_channels == 8 and model.b.groups == 4


def test_neuron_prune_mlp_physical():
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8), hidden=(32, 16))
    plan = neuron_prune(model, {"fc1": 0.5, "fc2": 0.25}, torch.randn(1, 1, 8, 8), physical=True)
    assert (model.fc1.out_features, model.fc2.in_features, model.fc2.out_features) == (16, 16, 12)
    assert model.classifier.in_features == 12 and model.classifier.out_features == 10
    assert plan.physical


def test_flatten_to_linear_coupling():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, (1, 8, 8), width=4)
    filter_prune(model, 0.5, torch.randn(1, 1, 8, 8), physical=True)
    assert model.conv3.out_channels == 4
    assert model.fc.in_features == 4 * 16  # 16 inputs per channel after the 4x4 flatten


def test_structured_needs_an_example_input():
    with pytest.raises(ConfigError, match="example_input: filter_prune traces the model"):
        FilterPrune(0.5).apply(resnet())


def test_model_that_fails_on_the_input_is_a_clear_error():
    with pytest.raises(ModelError, match=r"fails on an input of shape \(1, 3, 8, 8\)"):
        filter_prune(resnet(), 0.5, torch.randn(1, 3, 8, 8))


def test_masked_weights_are_what_removal_leaves():
    """Masked nonzero parameters equal the physical model's parameter count."""
    model = randomize_norms(resnet())  # no BN bias left at exactly 0
    filter_prune(model, 0.5, X)
    physical = materialize(model, X).model
    masked_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    physical_params = sum(p.numel() for p in physical.parameters())
    assert masked_nonzero == physical_params


def test_materialize_carries_unstructured_masks():
    from autoprune.schemes import prune
    from autoprune.training import train

    model = resnet()
    prune(model, 0.5, example_input=X)
    filter_prune(model, 0.5, X)
    physical = materialize(model, X).model
    w = physical.layer2[0].conv1.weight
    zeros_before = int((w == 0).sum())
    data = [(torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))) for _ in range(3)]
    train(physical, data, max_steps=3, lr=0.1)
    assert int((physical.layer2[0].conv1.weight == 0).sum()) >= zeros_before
    assert copy.deepcopy(physical)(X).shape == (1, 10)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("small_cnn", (1, 16, 16)),
        ("resnet10", (1, 16, 16)),
        ("resnet18", (3, 32, 32)),
        ("mobilenet_v2", (3, 32, 32)),
    ],
)
def test_round_to_keeps_multiples_in_every_group_and_stays_exact(name, shape):
    torch.manual_seed(0)
    options = {"width": 16} if name in ("small_cnn", "resnet10") else {}
    net = create_model(name, num_classes=10, input_shape=shape, **options).eval()
    randomize_norms(net)
    x = torch.randn(2, *shape)
    plan = filter_prune(net, 0.3, x, round_to=8)
    for g in plan.groups.values():
        kept = g.total - len(g.removed)
        assert kept % 8 == 0 or kept == g.total, (g.root, g.total, kept)
    assert any(g.removed for g in plan.groups.values())
    made = materialize(net, x)
    assert made.physical, made.reason  # masked == physical still holds


def test_round_to_is_checked():
    for bad in (0, "eight", 2.5):
        with pytest.raises(ConfigError, match=r"filter_prune.round_to: expected 'auto' or an int"):
            FilterPrune(0.5, round_to=bad)


def test_auto_round_to_is_exact_alone_and_the_devices_multiple_in_a_timed_run():
    from autoprune.schemes.structured import AUTO_ROUND_TO

    auto = FilterPrune(0.3)
    assert auto.round_to == "auto" and "round_to" not in auto.config()
    assert auto.channel_step(64) == 1  # applied directly: exactly the sparsity asked
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert AUTO_ROUND_TO == {"cuda": 32, "cpu": 16}
    timed = auto.for_run(cuda, timed=True)
    assert [timed.channel_step(n) for n in (16, 32, 64, 128, 2048)] == [4, 8, 16, 32, 32]
    assert auto.for_run(cuda, timed=False).channel_step(2048) == 1  # counts gain nothing
    assert auto.for_run(cpu, timed=True).channel_step(2048) == 16
    assert auto.channel_step(2048) == 1  # resolved on a copy
    fixed = FilterPrune(0.5, round_to=8)
    assert fixed.for_run(cuda, timed=True) is fixed and fixed.channel_step(2048) == 8
    both = Compose([NeuronPrune(), FilterPrune()]).for_run(cuda, timed=True)
    assert [s.channel_step(256) for s in both.schemes] == [32, 32]
    # a timed run on the CPU: every group keeps a multiple of its step, and stays exact
    torch.manual_seed(0)
    net = create_model("resnet10", num_classes=10, input_shape=(1, 16, 16), width=16).eval()
    randomize_norms(net)
    x = torch.randn(2, 1, 16, 16)
    plan = auto.for_run(cpu, timed=True).apply(net, x)
    for g in plan.groups.values():
        assert (g.total - len(g.removed)) % min(16, g.total // 4) == 0, (g.root, g.total)
    assert materialize(net, x).physical

import pytest
import torch

from autoprune import metrics
from autoprune.errors import ConfigError, ModelError
from autoprune.models import create_model, load_checkpoint
from autoprune.schemes import FilterPrune

BUILTINS = ["mlp", "small_cnn", "resnet10", "vgg_small", "mobilenet_small", "densenet_small"]


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_builtins_run_on_small_images(name, shape):
    model = create_model(name, num_classes=7, input_shape=shape).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_resnet10_has_ten_weight_layers_and_width():
    model = create_model("resnet10", input_shape=(1, 28, 28), width=16)
    convs = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and "shortcut" not in n
    ]
    assert len(convs) == 9  # stem + 4 blocks x 2, plus the fc: 10 layers
    assert model.layer4[0].conv2.out_channels == 128


@pytest.mark.parametrize("name", ["vgg_small", "mobilenet_small", "densenet_small", "resnet10"])
def test_suite_architectures_prune_physically(name):
    """The suite's four shapes (plain + big classifier, depthwise inverted residuals,
    concatenation, residual) lose their channels for real under filter pruning."""
    model = create_model(name, input_shape=(1, 28, 28)).eval()
    x = torch.randn(2, 1, 28, 28)
    before_params = sum(p.numel() for p in model.parameters())
    before_macs = metrics.count_macs(model, x[:1])
    plan = FilterPrune(0.5, physical=True).apply(model, x[:1])
    assert plan.physical
    assert sum(p.numel() for p in model.parameters()) < 0.8 * before_params
    assert metrics.count_macs(model, x[:1]) < 0.4 * before_macs
    assert model(x).shape == (2, 10)


def test_suite_architectures_have_their_shape():
    vgg = create_model("vgg_small", input_shape=(1, 28, 28), width=8, hidden=256)
    linears = [m for m in vgg.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [256, 256, 10]
    assert sum(m.weight.numel() for m in linears) > 0.5 * sum(p.numel() for p in vgg.parameters())
    mobile = create_model("mobilenet_small", input_shape=(1, 28, 28))
    depthwise = [
        m
        for m in mobile.modules()
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    ]
    assert len(depthwise) >= 7
    dense = create_model("densenet_small", input_shape=(1, 28, 28), growth=6, layers=[2, 3])
    x = torch.randn(1, 1, 28, 28)
    assert dense.eval()(x).shape == (1, 10)
    with pytest.raises(ConfigError, match="layers"):
        create_model("densenet_small", input_shape=(1, 28, 28), layers=[])
    with pytest.raises(ConfigError, match="hidden"):
        create_model("vgg_small", input_shape=(1, 28, 28), hidden=0)


def test_torchvision_by_name_without_download():
    model = create_model("resnet18", num_classes=5, input_shape=(3, 32, 32)).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ConfigError, match="takes 3-channel images"):
        create_model("resnet18", input_shape=(1, 28, 28))


def test_unknown_model_and_bad_options():
    with pytest.raises(ConfigError, match="unknown model 'resnet01'"):
        create_model("resnet01")
    with pytest.raises(ConfigError, match="bad options for 'mlp'"):
        create_model("mlp", input_shape=(1, 8, 8), depth=3)


def factory(classes: int = 3):
    return torch.nn.Linear(4, classes)


def test_user_factory():
    assert create_model("tests.test_models:factory", classes=2).out_features == 2


def test_checkpoint_round_trip_and_errors(tmp_path):
    a = create_model("small_cnn", input_shape=(1, 8, 8), width=4)
    b = create_model("small_cnn", input_shape=(1, 8, 8), width=4)
    torch.save({"state_dict": a.state_dict()}, tmp_path / "ck.pt")
    load_checkpoint(b, tmp_path / "ck.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_checkpoint(b, tmp_path / "none.pt")
    wide = create_model("small_cnn", input_shape=(1, 8, 8), width=8)
    with pytest.raises(ModelError, match="does not fit the model"):
        load_checkpoint(wide, tmp_path / "ck.pt")

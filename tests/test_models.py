import pytest
import torch

from autoprune.errors import ConfigError, ModelError
from autoprune.models import create_model, load_checkpoint


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "resnet10"])
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

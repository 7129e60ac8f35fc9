import pytest
import torch

from autoprune.data import digits
from autoprune.models import create_model
from autoprune.training import train


@pytest.fixture(scope="package")
def trained():
    """A small CNN trained on digits, its loaders and an example input."""
    data = digits(seed=0)
    loaders = data.loaders(batch_size=64, seed=0)
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, data.input_shape, width=8)
    train(model, loaders.train, epochs=3, seed=0)
    return model, loaders, data.example_input()

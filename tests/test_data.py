import os

import numpy as np
import pytest
import torch

from autoprune.data import Data, digits, from_arrays, image_folder, load_data, mnist, npz
from autoprune.errors import ConfigError, DataError


def test_digits_split_is_deterministic_and_disjoint():
    a, b = digits(seed=0), digits(seed=0)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    c = digits(seed=1)
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    # standardised with the training split's statistics
    x = a.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_loaders_are_seeded():
    data = digits()
    first = [next(iter(data.loaders(batch_size=16, seed=3).train))[1] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    with pytest.raises(ConfigError, match="batch_size: expected a positive integer"):
        data.loaders(batch_size=0)


def _write_npz(path, n=60, shape=(6, 6), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.integers(0, classes, size=n).astype(np.int64)
    np.savez_compressed(path, x=x, y=y)
    return x, y


def test_npz_train_and_test_files(tmp_path):
    _write_npz(tmp_path / "train.npz", n=100)
    _, yte = _write_npz(tmp_path / "test.npz", n=30, seed=1)
    data = npz(tmp_path / "train.npz", tmp_path / "test.npz", val_fraction=0.2)
    assert data.input_shape == (1, 6, 6)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 30)
    assert torch.equal(data.test.tensors[1], torch.as_tensor(yte))
    assert data.num_classes == 3


def test_npz_channels_last_and_three_channel_option(tmp_path):
    _write_npz(tmp_path / "rgb.npz", n=40, shape=(5, 5, 3))
    assert npz(tmp_path / "rgb.npz").input_shape == (3, 5, 5)
    _write_npz(tmp_path / "grey.npz", n=40)
    assert npz(tmp_path / "grey.npz", channels=3).input_shape == (3, 6, 6)


def test_missing_npz_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "train.npz"
    with pytest.raises(DataError, match=f"train: file not found: {missing}"):
        npz(missing)
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"lacks array\(s\) \['x', 'y'\]"):
        npz(tmp_path / "bad.npz")


def test_torchvision_root_is_never_downloaded(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        mnist(tmp_path / "absent")
    with pytest.raises(DataError, match="never downloads"):
        mnist(tmp_path)
    assert os.listdir(tmp_path) == [] or all(not f.endswith(".gz") for f in os.listdir(tmp_path))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        os.makedirs(tmp_path / cls)
        for i in range(10):
            arr = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    data = image_folder(tmp_path, image_size=8, val_fraction=0.2, test_fraction=0.2)
    assert data.num_classes == 2 and data.input_shape == (3, 8, 8)
    assert len(data.train) + len(data.val) + len(data.test) == 20
    x, y = next(iter(data.loaders(batch_size=4).train))
    assert x.shape == (4, 3, 8, 8)


def make_data() -> Data:
    """A user data function, referenced as tests.test_data:make_data."""
    x = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    return from_arrays(x, np.arange(40) % 2, name="user")


def test_callable_provider_and_unknown_name():
    assert load_data("tests.test_data:make_data").input_shape == (4,)
    with pytest.raises(ConfigError, match="unknown dataset 'digit' \\(did you mean 'digits'\\?\\)"):
        load_data("digit")
    with pytest.raises(ConfigError, match="bad options for 'digits'"):
        load_data("digits", colour=True)


def test_subset_and_example_input():
    data = digits().subset(train=100, val=20, test=30)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 20, 30)
    assert data.example_input(4).shape == (4, 1, 8, 8)

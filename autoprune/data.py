"""Data providers. Nothing is ever downloaded: a missing path is a clear error.

    >>> data = digits(seed=0)
    >>> data.input_shape, data.num_classes, len(data.train) + len(data.val) + len(data.test)
    ((1, 8, 8), 10, 1797)

Every provider returns a :class:`Data`: train, validation and test splits, the number of
classes and the shape of one input. ``data.loaders(batch_size)`` gives seeded loaders.

=================  =================================================================
name               source
=================  =================================================================
``digits``         scikit-learn's bundled 8x8 handwritten digits (the default)
``npz``            ``.npz`` files holding ``x`` and ``y`` (e.g. Fashion-MNIST)
``mnist``,         torchvision's MNIST / FashionMNIST / CIFAR10 from a local ``root``
``fashion_mnist``, (``download=False``)
``cifar10``
``image_folder``   a folder of ``class/image`` files, optionally split in
                   ``train/``, ``val/``, ``test/``
``pkg.mod:fn``     your function, returning a :class:`Data` or (train, val, test)
=================  =================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from . import _checks
from .errors import ConfigError, DataError
from .registry import Registry, import_callable

datasets = Registry("dataset")


def register_dataset(name: str | None = None) -> Callable[[Any], Any]:
    """Register a dataset provider ``fn(**options) -> Data`` under ``name``."""
    return datasets.register(name)


def list_datasets() -> list[str]:
    """The registered dataset names.

    >>> "digits" in list_datasets()
    True
    """
    return datasets.names()


class Batches(Protocol):
    """What a loader is to autoprune: ``(x, y)`` batches, and how many there are."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Loaders(NamedTuple):
    """Train, validation and test batches (DataLoaders, or any sized iterables of
    ``(x, y)``)."""

    train: Batches
    val: Batches
    test: Batches


@dataclass
class Data:
    """Train/val/test splits of a classification dataset.

    Attributes:
        train, val, test: map-style datasets of ``(input tensor, label)``.
        num_classes: number of classes.
        input_shape: shape of one input, e.g. ``(1, 28, 28)``.
        name: where it came from, for reports.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    name: str = "data"

    def loaders(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> Loaders:
        """Loaders for the three splits; the training one shuffles with a seeded generator.

        ``pin_memory`` puts batches in page-locked memory, so that copies to a GPU can
        overlap the computation (the training loops copy with ``non_blocking=True``)."""
        for param, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            _checks.positive_int(param, value)
        gen = torch.Generator().manual_seed(seed)
        pin = bool(pin_memory)
        return Loaders(
            DataLoader(
                self.train, batch_size=batch_size, shuffle=True, generator=gen, pin_memory=pin
            ),
            DataLoader(self.val, batch_size=eval_batch_size, pin_memory=pin),
            DataLoader(self.test, batch_size=eval_batch_size, pin_memory=pin),
        )

    def sizes(self) -> tuple[int, int, int]:
        """Samples in the train, validation and test splits."""
        return len(self.train), len(self.val), len(self.test)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A batch of real training inputs, for tracing and timing."""
        xs = [self.train[i][0] for i in range(min(batch_size, len(self.train)))]
        while len(xs) < batch_size:
            xs.extend(xs[: batch_size - len(xs)])
        return torch.stack(xs)

    def subset(
        self,
        train: int | None = None,
        val: int | None = None,
        test: int | None = None,
        seed: int = 0,
    ) -> Data:
        """A smaller copy: the first ``n`` of a seeded shuffle of each split."""
        gen = torch.Generator().manual_seed(seed)

        def cut(ds: Dataset, n: int | None) -> Dataset:
            if n is None or n >= len(ds):
                return ds
            return Subset(ds, torch.randperm(len(ds), generator=gen)[:n].tolist())

        return Data(
            cut(self.train, train),
            cut(self.val, val),
            cut(self.test, test),
            self.num_classes,
            self.input_shape,
            self.name,
        )


# -- arrays -----------------------------------------------------------------------------


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim in (2, 4):
        return x
    raise DataError(
        f"{what}: expected inputs of shape (N, H, W), (N, H, W, C), (N, C, H, W) "
        f"or (N, features), got {x.shape}"
    )


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    channels: int | None = None,
    scale: float | None = None,
    name: str = "arrays",
) -> Data:
    """Build :class:`Data` from arrays; standardised with the training split's statistics.

    Args:
        x_train, y_train: inputs ``(N, H, W)``, ``(N, H, W, C)``, ``(N, C, H, W)`` or
            ``(N, F)`` and integer labels.
        x_test, y_test: a separate test set; without one, ``test_fraction`` is held out.
        val_fraction: share of the training arrays held out for validation.
        channels: set to 3 to repeat grey images into 3 channels (torchvision models).
        scale: divide inputs by this first (default: 255 for uint8, else 1).
    """
    for param, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        _checks.number(param, value, 0, 1, low_open=True, high_open=True)
    if len(x_train) != len(y_train):
        raise DataError(f"{name}: {len(x_train)} inputs but {len(y_train)} labels")
    if scale is None:
        scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    if x_test is None:
        n_test = int(round(len(order) * test_fraction))
        test_idx, order = order[:n_test], order[n_test:]
        x_test, y_test = x_train[test_idx], y_train[test_idx]
    n_val = max(1, int(round(len(order) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]

    def prep(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(_to_nchw(np.asarray(x), name).astype(np.float32) / scale)
        if channels == 3 and t.dim() == 4 and t.shape[1] == 1:
            t = t.repeat(1, 3, 1, 1)
        return t

    xt = prep(x_train[train_idx])
    dims = [0, 2, 3] if xt.dim() == 4 else [0]
    mean = xt.mean(dim=dims, keepdim=True)[0:1]
    std = xt.std(dim=dims, keepdim=True)[0:1].clamp_min(1e-6)

    def split(x: torch.Tensor, y: np.ndarray) -> TensorDataset:
        return TensorDataset((x - mean) / std, torch.as_tensor(np.asarray(y), dtype=torch.long))

    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_test)])
    if y_all.size and (y_all.min() < 0 or not np.issubdtype(y_all.dtype, np.integer)):
        raise DataError(f"{name}: labels must be non-negative integers")
    return Data(
        train=split(xt, y_train[train_idx]),
        val=split(prep(x_train[val_idx]), y_train[val_idx]),
        test=split(prep(x_test), y_test),
        num_classes=int(y_all.max()) + 1,
        input_shape=tuple(xt.shape[1:]),
        name=name,
    )


# -- providers --------------------------------------------------------------------------


@datasets.register("digits")
def digits(
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    channels: int | None = None,
) -> Data:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), split by ``seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)  # (N, 8, 8), values 0..16
    return from_arrays(
        x,
        bunch.target.astype(np.int64),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        scale=16.0,
        channels=channels,
        name="digits",
    )


def _read_npz(path: str | os.PathLike, param: str) -> tuple[np.ndarray, np.ndarray]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{param}: file not found: {path} (expected an .npz holding 'x' and 'y')")
    try:
        with np.load(path) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise DataError(f"{param}: {path} lacks array(s) {missing}; it has {f.files}")
            return f["x"], f["y"]
    except DataError:
        raise
    except Exception:
        raise DataError(
            f"{param}: {path} is not an .npz archive; write one with numpy.savez(path, x=..., "
            "y=...)"
        ) from None


@datasets.register("npz")
def npz(
    train: str | os.PathLike,
    test: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    channels: int | None = None,
    limit: int | None = None,
) -> Data:
    """Arrays ``x`` and ``y`` from ``.npz`` files (the form of ``fashion-mnist/train.npz``).

    ``limit`` keeps the first ``limit`` training examples (for quick runs).
    """
    x, y = _read_npz(train, "train")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x_test = y_test = None
    if test is not None:
        x_test, y_test = _read_npz(test, "test")
    for param, labels, inputs in (("train", y, x), ("test", y_test, x_test)):
        if labels is None:
            continue
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{param}: 'y' must hold one integer class label per example, got an array "
                f"of {labels.dtype} with shape {labels.shape} (one-hot labels: y.argmax(1))"
            )
        if len(labels) != len(inputs):
            raise DataError(f"{param}: 'x' has {len(inputs)} examples but 'y' {len(labels)}")
    return from_arrays(
        x,
        y,
        x_test,
        y_test,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        channels=channels,
        name=os.path.basename(os.fspath(train)),
    )


def _torchvision(
    cls_name: str, root: str | os.PathLike, val_fraction: float, seed: int, channels: int | None
) -> Data:
    import torchvision

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"root: directory not found: {root}")
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(root, train=True, download=False)
        test = cls(root, train=False, download=False)
    except RuntimeError as exc:
        raise DataError(
            f"root: no {cls_name} under {root} ({str(exc).splitlines()[0]}); "
            "autoprune never downloads, place the files there first"
        ) from None

    def arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        return data, np.asarray(ds.targets, dtype=np.int64)

    (xtr, ytr), (xte, yte) = arrays(train), arrays(test)
    return from_arrays(
        xtr, ytr, xte, yte, val_fraction=val_fraction, seed=seed, channels=channels, name=cls_name
    )


@datasets.register("mnist")
def mnist(
    root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0, channels: int | None = None
) -> Data:
    """torchvision MNIST from ``root`` (never downloaded)."""
    return _torchvision("MNIST", root, val_fraction, seed, channels)


@datasets.register("fashion_mnist")
def fashion_mnist(
    root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0, channels: int | None = None
) -> Data:
    """torchvision FashionMNIST from ``root`` (never downloaded)."""
    return _torchvision("FashionMNIST", root, val_fraction, seed, channels)


@datasets.register("cifar10")
def cifar10(
    root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0, channels: int | None = None
) -> Data:
    """torchvision CIFAR10 from ``root`` (never downloaded)."""
    return _torchvision("CIFAR10", root, val_fraction, seed, channels)


@datasets.register("image_folder")
def image_folder(
    root: str | os.PathLike,
    image_size: int | Sequence[int] = 32,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> Data:
    """Images in ``root/<class>/...``, or in ``root/train``, ``root/val``, ``root/test``.

    Missing ``val``/``test`` folders are split off the training images by ``seed``.
    Images are resized to ``image_size`` and normalised with ``mean``/``std``.
    """
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"root: directory not found: {root}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    tf = T.Compose([T.Resize(size), T.ToTensor(), T.Normalize(mean, std)])

    def folder(path: str) -> Any:
        try:
            return tvd.ImageFolder(path, transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"root: cannot read images under {path}: {exc}") from None

    sub = {s: os.path.join(root, s) for s in ("train", "val", "test")}
    train = folder(sub["train"] if os.path.isdir(sub["train"]) else root)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train)).tolist()
    test = folder(sub["test"]) if os.path.isdir(sub["test"]) else None
    if test is None:
        n = int(round(len(order) * test_fraction))
        test, order = Subset(train, order[:n]), order[n:]
    val = folder(sub["val"]) if os.path.isdir(sub["val"]) else None
    if val is None:
        n = max(1, int(round(len(order) * val_fraction)))
        val, order = Subset(train, order[:n]), order[n:]
    for path in _first_of_each_class(train):
        try:
            train.loader(path)
        except Exception as exc:  # PIL's errors have no common base
            raise DataError(f"root: {path} is not a readable image ({exc})") from None
    x0 = train[0][0]
    return Data(
        Subset(train, order),
        val,
        test,
        num_classes=len(train.classes),
        input_shape=tuple(x0.shape),
        name=os.path.basename(root.rstrip("/")),
    )


def _first_of_each_class(folder: Any) -> list[str]:
    """The first image file of each class of a torchvision ``ImageFolder``."""
    first: dict[int, str] = {}
    for path, label in folder.samples:
        first.setdefault(label, path)
    return list(first.values())


def load_data(name: str = "digits", **kwargs: Any) -> Data:
    """Data by provider name (see the table above) or ``package.module:function``.

    >>> load_data("digits").num_classes
    10
    """
    if isinstance(name, str) and ":" in name:
        out = import_callable(name, "data")(**kwargs)
        if isinstance(out, Data):
            return out
        if isinstance(out, (tuple, list)) and len(out) == 3:
            train, val, test = out
            x0, _ = train[0]
            labels = [int(train[i][1]) for i in range(len(train))]
            return Data(
                train,
                val,
                test,
                num_classes=max(labels) + 1,
                input_shape=tuple(x0.shape),
                name=name,
            )
        raise DataError(
            f"data: {name} returned {type(out).__name__}; return a Data or (train, val, test)"
        )
    provider = datasets.get(name)
    try:
        return provider(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"data: bad options for {name!r}: {exc}") from None

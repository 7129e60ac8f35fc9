"""Model providers: small built-ins for the CPU, torchvision by name, user factories.

    >>> model = create_model("resnet10", num_classes=10, input_shape=(1, 28, 28), width=16)
    >>> sum(p.numel() for p in model.parameters()) > 0
    True

``create_model`` takes a registered name (``mlp``, ``small_cnn``, ``resnet10``,
``vgg_small``, ``mobilenet_small``, ``densenet_small``; see :mod:`autoprune._nets`), any
torchvision classification model name (built with ``weights=None``: nothing is
downloaded), or ``package.module:function``. Register your own with
:func:`register_model`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchvision
from torch import nn

from . import _checks
from .errors import ConfigError, ModelError
from .registry import Registry, import_callable

models = Registry("model")


def register_model(name: str | None = None) -> Callable[[Any], Any]:
    """Register a model builder ``fn(num_classes, input_shape, **kwargs) -> nn.Module``.

    >>> @register_model("tiny")
    ... def tiny(num_classes, input_shape):
    ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    >>> "tiny" in list_models()
    True
    """
    return models.register(name)


def list_models() -> list[str]:
    """The registered model names (any torchvision classification model works too)."""
    return models.names()


class MLP(nn.Module):
    """Flatten, then Linear-ReLU layers of the given hidden sizes, then the classifier."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 128)):
        super().__init__()
        self.flatten = nn.Flatten()
        sizes = [in_features, *hidden]
        for i in range(len(hidden)):
            self.add_module(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        self.act = nn.ReLU()
        self.classifier = nn.Linear(sizes[-1], num_classes)
        self.depth = len(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for i in range(self.depth):
            x = self.act(getattr(self, f"fc{i + 1}")(x))
        return self.classifier(x)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers, a flatten into a hidden Linear, and the classifier.

    The flatten keeps a 4x4 map, so removing a conv channel removes 16 Linear inputs.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, hidden: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.squeeze = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * w * 16, hidden)
        self.classifier = nn.Linear(hidden, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.pool(self.act(self.bn2(self.conv2(x))))
        x = self.act(self.bn3(self.conv3(x)))
        x = self.flatten(self.squeeze(x))
        return self.classifier(self.act(self.fc(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet10(nn.Module):
    """A ResNet-10-style network for small images (8x8 to 32x32, 1 or 3 channels).

    A 3x3 stem, four stages of one BasicBlock each (widths w, 2w, 4w, 8w; strides 1, 2,
    2, 2), global average pooling and a Linear classifier: 10 weight layers.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        cin = width
        for i, (w, s) in enumerate(zip(widths, (1, 2, 2, 2))):
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, s)))
            cin = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))


def _channels(input_shape: Sequence[int]) -> int:
    if len(input_shape) != 3:
        raise ConfigError(
            f"input_shape: expected (channels, height, width), got {tuple(input_shape)}"
        )
    return int(input_shape[0])


@register_model("mlp")
def mlp(
    num_classes: int, input_shape: Sequence[int], hidden: Sequence[int] = (256, 128)
) -> nn.Module:
    """Multi-layer perceptron on the flattened input."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise _checks.fail("hidden", "a list of layer widths", hidden)
    widths = tuple(_checks.positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
    return MLP(math.prod(input_shape), num_classes, widths)


@register_model("small_cnn")
def small_cnn(
    num_classes: int, input_shape: Sequence[int], width: int = 16, hidden: int = 64
) -> nn.Module:
    """Small plain CNN (no skip connections)."""
    width = _checks.positive_int("width", width)
    return SmallCNN(
        _channels(input_shape), num_classes, width, _checks.positive_int("hidden", hidden)
    )


@register_model("resnet10")
def resnet10(num_classes: int, input_shape: Sequence[int], width: int = 16) -> nn.Module:
    """ResNet-10-style network sized for the CPU."""
    return ResNet10(_channels(input_shape), num_classes, _checks.positive_int("width", width))


@register_model("vgg_small")
def vgg_small(
    num_classes: int, input_shape: Sequence[int], width: int = 16, hidden: int = 512
) -> nn.Module:
    """VGG-style plain net with a large fully connected classifier (two hidden layers)."""
    from ._nets import VGGSmall

    width, hidden = _checks.positive_int("width", width), _checks.positive_int("hidden", hidden)
    return VGGSmall(_channels(input_shape), num_classes, width, hidden)


@register_model("mobilenet_small")
def mobilenet_small(num_classes: int, input_shape: Sequence[int], width: int = 16) -> nn.Module:
    """MobileNetV2-style net: depthwise separable inverted residuals."""
    from ._nets import MobileNetSmall

    return MobileNetSmall(_channels(input_shape), num_classes, _checks.positive_int("width", width))


@register_model("densenet_small")
def densenet_small(
    num_classes: int,
    input_shape: Sequence[int],
    growth: int = 12,
    layers: Sequence[int] = (4, 4, 4),
) -> nn.Module:
    """DenseNet-style net: dense blocks joined by concatenation, 1x1 transitions."""
    from ._nets import DenseNetSmall

    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise _checks.fail("layers", "a list of layers per dense block", layers)
    counts = tuple(_checks.positive_int(f"layers[{i}]", n) for i, n in enumerate(layers))
    return DenseNetSmall(
        _channels(input_shape), num_classes, _checks.positive_int("growth", growth), counts
    )


def torchvision_models() -> list[str]:
    """Names of torchvision's classification models."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def create_model(
    name: str, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), **kwargs: Any
) -> nn.Module:
    """Build a model by name: a built-in, a torchvision classifier, or ``module:function``.

    Args:
        name: ``mlp``, ``small_cnn``, ``resnet10``, a torchvision name such as
            ``resnet18`` (random weights, never downloaded), or ``pkg.mod:factory``.
        num_classes: outputs of the classifier.
        input_shape: ``(channels, height, width)`` of one input.
        **kwargs: passed to the builder (e.g. ``width=16``).

    >>> create_model("small_cnn", num_classes=3, input_shape=(1, 8, 8), width=4).conv1
    Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model: expected a model name, got {name!r}")
    if ":" in name:
        factory = import_callable(name, "model")
        try:
            model = factory(**kwargs)
        except TypeError as exc:
            raise ModelError(f"model: {name} could not be called with {kwargs} ({exc})") from None
    elif name in models:
        try:
            model = models.get(name)(
                num_classes=num_classes, input_shape=tuple(input_shape), **kwargs
            )
        except TypeError as exc:
            raise ConfigError(f"model: bad options for {name!r}: {exc}") from None
    elif name in torchvision_models():
        if len(input_shape) == 3 and input_shape[0] != 3:
            raise ConfigError(
                f"model: torchvision's {name} takes 3-channel images but the data has "
                f"{input_shape[0]}; convert the data to 3 channels (data option channels: 3)"
            )
        try:
            model = torchvision.models.get_model(
                name, weights=None, num_classes=num_classes, **kwargs
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model: bad options for torchvision {name!r}: {exc}") from None
    else:
        models.get(name)  # raises: unknown name, with suggestions
        raise AssertionError  # pragma: no cover
    if not isinstance(model, nn.Module):
        raise ModelError(f"model: {name} returned {type(model).__name__}, not a torch.nn.Module")
    # how to build it again: saved results rebuild the architecture from this
    model.__dict__[_SPEC] = {
        "name": name,
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "kwargs": _jsonable(kwargs),
    }
    return model


_SPEC = "_autoprune_spec"


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """How :func:`create_model` built ``model`` (None for models built elsewhere)."""
    return model.__dict__.get(_SPEC)


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """Build a fresh model from a :func:`model_spec`."""
    return create_model(
        spec["name"], spec["num_classes"], tuple(spec["input_shape"]), **spec.get("kwargs", {})
    )


def _unreadable(path: str, exc: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, and what to do, in one clause."""
    if "Weights only load failed" in str(exc):
        return (
            "holds pickled Python objects (a whole model?), not only tensors; save the "
            "weights instead: torch.save(model.state_dict(), path)"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return "is a damaged or truncated PyTorch checkpoint; save it again"
    return "is not a PyTorch checkpoint; write one with torch.save(model.state_dict(), path)"


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights saved with ``torch.save(model.state_dict(), path)`` into ``model``.

    Loads with ``weights_only=True``. A dict holding the state under ``state_dict`` or
    ``model`` is accepted too.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path} {_unreadable(path, exc)}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        raise ModelError(
            f"checkpoint {path} does not fit the model: its keys are {', '.join(parts)}; "
            "was it saved from another architecture or other model.options?"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        shapes = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        raise ModelError(
            f"checkpoint {path} does not fit the model: {shapes or str(exc).splitlines()[0]}"
        ) from None
    return model

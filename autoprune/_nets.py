"""Built-in architectures of different shapes, sized for small images on the CPU.

Each is a classic design in miniature, so that a search meets what real models have:

* :class:`VGGSmall`: a plain conv stack with a large fully connected classifier (most of
  its weights in two hidden Linear layers, most of its MACs in the convolutions);
* :class:`MobileNetSmall`: MobileNetV2's inverted residuals (1x1 expand, 3x3 depthwise,
  1x1 project, a skip where the shape allows);
* :class:`DenseNetSmall`: dense blocks, each layer's output concatenated to all it
  follows, with 1x1 transitions between blocks.

All work on inputs from 8x8 to 32x32 with any number of channels. They are registered
in :mod:`autoprune.models` as ``vgg_small``, ``mobilenet_small`` and ``densenet_small``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class VGGSmall(nn.Module):
    """Three conv stages (widths w, 2w, 4w; two conv-BN-ReLU each, then 2x2 max pooling),
    a 3x3 map flattened into two hidden Linear layers of ``hidden`` units, and the
    classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, hidden: int = 512):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (width, 2 * width, 4 * width):
            for _ in range(2):
                layers += [*_conv_bn(cin, cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.squeeze = nn.AdaptiveAvgPool2d(3)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(cin * 9, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.3)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.squeeze(self.features(x)))
        x = self.drop(self.act(self.fc1(x)))
        x = self.drop(self.act(self.fc2(x)))
        return self.classifier(x)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion by ``expand`` (none at 1), 3x3 depthwise with
    ``stride``, linear 1x1 projection; the input added back when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, mid, 1), nn.ReLU6()]
        layers += [*_conv_bn(mid, mid, 3, stride, groups=mid), nn.ReLU6()]
        layers += _conv_bn(mid, cout, 1)
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.skip else out


class MobileNetSmall(nn.Module):
    """A 3x3 stem, inverted-residual stages ``(expand, channels, blocks, stride)`` scaled
    by ``width`` / 16, a 1x1 head of 16 x width channels, pooling and the classifier."""

    STAGES: Sequence[tuple[int, int, int, int]] = (
        (1, 16, 1, 1),
        (4, 24, 2, 2),
        (4, 32, 2, 2),
        (4, 64, 2, 2),
    )

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()

        def scaled(c: int) -> int:
            return max(4, c * width // 16)

        cin = scaled(16)
        self.stem = nn.Sequential(*_conv_bn(in_channels, cin), nn.ReLU6())
        blocks: list[nn.Module] = []
        for expand, channels, n, stride in self.STAGES:
            for i in range(n):
                blocks.append(
                    InvertedResidual(cin, scaled(channels), stride if i == 0 else 1, expand)
                )
                cin = scaled(channels)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, 16 * width, 1), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(16 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.flatten(self.pool(x)))


class DenseLayer(nn.Module):
    """conv 3x3 - BN - ReLU of ``growth`` channels, concatenated after its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, growth), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNetSmall(nn.Module):
    """A 3x3 stem of 2 x growth channels, dense blocks of ``layers`` layers each, a 1x1
    transition halving the channels and 2x2 average pooling between blocks, pooling and
    the classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        growth: int = 12,
        layers: Sequence[int] = (4, 4, 4),
    ):
        super().__init__()
        cin = 2 * growth
        self.stem = nn.Sequential(*_conv_bn(in_channels, cin), nn.ReLU())
        stages: list[nn.Module] = []
        for b, n in enumerate(layers):
            for _ in range(n):
                stages.append(DenseLayer(cin, growth))
                cin += growth
            if b < len(layers) - 1:
                out = cin // 2
                stages += [*_conv_bn(cin, out, 1), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True)]
                cin = out
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(self.stem(x)))))

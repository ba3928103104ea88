"""The emotion networks: plain nn.Modules with a small config, no I/O.

Each config carries the network's input size (the side of the square grayscale face it reads), and each network
keeps it as `input_size`: it travels with the checkpoint into the exported graph, the Triton config and the
gateway's crop.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipelines.labels import LABELS


@dataclass(frozen=True)
class SmallCNNConfig:
    """A compact VGG-like CNN for 48x48 faces: three conv stages, global average pooling."""

    channels: tuple[int, int, int] = (16, 32, 64)
    dropout: float = 0.3
    num_classes: int = len(LABELS)
    input_size: int = 48


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    # Two 3x3 convs then a 2x2 pool: the receptive field grows without the cost of large kernels.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Input: N x 1 x 48 x 48 normalised floats. Output: N x num_classes logits."""

    def __init__(self, config: SmallCNNConfig) -> None:
        super().__init__()
        self.input_size = config.input_size
        c1, c2, c3 = config.channels
        self.features = nn.Sequential(_stage(1, c1), _stage(c1, c2), _stage(c2, c3))  # 48 -> 24 -> 12 -> 6
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),  # N x c3 x 1 x 1
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(c3, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class VGGFerConfig:
    """VGG variant of Khaireddin & Chen (2021), 73.28 % single-network accuracy on FER2013.

    Four conv stages of two conv-BN-ReLU blocks and a max pool (64, 128, 256, 512 channels: 48 -> 3), then
    two 4096-wide fully connected layers with dropout. About 40M parameters and 1 GFLOP per face.
    """

    channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    hidden: int = 4096
    dropout: float = 0.2
    num_classes: int = len(LABELS)
    input_size: int = 48

    def __post_init__(self) -> None:
        if self.input_size % 16 != 0:
            raise ValueError(f"vgg_fer needs an input size divisible by 16 (four 2x2 pools), not {self.input_size}")


class VGGFer(nn.Module):
    """Input: N x 1 x 48 x 48 normalised floats. Output: N x num_classes logits."""

    def __init__(self, config: VGGFerConfig) -> None:
        super().__init__()
        self.input_size = config.input_size
        c1, c2, c3, c4 = config.channels
        self.features = nn.Sequential(_stage(1, c1), _stage(c1, c2), _stage(c2, c3), _stage(c3, c4))  # 48 -> 3
        side = config.input_size // 16
        self.head = nn.Sequential(
            nn.Flatten(),  # N x c4*side*side
            nn.Linear(c4 * side * side, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class MiniXceptionConfig:
    """mini-Xception of Arriaga, Valdenegro-Toro & Ploeger (2017): 58k parameters, 64x64 faces.

    Two plain 3x3 convolutions (valid padding), four residual modules of two depthwise-separable convolutions
    and a strided max pool, a 3x3 convolution to one map per class and global average pooling. Padding follows
    Keras' 'same' rule (extra padding at the bottom/right) so that the published Keras weights import exactly.
    """

    channels: tuple[int, int, int, int] = (16, 32, 64, 128)
    stem_channels: int = 8
    num_classes: int = len(LABELS)
    input_size: int = 64
    bn_eps: float = 1e-3  # Keras' BatchNormalization default, the epsilon the published weights were fit with


def _keras_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow's 'same': output ceil(size / stride); the odd padding pixel goes after, not before.
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameMaxPool(nn.Module):
    """3x3 / stride-2 max pool with Keras' 'same' padding: the odd padding pixel goes after, not before.

    Computed as the maximum of the kernel's strided views of the padded input: on these CPUs torch's NCHW
    max_pool2d kernel took ~1 ms on a 16x60x60 map, a third of the whole network; the views take ~0.4 ms.
    """

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _keras_same_pad(x.shape[2], self.kernel, self.stride)
        left, right = _keras_same_pad(x.shape[3], self.kernel, self.stride)
        x = F.pad(x, [left, right, top, bottom], value=float("-inf"))  # padding never wins the max
        k, s = self.kernel, self.stride
        height, width = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
        out = x[:, :, 0 : s * height : s, 0 : s * width : s]
        for dy in range(k):
            for dx in range(k):
                if dy > 0 or dx > 0:
                    out = torch.maximum(out, x[:, :, dy : dy + s * height : s, dx : dx + s * width : s])
        return out


class SeparableConv(nn.Sequential):
    """Keras SeparableConv2D (depth multiplier 1, no bias): a 3x3 depthwise then a 1x1 pointwise conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),  # 'same' for an odd kernel, stride 1
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )


class XceptionModule(nn.Module):
    """Residual module: (sepconv-BN-ReLU, sepconv-BN, max pool /2) + (1x1 conv stride 2, BN)."""

    def __init__(self, c_in: int, c_out: int, eps: float) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out, eps=eps))
        self.main = nn.Sequential(
            SeparableConv(c_in, c_out),
            nn.BatchNorm2d(c_out, eps=eps),
            nn.ReLU(inplace=True),
            SeparableConv(c_out, c_out),
            nn.BatchNorm2d(c_out, eps=eps),
            SameMaxPool(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 kernel at stride 2 needs no 'same' padding: it samples pixels 0, 2, 4, ... like Keras.
        return self.main(x) + self.residual(x)


class MiniXception(nn.Module):
    """Input: N x 1 x 64 x 64 normalised floats. Output: N x num_classes logits (softmax is the caller's)."""

    def __init__(self, config: MiniXceptionConfig) -> None:
        super().__init__()
        self.input_size = config.input_size
        s, eps = config.stem_channels, config.bn_eps
        self.stem = nn.Sequential(
            nn.Conv2d(1, s, 3, bias=False),  # 64 -> 62 (valid)
            nn.BatchNorm2d(s, eps=eps),
            nn.ReLU(inplace=True),
            nn.Conv2d(s, s, 3, bias=False),  # -> 60
            nn.BatchNorm2d(s, eps=eps),
            nn.ReLU(inplace=True),
        )
        widths = (s, *config.channels)
        self.blocks = nn.Sequential(
            *(XceptionModule(c_in, c_out, eps) for c_in, c_out in zip(widths, widths[1:], strict=False))
        )  # 60 -> 30 -> 15 -> 8 -> 4
        self.classifier = nn.Conv2d(widths[-1], config.num_classes, 3, padding=1)  # one map per class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.stem(x))).mean(dim=(2, 3))  # global average pooling


# params.yaml's train.model -> (config dataclass, network). One table, so names and builders cannot drift.
REGISTRY: dict[str, tuple[type[Any], type[nn.Module]]] = {
    "small": (SmallCNNConfig, SmallCNN),
    "vgg_fer": (VGGFerConfig, VGGFer),
    "mini_xception": (MiniXceptionConfig, MiniXception),
}
MODELS = tuple(REGISTRY)


def model_config(name: str, **kwargs: object) -> Any:
    """The config dataclass of a network by its params.yaml name; kwargs override its fields."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    config_cls, _ = REGISTRY[name]
    known = {f.name for f in fields(config_cls)}
    if unknown := sorted(set(kwargs) - known):
        raise ValueError(f"model {name!r} has no setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})  # YAML lists


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a network by its params.yaml name; kwargs override fields of its config dataclass."""
    config = model_config(name, **kwargs)
    return REGISTRY[name][1](config)


def input_size(name: str, **kwargs: object) -> int:
    """The side of the square face the network reads."""
    return int(model_config(name, **kwargs).input_size)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

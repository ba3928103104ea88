"""The emotion networks: plain nn.Modules with a small config, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.labels import LABELS


@dataclass(frozen=True)
class SmallCNNConfig:
    """A compact VGG-like CNN for 48x48 faces: three conv stages, global average pooling."""

    channels: tuple[int, int, int] = (16, 32, 64)
    dropout: float = 0.3
    num_classes: int = len(LABELS)


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


class VGGFer(nn.Module):
    """Input: N x 1 x 48 x 48 normalised floats. Output: N x num_classes logits."""

    def __init__(self, config: VGGFerConfig) -> None:
        super().__init__()
        c1, c2, c3, c4 = config.channels
        self.features = nn.Sequential(_stage(1, c1), _stage(c1, c2), _stage(c2, c3), _stage(c3, c4))  # 48 -> 3
        self.head = nn.Sequential(
            nn.Flatten(),  # N x c4*3*3
            nn.Linear(c4 * 3 * 3, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODELS = ("small", "vgg_fer")


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a network by its params.yaml name; kwargs override fields of its config dataclass."""
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # YAML lists -> tuples
    if name == "small":
        return SmallCNN(SmallCNNConfig(**options))  # type: ignore[arg-type]
    if name == "vgg_fer":
        return VGGFer(VGGFerConfig(**options))  # type: ignore[arg-type]
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

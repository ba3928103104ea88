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


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a network by its params.yaml name."""
    if name == "small":
        config = SmallCNNConfig(**{k: tuple(v) if k == "channels" else v for k, v in kwargs.items()})  # type: ignore[arg-type]
        return SmallCNN(config)
    raise ValueError(f"unknown model {name!r}; known: small")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

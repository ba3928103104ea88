from __future__ import annotations

import pytest
import torch

from pipelines.labels import LABELS
from pipelines.model import build_model, count_parameters


@pytest.mark.parametrize("batch", [1, 5])
def test_small_cnn_maps_faces_to_logits(batch: int) -> None:
    model = build_model("small").eval()
    out = model(torch.randn(batch, 1, 48, 48))
    assert out.shape == (batch, len(LABELS))


def test_small_cnn_is_small() -> None:
    assert count_parameters(build_model("small")) <= 2_000_000


def test_channels_come_from_params() -> None:
    narrow = count_parameters(build_model("small", channels=[8, 16, 32]))
    assert narrow < count_parameters(build_model("small"))


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9000")

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


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [(60, 3, 2, (0, 1)), (15, 3, 2, (1, 1)),
                                                                      (8, 3, 2, (0, 1)), (15, 1, 2, (0, 0))])
def test_keras_same_padding_puts_the_odd_pixel_after(size: int, kernel: int, stride: int,
                                                     expected: tuple[int, int]) -> None:  # fmt: skip
    from pipelines.model import _keras_same_pad

    assert _keras_same_pad(size, kernel, stride) == expected


def test_mini_xception_reads_64x64_and_has_the_papers_size() -> None:
    model = build_model("mini_xception").eval()
    assert model.input_size == 64
    assert model(torch.randn(3, 1, 64, 64)).shape == (3, len(LABELS))
    # 58,423 weights in the Keras file = trainable parameters + BatchNorm running means and variances.
    running = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert count_parameters(model) + running == 58_423


@pytest.mark.parametrize("name", ["small", "vgg_fer", "mini_xception"])
def test_every_registered_network_reads_its_declared_input_size(name: str) -> None:
    from pipelines.model import MODELS, input_size

    assert name in MODELS
    size = input_size(name)
    assert build_model(name).eval()(torch.zeros(1, 1, size, size)).shape == (1, len(LABELS))


def test_an_unknown_model_setting_is_named() -> None:
    with pytest.raises(ValueError, match="no setting colour"):
        build_model("small", colour=3)


@pytest.mark.parametrize("size", [60, 30, 15, 8, 7])
def test_same_max_pool_equals_padding_then_pooling(size: int) -> None:
    from torch.nn import functional as F

    from pipelines.model import SameMaxPool, _keras_same_pad

    x = torch.randn(2, 3, size, size)
    before, after = _keras_same_pad(size, 3, 2)
    expected = F.max_pool2d(F.pad(x, [before, after, before, after], value=float("-inf")), 3, 2)
    assert torch.equal(SameMaxPool()(x), expected)
    assert torch.equal(torch.jit.script(SameMaxPool())(x), expected)

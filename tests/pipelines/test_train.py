"""Training mechanics on tiny in-memory data: determinism, resumption, augmentation, vgg_fer on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.augment import AugmentConfig, augment
from pipelines.export import parity
from pipelines.inference import ServingModel, script
from pipelines.labels import LABELS
from pipelines.model import build_model
from pipelines.synthetic import generate_faces
from pipelines.train import TrainParams, class_weights, fit


@pytest.fixture(scope="module")
def tiny() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    faces = list(generate_faces(140, seed=3))
    images = np.stack([f for _, f in faces])
    labels = np.array([label for label, _ in faces])
    return (images[:112], labels[:112]), (images[112:], labels[112:])


PARAMS = TrainParams(epochs=3, batch_size=16, patience=10, model_kwargs={"channels": [4, 8, 8]}, torch_threads=1)


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


def test_training_is_repeatable_on_cpu(tiny) -> None:  # type: ignore[no-untyped-def]
    a, meta_a, history_a = fit(PARAMS, *tiny)
    b, meta_b, history_b = fit(PARAMS, *tiny)
    assert torch.equal(_weights(a), _weights(b))
    assert history_a == history_b and meta_a == meta_b
    assert meta_a["device"] == "cpu" and 1 <= meta_a["best_epoch"] <= 3


def test_resumed_training_equals_uninterrupted_training(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uninterrupted, _, history = fit(PARAMS, *tiny)
    state = tmp_path / "last.pt"
    fit(PARAMS, *tiny, state_path=state, max_epochs_this_call=1)  # "killed" after epoch 1
    assert torch.load(state, weights_only=False)["epoch"] == 1
    resumed, _, resumed_history = fit(PARAMS, *tiny, state_path=state)
    assert torch.equal(_weights(uninterrupted), _weights(resumed))
    assert resumed_history == history


def test_early_stopping_selects_on_validation(tiny) -> None:  # type: ignore[no-untyped-def]
    params = TrainParams(epochs=6, batch_size=16, patience=1, lr=1e-6, model_kwargs={"channels": [4, 8, 8]})
    _, meta, history = fit(params, *tiny)
    best = max(history, key=lambda h: (h.val_macro_f1, h.val_accuracy))
    assert meta["best_epoch"] == best.epoch and meta["val_macro_f1"] == best.val_macro_f1
    assert len(history) <= meta["best_epoch"] + 1 + 1  # stopped within patience after the best epoch


def test_class_weights_favour_rare_classes() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    weights = class_weights(labels, num_classes=3)
    assert weights[1] == pytest.approx(9 * weights[0]) and weights[2] == 0


def test_augmentation_is_seeded_and_keeps_shape() -> None:
    batch = torch.randn(6, 1, 48, 48)
    cfg = AugmentConfig(max_rotation_deg=15, scale=(0.8, 1.2), max_shift=0.1, erase_probability=1.0)
    a = augment(batch, cfg, torch.Generator().manual_seed(0))
    b = augment(batch, cfg, torch.Generator().manual_seed(0))
    assert a.shape == batch.shape and torch.equal(a, b)
    assert ((a == 0).flatten(1).sum(1) > 0).all()  # every face got an erased patch


def test_identity_augmentation_is_the_identity() -> None:
    batch = torch.randn(3, 1, 48, 48)
    cfg = AugmentConfig(flip=False, max_rotation_deg=0, scale=(1.0, 1.0), max_shift=0.0)
    assert torch.allclose(augment(batch, cfg, torch.Generator().manual_seed(0)), batch, atol=1e-5)


def test_vgg_fer_trains_one_step_and_exports_on_cpu(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net = build_model("vgg_fer")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    images, labels = tiny[0]
    x = torch.from_numpy(images[:8]).float().unsqueeze(1) / 255.0
    before = _weights(net)
    loss = torch.nn.functional.cross_entropy(net(x), torch.from_numpy(labels[:8]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, _weights(net))
    serving = ServingModel(net.eval(), list(LABELS), 0.5, 0.25, temperature=1.3).eval()
    scripted = script(serving)
    scripted.save(str(tmp_path / "vgg.pt"))
    assert parity(serving, scripted, images[:16]) <= 1e-5
    assert torch.jit.load(str(tmp_path / "vgg.pt"))(torch.zeros(2, 1, 48, 48, dtype=torch.uint8)).shape == (2, 7)


PRETRAINED = TrainParams(model="mini_xception", weights="fer2013_mini_xception", epochs=0, batch_size=16,
                         torch_threads=1)  # fmt: skip


def test_pretrained_weights_with_zero_epochs_are_imported_as_they_are(tiny) -> None:  # type: ignore[no-untyped-def]
    from pipelines.pretrained import load_pretrained

    model, meta, history = fit(PRETRAINED, *tiny)
    reference, _, _ = load_pretrained("fer2013_mini_xception")
    assert torch.equal(_weights(model), _weights(reference))
    assert [h.epoch for h in history] == [0] and meta["epochs_trained"] == 0 and meta["best_epoch"] == 0
    assert meta["input_size"] == 64 and (meta["mean"], meta["std"]) == (0.5, 0.5)  # the authors' scaling
    assert meta["weights"]["sha256"] and meta["crop_margin"] == 0.07


def test_pretrained_weights_fine_tune_from_epoch_zero(tiny) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    _, meta, history = fit(replace(PRETRAINED, epochs=2, lr=1e-3), *tiny)
    assert [h.epoch for h in history] == [0, 1, 2] and meta["epochs_trained"] == 2
    assert history[0].lr == 0.0 and history[1].train_loss != history[0].train_loss
    assert meta["best_epoch"] in (0, 1, 2) and meta["weights"]["name"] == "fer2013_mini_xception"


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"weights": "scratch", "epochs": 0}, "must be at least 1"),
     ({"model": "small"}, "are mini_xception weights"),
     ({"weights": "imagenet"}, "unknown pretrained weights")],
)  # fmt: skip
def test_inconsistent_weight_settings_are_refused(changes: dict[str, object], message: str) -> None:
    from dataclasses import asdict

    with pytest.raises(ValueError, match=message):
        TrainParams(**(asdict(PRETRAINED) | changes))

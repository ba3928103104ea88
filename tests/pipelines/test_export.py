from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.export import input_reference, parity, prediction_reference
from pipelines.inference import ServingModel, script
from pipelines.labels import LABELS
from pipelines.model import build_model


@pytest.fixture
def serving() -> ServingModel:
    torch.manual_seed(0)
    return ServingModel(build_model("small"), list(LABELS), mean=0.5, std=0.25).eval()


def test_scripted_model_is_self_describing(serving: ServingModel, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    script(serving).save(str(path))
    loaded = torch.jit.load(str(path))
    assert list(loaded.labels) == list(LABELS)
    probs = loaded(torch.zeros((3, 1, 48, 48), dtype=torch.uint8))
    assert probs.shape == (3, len(LABELS)) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)


def test_normalisation_lives_in_the_graph(serving: ServingModel) -> None:
    faces = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    expected = torch.softmax(serving.net((faces.float() / 255.0 - 0.5) / 0.25), 1)
    assert torch.allclose(serving(faces), expected, atol=1e-6)


def test_parity_of_eager_and_torchscript(serving: ServingModel) -> None:
    images = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    assert parity(serving, script(serving), images) <= 1e-5


def test_parity_detects_a_different_model(serving: ServingModel) -> None:
    other = ServingModel(build_model("small"), list(LABELS), mean=0.5, std=0.25).eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    assert parity(serving, script(other), images) > 1e-5


def test_reference_describes_predictions(serving: ServingModel) -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 48, 48), dtype=np.uint8)
    reference = prediction_reference(serving, images, list(LABELS))
    assert list(reference["class_distribution"]) == list(LABELS)
    assert sum(reference["class_distribution"].values()) == pytest.approx(1.0)
    assert sum(reference["confidence_histogram"]["counts"]) == 50


def test_input_reference_is_what_the_gateway_observes_per_face() -> None:
    rng = np.random.default_rng(0)
    # Faces of different exposure: the global pixel spread includes the spread between faces.
    faces = np.stack([np.clip(rng.normal(m, 20, (48, 48)), 0, 255) for m in (60, 120, 200)]).astype(np.uint8)
    reference = input_reference(faces)
    observed = [float(face.std()) / 255.0 for face in faces]  # gateway/analysis.py's face_contrast
    assert reference["contrast"] == pytest.approx(np.mean(observed))
    assert reference["brightness"] == pytest.approx(faces.mean() / 255.0)
    assert reference["contrast"] < 0.5 * (faces.std() / 255.0)  # the global std would be a false reference

"""Responsible use through the real pipeline, Triton and gateway: the model card and abstention."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipelines.labels import LABELS
from pipelines.repository import existing_versions
from pipelines.synthetic import generate_faces
from tests.conftest import png_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _latest_version(pipeline_project: Path) -> str:
    """The newest published version: other tests sharing the project may have published after the first."""
    return str(existing_versions(pipeline_project / "model_repository" / "emotion")[-1])


def test_the_published_card_holds_the_figures_of_eval_json(pipeline_project: Path) -> None:
    version = _latest_version(pipeline_project)
    version_dir = pipeline_project / "model_repository" / "emotion" / version
    evaluation = json.loads((pipeline_project / "metrics" / "eval.json").read_text())
    data = json.loads((pipeline_project / "metrics" / "data.json").read_text())
    card = json.loads((version_dir / "model_card.json").read_text())
    for key in ("accuracy", "macro_f1", "per_class_recall", "ece_before", "ece_after", "test_rows"):
        assert card["evaluation"][key] == evaluation[key], key
    assert card["abstention"] == evaluation["abstention"] and card["behaviour"] == evaluation["behaviour"]
    assert card["training_data"]["class_counts"] == data["splits"]
    assert card["training_data"]["fingerprint"] == data["fingerprint"]
    assert card["synthetic_training_data"] is True and "SYNTHETIC" in card["notice"]
    markdown = (version_dir / "model_card.md").read_text()
    assert markdown.startswith(f"# Model card: emotion v{version}")
    assert f"Accuracy: {evaluation['accuracy']:.4f}" in markdown
    assert f"Macro-F1: {evaluation['macro_f1']:.4f}" in markdown
    assert f"{evaluation['ece_before']:.4f} before, {evaluation['ece_after']:.4f} after" in markdown
    for label, recall in evaluation["per_class_recall"].items():
        assert f"| {label} | {recall:.4f} |" in markdown
    for use in ("workplace", "Hiring", "Surveillance", "Medical"):
        assert use in markdown
    # The same card is attached to the version's MLflow run.
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_project / 'mlflow.db'}")
    run_id = json.loads((version_dir / "metadata.json").read_text())["run_id"]
    local = client.download_artifacts(run_id, "model_card/model_card.md", str(pipeline_project / "card-download"))
    assert Path(local).read_text() == markdown


def test_get_model_returns_the_served_versions_card(gateway_url: str, pipeline_project: Path) -> None:
    evaluation = json.loads((pipeline_project / "metrics" / "eval.json").read_text())
    version = _latest_version(pipeline_project)
    body = httpx.get(f"{gateway_url}/v1/model", timeout=10).json()
    assert (body["name"], body["version"], body["labels"]) == ("emotion", version, list(LABELS))
    assert body["metrics"]["accuracy"] == evaluation["accuracy"]
    assert body["metrics"]["macro_f1"] == evaluation["macro_f1"]
    assert body["abstention"]["threshold"] == evaluation["abstention"]["threshold"]
    assert body["abstention"]["source"] == "model"
    assert body["synthetic_training_data"] is True
    card = (pipeline_project / "model_repository" / "emotion" / version / "model_card.md").read_text()
    assert body["card"] == card and body["card_data"]["evaluation"]["accuracy"] == evaluation["accuracy"]


def _abstentions(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("emotorch_abstentions_total "):
            return float(line.split()[1])
    raise AssertionError("emotorch_abstentions_total is not exported")


def test_a_low_confidence_face_is_answered_uncertain(gateway_url: str) -> None:
    threshold = httpx.get(f"{gateway_url}/v1/model", timeout=10).json()["abstention"]["threshold"]
    assert 0 < threshold <= 1
    # Ambiguous inputs: two expressions blended half and half, and faces washed out toward grey.
    faces = [face for _, face in generate_faces(28, seed=777)]
    pairs = zip(faces[::2], faces[1::2], strict=True)
    candidates = [((a.astype(np.float32) + b) / 2).astype(np.uint8) for a, b in pairs]
    candidates += [(face * 0.25 + 96).astype(np.uint8) for face in faces]
    candidates += faces  # clear faces: most are answered with a label
    before = _abstentions(gateway_url)
    answers = []
    with httpx.Client(timeout=30) as client:
        for image in candidates:
            response = client.post(f"{gateway_url}/v1/emotions", data={"consent": "true", "mode": "face"},
                                   files={"image": ("face.png", png_bytes(image), "image/png")})  # fmt: skip
            assert response.status_code == 200, response.text
            answers.append((image, response.json()["faces"][0]))
    uncertain = [(image, a) for image, a in answers if a["uncertain"]]
    confident = [a for _, a in answers if not a["uncertain"]]
    assert uncertain and confident, "expected both kinds among blended, washed-out and clear faces"
    for _, a in uncertain:
        assert a["emotion"] == "uncertain" and a["confidence"] < threshold
        assert a["most_likely"] == max(a["probabilities"], key=a["probabilities"].get)
        assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)  # probabilities still there
    for a in confident:
        assert a["emotion"] == a["most_likely"] and a["confidence"] >= threshold
    assert _abstentions(gateway_url) - before == len(uncertain)

    # Recommendations for an uncertain face rank by the whole probability vector and say so.
    image, answer = uncertain[0]
    response = httpx.post(f"{gateway_url}/v1/recommendations", data={"consent": "true", "mode": "face", "k": "2"},
                          files={"image": ("face.png", png_bytes(image), "image/png")}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["emotion"]["label"] == "uncertain" and body["emotion"]["uncertain"] is True
    assert body["emotion"]["probabilities"] == pytest.approx(answer["probabilities"], abs=1e-6)
    reasons = [item["reason"] for items in body["domains"].values() for item in items]
    assert reasons and all("no clear emotion" in r for r in reasons)

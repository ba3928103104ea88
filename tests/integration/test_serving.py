"""Synthetic faces through the real gateway and the real Triton."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipelines.labels import LABELS
from pipelines.synthetic import generate_faces
from tests.conftest import png_bytes
from tests.integration.conftest import RunningTriton

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def post_face(
    url: str, face: np.ndarray, consent: str | None = "true", client: httpx.Client | None = None
) -> httpx.Response:
    """Post a pre-cropped face (mode=face)."""
    data = {"consent": consent, "mode": "face"} if consent is not None else {"mode": "face"}
    post = client.post if client else httpx.post
    return post(
        f"{url}/v1/emotions", files={"image": ("face.png", png_bytes(face), "image/png")}, data=data, timeout=30
    )


def test_health_and_readiness(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway_url}/readyz").json()
    assert ready == {"ready": True, "model": {"name": "emotion", "version": "1"}}


def test_every_class_gets_a_well_formed_answer(gateway_url: str) -> None:
    faces = {label: face for label, face in ((LABELS[i], f) for i, f in generate_faces(14, seed=99))}
    for face in faces.values():
        response = post_face(gateway_url, face)
        assert response.status_code == 200, response.text
        body = response.json()
        (result,) = body["faces"]
        assert result["box"] == [0, 0, 48, 48]
        assert list(result["probabilities"]) == list(LABELS)  # order and names from the served model
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert result["most_likely"] == max(result["probabilities"], key=result["probabilities"].get)
        assert result["emotion"] in (result["most_likely"], "uncertain") and result["uncertain"] == (
            result["emotion"] == "uncertain"
        )
        assert result["confidence"] == pytest.approx(max(result["probabilities"].values()))
        assert body["model"] == {"name": "emotion", "version": "1"}
        assert set(body["timings_ms"]) == {"decode", "detect", "preprocess", "infer"}


def test_accuracy_on_held_out_faces_is_far_above_chance(gateway_url: str) -> None:
    # A seed the pipeline never used: these faces are new to the model.
    faces = list(generate_faces(350, seed=424242))
    correct = 0
    with httpx.Client() as client:
        for label, face in faces:
            body = post_face(gateway_url, face, client=client).json()
            correct += body["faces"][0]["most_likely"] == LABELS[label]
    accuracy = correct / len(faces)
    print(f"held-out synthetic accuracy through Triton: {accuracy:.3f} on {len(faces)} faces (chance 0.143)")  # noqa: T201
    assert accuracy > 0.5


def test_a_larger_face_photo_is_resized_like_training_data(gateway_url: str) -> None:
    import cv2

    _, face = next(iter(generate_faces(1, seed=5)))
    big = cv2.resize(face, (240, 240), interpolation=cv2.INTER_CUBIC)
    small_answer = post_face(gateway_url, face).json()["faces"][0]
    big_answer = post_face(gateway_url, big).json()["faces"][0]
    assert big_answer["box"] == [0, 0, 240, 240]
    assert big_answer["most_likely"] == small_answer["most_likely"]


NOT_CONSENT = [None, "false", "no", "yes", "1", "on", "", "True", " true", "true\n", "\u00a0true"]


@pytest.mark.parametrize("consent", NOT_CONSENT)
def test_no_consent_no_analysis(gateway_url: str, consent: str | None) -> None:
    _, face = next(iter(generate_faces(1, seed=1)))
    response = post_face(gateway_url, face, consent=consent)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "consent" in response.json()["detail"]


def test_corrupt_and_oversized_uploads_get_4xx(gateway_url: str) -> None:
    corrupt = httpx.post(
        f"{gateway_url}/v1/emotions",
        files={"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"0" * 50)},
        data={"consent": "true"},
    )
    assert corrupt.status_code == 400 and "corrupt" in corrupt.json()["detail"]
    text = httpx.post(
        f"{gateway_url}/v1/emotions", files={"image": ("x.jpg", b"hello, not a jpeg")}, data={"consent": "true"}
    )
    assert text.status_code == 415
    huge = httpx.post(
        f"{gateway_url}/v1/emotions", files={"image": ("x.png", b"\0" * (11 * 1024 * 1024))}, data={"consent": "true"}
    )
    assert huge.status_code == 413 and huge.json()["title"] == "Payload too large"
    missing = httpx.post(f"{gateway_url}/v1/emotions", data={"consent": "true"})
    assert missing.status_code == 422 and "image" in missing.json()["detail"]
    assert httpx.get(f"{gateway_url}/readyz").status_code == 200  # still healthy


def test_new_version_is_served_without_restarting_the_gateway(
    gateway_url: str, triton: RunningTriton, pipeline_project: Path
) -> None:
    receipt = pipeline_project / "publish-v2.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.publish",
            "--params",
            "params.yaml",
            "--model",
            "models/model.pt",
            "--metadata",
            "models/export.json",
            "--repository",
            "model_repository",
            "--receipt",
            str(receipt),
            "--triton-url",
            triton.http_url,
        ],
        cwd=pipeline_project,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"loaded_by_triton": true' in receipt.read_text()
    _, face = next(iter(generate_faces(1, seed=3)))
    assert post_face(gateway_url, face).json()["model"]["version"] == "2"
    assert httpx.get(f"{gateway_url}/readyz").json()["model"]["version"] == "2"


def test_a_deadline_shorter_than_triton_needs_is_a_504(triton: RunningTriton, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from gateway.settings import Settings

    settings = Settings(triton_url=triton.grpc_url, triton_timeout_s=0.0005, model_wait_s=0,
                        database_url=f"sqlite:///{tmp_path / 'f.db'}")  # fmt: skip
    _, face = next(iter(generate_faces(1, seed=2)))
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/emotions", files={"image": ("f.png", png_bytes(face))},
                               data={"consent": "true", "mode": "face"})  # fmt: skip
    assert response.status_code == 504, response.text
    assert "did not answer" in response.json()["detail"]

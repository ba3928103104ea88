"""Calibration of a detector's score threshold against a false-positive budget.

A detector run with a permissive threshold on a calibration set (faces at known boxes and images without any)
gives every detection's score and whether it matched a face. The threshold is then the lowest one whose false
positives per image stay within the budget: the most recall the budget allows. `bench/detection.py
--calibrate` runs it on a calibration set disjoint from the benchmark's (other seeds and backgrounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    threshold: float
    false_positives_per_image: float  # on the calibration set, at the threshold
    recall: float  # faces found at the threshold, of all faces in the set


def calibrate_threshold(
    scores: np.ndarray,
    is_face: np.ndarray,
    face_ids: np.ndarray,
    n_faces: int,
    n_images: int,
    max_false_positives_per_image: float,
) -> Calibration:
    """The lowest threshold, among the observed scores, with false positives per image <= the budget.

    `scores`, `is_face` and `face_ids` describe every detection (face_ids: which face a true detection found,
    -1 for false ones); a face counts as found when one of its detections passes the threshold.
    """
    if n_images <= 0 or n_faces < 0:
        raise ValueError("the calibration set needs images")
    false_scores = np.sort(scores[~is_face])[::-1]
    allowed = int(np.floor(max_false_positives_per_image * n_images + 1e-9))
    # Strictly above the (allowed+1)-th best false score: at most `allowed` false positives pass.
    floor = float(false_scores[allowed]) if allowed < len(false_scores) else -np.inf
    candidates = np.unique(scores[scores > floor])
    threshold = float(candidates[0]) if len(candidates) else float(np.nextafter(floor, np.inf))
    passing = scores >= threshold
    found = len(np.unique(face_ids[passing & is_face]))
    false_positives = int(np.count_nonzero(passing & ~is_face))
    return Calibration(threshold, false_positives / n_images, found / n_faces if n_faces else 0.0)

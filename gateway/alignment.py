"""Face alignment before the FER crop, and the box transform that frames MTCNN's boxes the way Haar's were.

FER2013 faces are roughly upright and were framed by a Haar-style detector; the served model expects both.
Alignment turns the face about the centre between its eyes until the eyes are level; the crop box turns with
it (same size), and `crop_to_fer` then cuts the usual registration from the upright face.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gateway.imaging import Box, crop_to_fer

MAX_ALIGN_DEG = 45.0  # beyond this the eye landmarks are more likely wrong than the head that tilted
MIN_ALIGN_DEG = 1.0  # below this a rotation only resamples the pixels

Registration = tuple[float, float, float]  # (dx, dy, k): centre shift in box widths/heights, side scale


def eye_angle_deg(landmarks: tuple[tuple[float, float], ...]) -> float:
    """Angle of the line from the left to the right eye, in degrees; positive when the right eye is lower."""
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def register(corners: np.ndarray, registration: Registration) -> np.ndarray:
    """Detector boxes (N x 4 corners) -> squares framed like Haar's: centre shifted, side scaled."""
    dx, dy, k = registration
    w, h = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    cx, cy = (corners[:, 0] + corners[:, 2]) / 2 + dx * w, (corners[:, 1] + corners[:, 3]) / 2 + dy * h
    half = k * np.sqrt(w * h) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def fit_registration(detected: np.ndarray, reference: np.ndarray) -> Registration:
    """The registration that maps `detected` boxes onto `reference` boxes (both N x 4 corners), by medians."""
    w, h = detected[:, 2] - detected[:, 0], detected[:, 3] - detected[:, 1]
    shift_x = ((reference[:, 0] + reference[:, 2]) - (detected[:, 0] + detected[:, 2])) / 2 / w
    shift_y = ((reference[:, 1] + reference[:, 3]) - (detected[:, 1] + detected[:, 3])) / 2 / h
    side = np.sqrt((reference[:, 2] - reference[:, 0]) * (reference[:, 3] - reference[:, 1]))
    return float(np.median(shift_x)), float(np.median(shift_y)), float(np.median(side / np.sqrt(w * h)))


def aligned_crop(
    gray: np.ndarray, box: Box, landmarks: tuple[tuple[float, float], ...] | None, size: tuple[int, int], margin: float
) -> np.ndarray:
    """`crop_to_fer` of the face turned upright about its eye centre; plain `crop_to_fer` without usable eyes."""
    angle = eye_angle_deg(landmarks) if landmarks else 0.0
    if not landmarks or not MIN_ALIGN_DEG <= abs(angle) <= MAX_ALIGN_DEG:
        return crop_to_fer(gray, box, size, margin=margin)
    x, y, w, h = box
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    eyes = ((lx + rx) / 2, (ly + ry) / 2)
    # Only a square around the face is warped: its side covers the widened crop at any angle.
    side = int(math.ceil(max(w, h) * (1 + 2 * margin) * math.sqrt(2))) + 2
    matrix = cv2.getRotationMatrix2D(eyes, angle, 1.0)  # turns the eye line level
    cx, cy = matrix @ np.array([x + w / 2, y + h / 2, 1.0])
    shrink = min(1.0, 4 * max(size) / side)  # crop_to_fer's own working resolution: no need for more pixels
    source, to_image = gray, np.eye(3)
    if shrink < 1.0:
        # A big face: shrink its surroundings with area averaging first (warpAffine would alias), then turn them.
        x0, y0 = max(0, int(cx - side)), max(0, int(cy - side))
        source = cv2.resize(gray[y0 : int(cy + side) + 1, x0 : int(cx + side) + 1], None, fx=shrink, fy=shrink,
                            interpolation=cv2.INTER_AREA)  # fmt: skip
        to_image = np.array([[1 / shrink, 0, x0], [0, 1 / shrink, y0], [0, 0, 1]])
    # source pixels -> image -> turned image -> a patch of side x shrink pixels centred on the turned box
    out = max(1, int(round(side * shrink)))
    to_patch = np.array([[shrink, 0, out / 2 - cx * shrink], [0, shrink, out / 2 - cy * shrink], [0, 0, 1]])
    warp = (to_patch @ np.vstack([matrix, [0, 0, 1]]) @ to_image)[:2]
    patch = cv2.warpAffine(source, warp, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bw, bh = max(1, round(w * shrink)), max(1, round(h * shrink))
    return crop_to_fer(patch, ((out - bw) // 2, (out - bh) // 2, bw, bh), size, margin=margin)

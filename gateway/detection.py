"""Face detection behind a small interface, so that a DNN detector can replace the Haar cascade.

Detection runs on a downscaled, histogram-equalised copy of the image: it dominates the latency of a full
photo (PLATFORM.md: ~20-35 ms on a 320-480 px image on these cores, against ~5 ms for the CNN), and faces
in selfies are large enough to survive the downscale. Boxes come back in the original image's pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from gateway.imaging import Box

HAAR_FRONTAL_FACE = "haarcascade_frontalface_default.xml"


Point = tuple[float, float]


@dataclass(frozen=True)
class DetectedFace:
    """A face box in the image's pixels, the detector's confidence and, when it gives them, five landmarks."""

    box: Box
    score: float = 1.0
    landmarks: tuple[Point, ...] | None = None  # left eye, right eye, nose, left and right mouth corner

    @classmethod
    def from_corners(cls, corners: np.ndarray, score: float, landmarks: np.ndarray | None = None) -> DetectedFace:
        """From float corners (x1, y1, x2, y2) and an optional 5 x 2 landmark array."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in corners)
        points = None if landmarks is None else tuple((float(x), float(y)) for x, y in landmarks)
        return cls((x1, y1, max(1, x2 - x1), max(1, y2 - y1)), score, points)


class FaceDetector(Protocol):
    def detect(self, gray: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in `gray`'s pixels, largest first."""
        ...

    def detect_faces(self, gray: np.ndarray) -> list[DetectedFace]:
        """Faces with their landmarks where the detector gives them, largest first."""
        ...


@dataclass(frozen=True)
class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (Viola-Jones), as shipped in opencv-python-headless 4.x."""

    max_side: int = 480  # detect on a copy whose longer side is at most this
    scale_factor: float = 1.2
    min_neighbors: int = 5
    min_face_px: int = 24  # in the downscaled copy; the cascade's own window is 24 px

    def __post_init__(self) -> None:
        path = cv2.data.haarcascades + HAAR_FRONTAL_FACE
        if cv2.CascadeClassifier(path).empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_local", threading.local())

    def _classifier(self) -> cv2.CascadeClassifier:
        # detectMultiScale keeps scratch state in the classifier: one instance per thread.
        local = self._local  # type: ignore[attr-defined]
        if not hasattr(local, "classifier"):
            local.classifier = cv2.CascadeClassifier(self._path)  # type: ignore[attr-defined]
        return local.classifier

    def detect(self, gray: np.ndarray) -> list[Box]:
        height, width = gray.shape
        scale = min(1.0, self.max_side / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = gray if scale == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        found = self._classifier().detectMultiScale(
            cv2.equalizeHist(small),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_face_px, self.min_face_px),
        )
        boxes = [
            (int(round(x / scale)), int(round(y / scale)), int(round(w / scale)), int(round(h / scale)))
            for x, y, w, h in np.asarray(found).reshape(-1, 4)
        ]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)

    def detect_faces(self, gray: np.ndarray) -> list[DetectedFace]:
        """Faces without landmarks (the cascade gives none), largest first."""
        return [DetectedFace(box) for box in self.detect(gray)]


# A close-up is checked by the detector after padding: a face that fills the frame, cut at the chin or the
# brow, is one that cascades and window-based detectors miss, while with a quarter of the longer side added
# around it (the image's median grey) the face is whole again and about half the padded side, where
# detectors are at home. Tiny close-ups (a 25 px LFW face, a 48 px FER crop) are enlarged to a size the
# detector's smallest window can read. Measured on skimage's astronaut and matplotlib's grace_hopper cut at
# 0.8-1.5x the face box, five LFW faces and five LFW non-faces, coffee, rocket, chelsea, cat: both detectors
# find every face (Haar misses two without the padding) and nothing on the rest (tests/gateway/test_closeup.py).
CLOSEUP_PAD_FRACTION = 0.25
CLOSEUP_MIN_SIDE_PX = 160


def closeup_face(detector: FaceDetector, gray: np.ndarray) -> DetectedFace | None:
    """The face a close-up shows, in the close-up's pixels (largest if several), or None when there is none."""
    pad = max(1, round(CLOSEUP_PAD_FRACTION * max(gray.shape)))
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(np.median(gray)))
    scale = max(1.0, CLOSEUP_MIN_SIDE_PX / max(padded.shape))
    if scale > 1.0:
        padded = cv2.resize(padded, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    found = detector.detect_faces(padded)
    if not found:
        return None
    x, y, w, h = found[0].box
    height, width = gray.shape
    left, top = max(0, round(x / scale) - pad), max(0, round(y / scale) - pad)
    right, bottom = min(width, round((x + w) / scale) - pad), min(height, round((y + h) / scale) - pad)
    return DetectedFace((left, top, max(1, right - left), max(1, bottom - top)), found[0].score)

"""MTCNN face detection (Zhang et al. 2016) in the gateway: our cascade around three exported networks.

The networks (`pipelines/mtcnn.py`, exported to ONNX by the `detector` DVC stage) run in OpenCV's DNN module,
so the gateway stays free of torch. Everything between them is here: the image pyramid, P-Net's window
proposals, non-maximum suppression, box regression, R-Net/O-Net crops, landmarks. The pyramid starts at a
minimum face size relative to the image (selfie faces are large), which bounds the cost: P-Net's work is about
twice the first pyramid level's pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gateway.alignment import Registration, register
from gateway.boxes import nms, regress, square
from gateway.detection import DetectedFace

PNET_WINDOW, PNET_STRIDE = 12, 2
RNET_SIZE, ONET_SIZE = 24, 48
NETWORK_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
# Stage thresholds of the reference implementation for P-Net and R-Net; O-Net's is calibrated
# (`bench/detection.py --calibrate`, see the README's detection section).
PNET_THRESHOLD, RNET_THRESHOLD, ONET_THRESHOLD = 0.6, 0.7, 0.8143
# Haar-style framing of O-Net's boxes (`gateway.alignment.register`), fitted by `bench/detection.py --calibrate`
# on the calibration set's upright faces that both detectors find; see the README's detection section.
HAAR_REGISTRATION: Registration = (0.0162, -0.0045, 1.0879)
MAX_PROPOSALS = 200  # P-Net candidates kept for R-Net, best first: bounds the cost on busy images


def pyramid_scales(height: int, width: int, min_face_px: float, step: float) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from `min_face_px` up to the whole image."""
    scale = PNET_WINDOW / min_face_px
    scales: list[float] = []
    while min(height, width) * scale >= PNET_WINDOW:
        scales.append(scale)
        scale *= step
    return scales


def proposals(probability: np.ndarray, offsets: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net's windows scoring at least `threshold` as rows (x1, y1, x2, y2, score, 4 offsets) in image pixels."""
    rows, cols = np.nonzero(probability >= threshold)
    x1, y1 = cols * PNET_STRIDE / scale, rows * PNET_STRIDE / scale
    size = PNET_WINDOW / scale
    found = [x1, y1, x1 + size, y1 + size, probability[rows, cols]] + [offsets[k, rows, cols] for k in range(4)]
    return np.stack(found, axis=1).astype(np.float32) if rows.size else np.zeros((0, 9), np.float32)


def to_blob(batch: np.ndarray) -> np.ndarray:
    """uint8 N x H x W (gray) or N x H x W x 3 (RGB) -> N x 3 x H x W float32 scaled as MTCNN was trained."""
    batch = batch[..., None] if batch.ndim == 3 else batch
    scaled = (batch.astype(np.float32) - 127.5) * (1.0 / 128.0)
    # A gray image goes to the RGB networks as three equal channels (broadcast, copied once).
    return np.ascontiguousarray(np.broadcast_to(scaled, (*batch.shape[:3], 3)).transpose(0, 3, 1, 2))


def crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box cut from the image (outside filled with black, as in training) and resized to size x size."""
    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, *rgb.shape[2:]), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.rint(boxes[:, :4]).astype(int)):
        if x2 <= x1 or y2 <= y1:
            continue
        patch = rgb[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)]
        if patch.size == 0:
            continue
        top, left = max(-y1, 0), max(-x1, 0)
        patch = cv2.copyMakeBorder(patch, top, max(y2 - height, 0), left, max(x2 - width, 0), cv2.BORDER_CONSTANT)
        shrinking = patch.shape[0] > size
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out


@dataclass(frozen=True)
class MtcnnDetector:
    """Three-stage cascade; faces smaller than `min_face_fraction` of the image's longer side are not looked for."""

    model_dir: Path
    min_face_fraction: float = 0.05
    min_face_px: int = 20  # never below this, whatever the image size
    max_side: int = 640  # detect on a copy whose longer side is at most this
    scale_step: float = 0.709  # between pyramid levels (the paper's)
    thresholds: tuple[float, float, float] = (PNET_THRESHOLD, RNET_THRESHOLD, ONET_THRESHOLD)
    registration: Registration | None = HAAR_REGISTRATION  # None: O-Net's own boxes
    _models: tuple[bytes, ...] = field(init=False, repr=False)
    _local: threading.local = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [name for name in NETWORK_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"MTCNN networks {missing} not in {self.model_dir}: run `dvc repro detector`")
        object.__setattr__(self, "_models", tuple((self.model_dir / name).read_bytes() for name in NETWORK_FILES))
        object.__setattr__(self, "_local", threading.local())
        self._nets()  # a bad file fails here, at start-up, not on the first photo

    def _nets(self) -> tuple[cv2.dnn.Net, ...]:
        # A cv2.dnn.Net keeps its buffers between calls: one set per thread.
        if not hasattr(self._local, "nets"):
            self._local.nets = tuple(cv2.dnn.readNetFromONNX(np.frombuffer(m, np.uint8)) for m in self._models)
        return self._local.nets

    def detect_faces(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces in a grayscale (H x W) or RGB (H x W x 3) uint8 image, largest first, in its pixels."""
        rgb = image  # or gray: it stays one channel through the pyramid and the crops; to_blob() repeats it
        height, width = rgb.shape[:2]
        shrink = min(1.0, self.max_side / max(height, width))
        if shrink < 1.0:
            size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        min_face = max(float(self.min_face_px), self.min_face_fraction * max(rgb.shape[:2]))
        boxes = self._propose(rgb, min_face)
        boxes = self._refine(rgb, boxes)
        boxes, landmarks = self._output(rgb, boxes)
        if self.registration is not None and len(boxes):
            boxes = np.concatenate([register(boxes[:, :4], self.registration), boxes[:, 4:]], axis=1)
        faces = [DetectedFace.from_corners(b[:4] / shrink, float(b[4]), points / shrink)
                 for b, points in zip(boxes, landmarks, strict=True)]  # fmt: skip
        return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)

    def detect(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h), largest first."""
        return [face.box for face in self.detect_faces(gray)]

    def _propose(self, rgb: np.ndarray, min_face: float) -> np.ndarray:
        pnet = self._nets()[0]
        height, width = rgb.shape[:2]
        found = []
        first: np.ndarray | None = None
        for scale in pyramid_scales(height, width, min_face, self.scale_step):
            size = (max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale))))
            # Levels after the first are resized from it, not from the (larger) image.
            level = cv2.resize(rgb if first is None else first, size, interpolation=cv2.INTER_AREA)
            first = level if first is None else first
            pnet.setInput(to_blob(level[None]))
            probability, offsets = pnet.forward(["probability", "offsets"])
            candidates = proposals(probability[0], offsets[0], scale, self.thresholds[0])
            found.append(candidates[nms(candidates[:, :4], candidates[:, 4], 0.5)])
        boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)][:MAX_PROPOSALS]
        return np.concatenate([square(regress(boxes[:, :4], boxes[:, 5:9])), boxes[:, 4:5]], axis=1)

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if not len(boxes):
            return boxes
        rnet = self._nets()[1]
        rnet.setInput(to_blob(crops(rgb, boxes, RNET_SIZE)))
        probability, offsets = rnet.forward(["probability", "offsets"])
        keep = probability.reshape(-1) >= self.thresholds[1]
        boxes, offsets, scores = boxes[keep], offsets.reshape(-1, 4)[keep], probability.reshape(-1)[keep]
        kept = nms(boxes[:, :4], scores, 0.7)
        return np.concatenate([square(regress(boxes[kept, :4], offsets[kept])), scores[kept, None]], axis=1)

    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(boxes):
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        onet = self._nets()[2]
        onet.setInput(to_blob(crops(rgb, boxes, ONET_SIZE)))
        probability, offsets, points = (np.asarray(a) for a in onet.forward(["probability", "offsets", "landmarks"]))
        keep = probability.reshape(-1) >= self.thresholds[2]
        boxes, scores = boxes[keep], probability.reshape(-1)[keep]
        points = points.reshape(-1, 2, 5)[keep].transpose(0, 2, 1)  # N x 5 x (x, y), fractions of the crop box
        side = (boxes[:, 2:4] - boxes[:, 0:2])[:, None, :]
        landmarks = boxes[:, None, 0:2] + points * side
        refined = regress(boxes[:, :4], offsets.reshape(-1, 4)[keep])
        kept = nms(refined, scores, 0.7, mode="min")
        return np.concatenate([refined[kept], scores[kept, None]], axis=1), landmarks[kept]

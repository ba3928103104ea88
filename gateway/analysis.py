"""From uploaded bytes to per-face emotion probabilities: decode, detect, crop, one batched Triton call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from starlette.concurrency import run_in_threadpool

from gateway.alignment import aligned_crop
from gateway.detection import DetectedFace, FaceDetector, closeup_face
from gateway.errors import NoFaceInCloseUpError
from gateway.imaging import Box, decode_grayscale, whole_image_box
from gateway.metrics import GatewayMetrics
from gateway.schemas import UNCERTAIN, FaceResult
from gateway.triton import ModelInfo, TritonClassifier


class Mode(StrEnum):
    photo = "photo"  # a photo: find every face
    face = "face"  # already a face crop: classify the whole image
    closeup = "closeup"  # a close-up of one face: classify the whole image once the detector has seen a face in it


@dataclass
class Analysis:
    boxes: list[Box]
    probabilities: np.ndarray  # faces x labels, same order as boxes (largest face first)
    model: ModelInfo
    threshold: float = 0.0  # faces whose confidence is below it are 'uncertain'
    timings_ms: dict[str, float] = field(default_factory=dict)
    landmarks: list[tuple[tuple[float, float], ...] | None] = field(default_factory=list)  # per box, when known

    def faces(self) -> list[FaceResult]:
        marks = self.landmarks or [None] * len(self.boxes)
        return [face_result(b, p, self.model.labels, self.threshold, m)
                for b, p, m in zip(self.boxes, self.probabilities, marks, strict=True)]  # fmt: skip


def abstain_threshold(model: ModelInfo, override: float | None) -> tuple[float, str]:
    """The threshold in force and where it comes from: the setting, else the model's own, else none (0)."""
    if override is not None:
        return override, "setting"
    if model.abstain_threshold is not None:
        return model.abstain_threshold, "model"
    return 0.0, "none"


def _locate(
    data: bytes, mode: Mode, detector: FaceDetector, max_pixels: int
) -> tuple[np.ndarray, list[DetectedFace], dict[str, float]]:
    """CPU-bound part (runs in a worker thread): decode, then find the faces."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    gray = decode_grayscale(data, max_pixels)
    timings["decode"] = time.perf_counter() - started
    started = time.perf_counter()
    if mode is Mode.photo:
        found = detector.detect_faces(gray)
    else:
        if mode is Mode.closeup and closeup_face(detector, gray) is None:
            raise NoFaceInCloseUpError(
                "the detector found no face in the close-up (mode=closeup): send a photo of a face, or mode=photo"
            )
        found = [DetectedFace(whole_image_box(gray))]
    timings["detect"] = time.perf_counter() - started
    return gray, found, timings


async def analyse(
    data: bytes,
    mode: Mode,
    detector: FaceDetector,
    triton: TritonClassifier,
    metrics: GatewayMetrics,
    max_pixels: int,
    threshold_override: float | None = None,
    align: bool = True,
) -> Analysis:
    """Classify every face of an image in one batched request; no face -> an empty analysis.

    With `align`, faces whose detector gave landmarks are turned upright on their eyes before the crop.
    """
    try:
        gray, found, timings = await run_in_threadpool(_locate, data, mode, detector, max_pixels)
    except NoFaceInCloseUpError:
        metrics.images_without_face.inc()
        raise
    boxes = [face.box for face in found]
    model = await triton.model_info()
    threshold = 0.0
    probabilities = np.empty((0, len(model.labels)), dtype=np.float32)
    if model.max_batch_size:
        found = found[: model.max_batch_size]  # the largest faces; one request must fit one batch
        boxes = boxes[: model.max_batch_size]
    if boxes:
        started = time.perf_counter()
        _, height, width = model.input_shape
        margin = 0.0 if mode is not Mode.photo else model.crop_margin  # the registration the weights expect
        # Without landmarks (Haar, mode=face or closeup) or with `align` off, aligned_crop is crop_to_fer.
        size = (height, width)
        faces = np.stack([aligned_crop(gray, f.box, f.landmarks if align else None, size, margin) for f in found])
        faces = faces[:, None]
        timings["preprocess"] = time.perf_counter() - started
        started = time.perf_counter()
        probabilities, model = await triton.classify(faces)  # N x 1 x H x W in, one request
        timings["infer"] = time.perf_counter() - started
        threshold, _ = abstain_threshold(model, threshold_override)  # of the version that answered
        for row, face in zip(probabilities, faces, strict=True):
            best = int(np.argmax(row))
            metrics.predictions.labels(emotion=model.labels[best]).inc()
            uncertain = bool(row[best] < threshold)
            metrics.answers.labels(answer=UNCERTAIN if uncertain else model.labels[best]).inc()
            if uncertain:
                metrics.abstentions.inc()
            metrics.confidence.observe(float(row[best]))
            metrics.face_brightness.observe(float(face.mean()) / 255.0)
            metrics.face_contrast.observe(float(face.std()) / 255.0)
    else:
        metrics.images_without_face.inc()
    metrics.faces_per_image.observe(len(boxes))
    metrics.observe_model(model.name, model.version, model.labels, model.metadata)
    for stage, seconds in timings.items():
        metrics.stage_duration.labels(stage=stage).observe(seconds)
    timings_ms = {k: round(v * 1000.0, 3) for k, v in timings.items()}
    return Analysis(boxes, probabilities, model, threshold, timings_ms, [face.landmarks for face in found])


def face_result(
    box: Box,
    probabilities: np.ndarray,
    labels: tuple[str, ...],
    threshold: float = 0.0,
    landmarks: tuple[tuple[float, float], ...] | None = None,
) -> FaceResult:
    """One face's answer: its box, the most probable label (or 'uncertain') and every label's probability."""
    best = int(np.argmax(probabilities))
    uncertain = bool(probabilities[best] < threshold)
    return FaceResult(
        box=box,
        emotion=UNCERTAIN if uncertain else labels[best],
        uncertain=uncertain,
        most_likely=labels[best],
        confidence=float(probabilities[best]),
        probabilities={label: float(p) for label, p in zip(labels, probabilities, strict=True)},
        landmarks=None if landmarks is None else [(x, y) for x, y in landmarks],
    )

"""The model and the inputs of the serving bench: a seeded TorchScript, a 640x480 selfie and its face crop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from gateway.detection import HaarFaceDetector
from gateway.imaging import crop_to_fer, decode_grayscale
from pipelines.inference import ServingModel, script
from pipelines.labels import LABELS
from pipelines.model import build_model


def build_torchscript(name: str, out: Path, seed: int = 0) -> Path:
    """The serving TorchScript of network `name` with untrained, seeded weights (speed does not need training)."""
    torch.manual_seed(seed)
    serving = ServingModel(build_model(name).eval(), list(LABELS), mean=0.5, std=0.25)
    script(serving).save(str(out))
    return out


@dataclass(frozen=True)
class Inputs:
    face: np.ndarray  # 1 x 1 x S x S uint8: the face the selfie path classifies, at the model's input size
    face_png: bytes
    selfie_jpeg: bytes  # 640 x 480


def model_input_size(model: torch.jit.ScriptModule) -> int:
    """The side of the faces a serving TorchScript reads (files exported before 2026-11 read 48x48)."""
    return int(getattr(model, "input_size", 48))


def make_inputs(size: int, margin: float) -> Inputs:
    """A 640x480 selfie from scikit-image's astronaut photo, and its face cropped as the gateway crops it."""
    from skimage import data

    photo = cv2.resize(data.astronaut(), (640, 640), interpolation=cv2.INTER_AREA)[:480]  # keep the head
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    gray = decode_grayscale(jpeg.tobytes(), 10**8)
    boxes = HaarFaceDetector().detect(gray)
    if not boxes:
        raise RuntimeError("the Haar detector found no face in the selfie")
    face = crop_to_fer(gray, boxes[0], (size, size), margin)
    ok, png = cv2.imencode(".png", face)
    assert ok
    return Inputs(face[None, None], png.tobytes(), jpeg.tobytes())

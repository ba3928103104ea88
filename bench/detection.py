"""Detection benchmark: Haar and MTCNN side by side on real faces composed at known boxes (bench/faces.py).

Both detectors see the same 640x480 grayscale images (what the gateway gives them), in turn, image by image.
Per detector: recall at IoU >= 0.5 (all, upright, +-5-15 deg, +-20-30 deg, by face size), false positives per
image (all images, and backgrounds alone), landmark error (mean distance to the measured landmarks over the
inter-ocular distance), p50 wall latency and CPU ms per photo. `--calibrate` instead runs the calibration set
(other seeds and backgrounds) to choose O-Net's threshold within Haar's false-positive rate and to fit the
Haar-style box registration. `--alignment` adds the served-prediction agreement under rotation
(bench/alignment.py).

    python bench/detection.py [--faces 300] [--seed 0] [--models models/detector] [--json FILE]
                              [--calibrate] [--alignment [--emotion-model model.pt]]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.faces import Case, cases  # noqa: E402
from emotorch.logs import configure_logging
from gateway.alignment import fit_registration, register  # noqa: E402
from gateway.boxes import iou_xywh  # noqa: E402
from gateway.calibration import calibrate_threshold  # noqa: E402
from gateway.detection import DetectedFace, FaceDetector, HaarFaceDetector  # noqa: E402
from gateway.mtcnn import MtcnnDetector  # noqa: E402
from gateway.settings import Settings  # noqa: E402

logger = logging.getLogger("bench.detection")
SMALL_FACES = 0.05  # the bench composes faces from 5 % of the image width
ROOT = Path(__file__).resolve().parents[1]
MATCH_IOU = 0.5
CURVE = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)  # O-Net thresholds shown by --calibrate


def model_dir(path: Path, scratch: Path) -> Path:
    """`path` when it holds the exported networks, else a fresh export into `scratch` (as the DVC stage does)."""
    if all((path / f).is_file() for f in ("pnet.onnx", "rnet.onnx", "onet.onnx")):
        return path
    from pipelines.detector_export import export_all

    logger.info("no networks in %s: exporting them into %s", path, scratch)
    export_all(scratch)
    return scratch


Timed = tuple[list[DetectedFace], float, float]  # faces, wall ms, CPU ms of one image


def run(detectors: dict[str, FaceDetector], images: list[Case]) -> dict[str, list[Timed]]:
    """Every detector on every image, in turn image by image: (faces, wall ms, CPU ms) per image."""
    out: dict[str, list[Timed]] = {name: [] for name in detectors}
    for case in images[:3]:  # warm-up: per-thread networks, allocations
        for detector in detectors.values():
            detector.detect_faces(case.gray)
    for i, case in enumerate(images):
        names = list(detectors) if i % 2 == 0 else list(reversed(detectors))  # neither always goes first
        for name in names:
            wall, cpu = time.perf_counter(), time.process_time()
            faces = detectors[name].detect_faces(case.gray)
            out[name].append((faces, (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3))
    return out


def match(case: Case, faces: list[DetectedFace]) -> tuple[DetectedFace | None, int]:
    """The detection that found the case's face (best IoU >= 0.5) and the number of false positives."""
    if case.box is None:
        return None, len(faces)
    ious = [iou_xywh(case.box, f.box) for f in faces]
    best = int(np.argmax(ious)) if ious else -1
    hit = faces[best] if best >= 0 and ious[best] >= MATCH_IOU else None
    return hit, len(faces) - (hit is not None)


def _recall(found: list[bool]) -> float | None:
    return round(float(np.mean(found)), 4) if found else None


def landmark_error(case: Case, face: DetectedFace) -> float | None:
    """Mean distance of the five landmarks to the measured ones, over the measured inter-ocular distance."""
    if case.landmarks is None or face.landmarks is None:
        return None
    inter_ocular = float(np.linalg.norm(case.landmarks[1] - case.landmarks[0]))
    return float(np.linalg.norm(np.asarray(face.landmarks) - case.landmarks, axis=1).mean()) / inter_ocular


def summarise(images: list[Case], results: list[Timed]) -> dict[str, Any]:
    """The figures of one detector."""
    found: dict[str, list[bool]] = {k: [] for k in ("all", "upright", "mild", "tilted", "small", "medium", "large")}
    false_positives, background_fp, errors = 0, 0, []
    for case, (faces, _, _) in zip(images, results, strict=True):
        hit, fp = match(case, faces)
        false_positives += fp
        if case.box is None:
            background_fp += fp
            continue
        tilt = abs(case.angle_deg)
        size = "small" if case.face_fraction < 0.1 else "medium" if case.face_fraction < 0.25 else "large"
        kind = "upright" if tilt == 0 else "mild" if tilt < 20 else "tilted"
        for key in ("all", kind, size):
            found[key].append(hit is not None)
        error = landmark_error(case, hit) if hit is not None else None
        if error is not None:
            errors.append(error)
    n_backgrounds = sum(case.box is None for case in images)
    walls, cpus = [r[1] for r in results], [r[2] for r in results]
    return {
        "recall": _recall(found["all"]), "recall_upright": _recall(found["upright"]),
        "recall_mild": _recall(found["mild"]), "recall_tilted": _recall(found["tilted"]),
        "recall_small": _recall(found["small"]), "recall_medium": _recall(found["medium"]),
        "recall_large": _recall(found["large"]),
        "false_positives_per_image": round(false_positives / len(images), 4),
        "false_positives_per_background": round(background_fp / max(1, n_backgrounds), 4),
        "landmark_error": round(float(np.mean(errors)), 4) if errors else None,
        "landmark_cases": len(errors),
        "p50_ms": round(statistics.median(walls), 2), "cpu_ms_per_photo": round(float(np.mean(cpus)), 2),
    }  # fmt: skip


def calibrate(mtcnn: MtcnnDetector, images: list[Case], max_fp_per_image: float) -> dict[str, Any]:
    """O-Net's threshold within the false-positive budget (and Haar's rate), and the Haar-style registration."""
    permissive = replace(mtcnn, thresholds=(*mtcnn.thresholds[:2], 0.5), registration=None)
    results = run({"haar": HaarFaceDetector(), "mtcnn": permissive}, images)
    haar = summarise(images, results["haar"])
    raw, reference = [], []
    for case, (haar_faces, _, _), (faces, _, _) in zip(images, results["haar"], results["mtcnn"], strict=True):
        haar_hit, _ = match(case, haar_faces)
        hit, _ = match(case, faces)
        if case.angle_deg == 0 and haar_hit is not None and hit is not None:
            raw.append(_corners(hit.box))
            reference.append(_corners(haar_hit.box))
    registration = fit_registration(np.array(raw, float), np.array(reference, float))
    scores, is_face, face_ids = [], [], []
    for i, (case, (faces, _, _)) in enumerate(zip(images, results["mtcnn"], strict=True)):
        registered = [replace(f, box=_box(register(np.array([_corners(f.box)], float), registration)[0]))
                      for f in faces]  # fmt: skip
        hit, _ = match(case, registered)
        for face in registered:
            scores.append(face.score)
            is_face.append(face is hit)
            face_ids.append(i if face is hit else -1)
    n_faces = sum(case.box is not None for case in images)
    chosen = calibrate_threshold(np.array(scores), np.array(is_face), np.array(face_ids), n_faces, len(images),
                                 min(max_fp_per_image, haar["false_positives_per_image"]))  # fmt: skip
    curve = {f"{t:g}": calibrate_curve_point(np.array(scores), np.array(is_face), np.array(face_ids), t, n_faces,
                                             len(images)) for t in CURVE}  # fmt: skip
    return {"registration": [round(v, 4) for v in registration], "registration_pairs": len(raw), "curve": curve,
            "onet_threshold": round(chosen.threshold, 4), "false_positives_per_image": chosen.false_positives_per_image,
            "recall": round(chosen.recall, 4), "budget_fp_per_image": max_fp_per_image, "haar": haar}  # fmt: skip


def calibrate_curve_point(
    scores: np.ndarray, is_face: np.ndarray, face_ids: np.ndarray, threshold: float, n_faces: int, n_images: int
) -> dict[str, float]:
    """Recall and false positives per image at one threshold."""
    passing = scores >= threshold
    recall = len(np.unique(face_ids[passing & is_face])) / n_faces
    return {"recall": round(recall, 4), "fp_per_image": round(np.count_nonzero(passing & ~is_face) / n_images, 4)}


def _corners(box: tuple[int, int, int, int]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def _box(corners: np.ndarray) -> tuple[int, int, int, int]:
    return DetectedFace.from_corners(corners, 1.0).box


def render(result: dict[str, Any]) -> str:
    """The README's table: one row per detector."""
    lines = ["| detector | recall | upright | +-5-15 deg | +-20-30 deg | faces 5-10 % | 10-25 % | 25-60 % | FP / image "
             "| FP / background | landmark error | p50 ms | CPU ms / photo |", "|---" * 13 + "|"]  # fmt: skip
    keys = ("recall", "recall_upright", "recall_mild", "recall_tilted", "recall_small", "recall_medium",
            "recall_large", "false_positives_per_image", "false_positives_per_background", "landmark_error",
            "p50_ms", "cpu_ms_per_photo")  # fmt: skip
    for name, figures in result["detectors"].items():
        cells = ["-" if figures[k] is None else f"{figures[k]:g}" for k in keys]
        lines.append(f"| {name}{' (default)' if name == result['default'] else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=300, help="composed face images (plus every background)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "detector", help="exported MTCNN networks")
    parser.add_argument("--calibrate", action="store_true", help="choose O-Net's threshold and the registration")
    parser.add_argument("--max-fp-per-image", type=float, default=0.005,
                        help="--calibrate: false-positive budget (one false face in 200 photos)")
    parser.add_argument("--alignment", action="store_true", help="add the prediction agreement under rotation")
    parser.add_argument("--emotion-model", type=Path, default=None, help="TorchScript model for --alignment")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    configure_logging()
    with tempfile.TemporaryDirectory() as scratch:
        # The gateway's configuration (its default smallest face), and the cascade's reach down to 5 % faces.
        mtcnn = MtcnnDetector(model_dir(args.models, Path(scratch)), min_face_fraction=Settings().min_face_fraction)
        if args.calibrate:
            calibration_set = cases(args.faces, args.seed, calibration=True)
            result: dict[str, Any] = calibrate(mtcnn, calibration_set, args.max_fp_per_image)
            logger.info("%s", json.dumps(result, indent=2))
        else:
            images = cases(args.faces, args.seed)
            detectors: dict[str, FaceDetector] = {"haar": HaarFaceDetector(), "mtcnn": mtcnn}
            if mtcnn.min_face_fraction > SMALL_FACES:
                detectors[f"mtcnn, faces from {SMALL_FACES:.0%}"] = replace(mtcnn, min_face_fraction=SMALL_FACES)
            results = run(detectors, images)
            result = {"detectors": {name: summarise(images, results[name]) for name in detectors},
                      "default": Settings().detector, "images": len(images), "faces": args.faces,
                      "seed": args.seed}  # fmt: skip
            logger.info("%s", render(result))
            if args.alignment:
                from bench.alignment import agreement, render_agreement

                result["alignment"] = agreement(mtcnn, args.emotion_model)
                logger.info("%s", render_agreement(result["alignment"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

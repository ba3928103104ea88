"""Evaluate stage: the only reader of the test split. Calibration, test metrics and behavioural checks.

The temperature is fitted on validation logits (never on test); the test split is scored once, before and
after temperature scaling. Behavioural checks: agreement of predictions under a horizontal flip and under small
brightness/contrast changes (on validation faces), and per-class recall on a fixed synthetic suite (strong,
clean expressions that any useful model must get right).

Weights imported as they are (pretrained elsewhere, 0 epochs here) were not trained on this table: fitting a
temperature or an abstention threshold to it would describe the table's domain, not the weights'. They keep
the authors' softmax (temperature 1) and the threshold set in `evaluate.imported_abstain_threshold`; their
test figures are reported as a domain-shifted check.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from pipelines.inference import load_checkpoint, predict_logits, to_tensor
from pipelines.labels import FER2013_CROP_MARGIN, IMAGE_SIZE, LABELS
from pipelines.logs import configure_logging
from pipelines.plots import plot_confusion, plot_reliability
from pipelines.pretrained import SCRATCH
from pipelines.scoring import (
    Abstention,
    abstention_on,
    abstention_threshold,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    per_class_scores,
    reliability,
    softmax,
)
from pipelines.synthetic import GeneratorConfig, generate_faces
from pipelines.tables import load_split, resize_faces
from pipelines.tracking import client, ensure_run, evaluation_metrics, file_sha256, use_fluent_api

logger = logging.getLogger(__name__)

SUITE_SEED = 20_260_101
SUITE_PER_CLASS = 40
ABSTAIN_TARGET_PRECISION = 0.9  # params.yaml evaluate.abstain_target_precision when not given
IMPORTED_ABSTAIN_THRESHOLD = 0.4  # params.yaml evaluate.imported_abstain_threshold when not given


def trained_on_this_data(meta: dict[str, Any]) -> bool:
    """Whether the checkpoint's weights were fitted to this project's table (from scratch or fine-tuned)."""
    return (meta.get("weights") or {}).get("name", SCRATCH) == SCRATCH or meta.get("epochs_trained", 1) > 0


def logits_of(net: torch.nn.Module, images: np.ndarray, mean: float, std: float) -> np.ndarray:
    return predict_logits(net, to_tensor(images, mean, std)).numpy()


def behavioural_checks(net: torch.nn.Module, images: np.ndarray, mean: float, std: float) -> dict[str, Any]:
    """Agreement rates under perturbations that must not change an expression, and recall on a clean suite."""
    base = logits_of(net, images, mean, std).argmax(1)
    flipped = logits_of(net, np.ascontiguousarray(images[:, :, ::-1]), mean, std).argmax(1)
    f = images.astype(np.float64)
    brighter = np.clip(f * 1.1 + 10, 0, 255).astype(np.uint8)
    lower_contrast = np.clip((f - f.mean()) * 0.85 + f.mean(), 0, 255).astype(np.uint8)
    photometric = [logits_of(net, x, mean, std).argmax(1) for x in (brighter, lower_contrast)]

    # The fixed suite: clear expressions (intensity 0.8-1), no pose or noise beyond the mild defaults.
    cfg = GeneratorConfig(min_intensity=0.8, max_intensity=1.0, expression_jitter=0.05, max_noise_sigma=3.0)
    suite = list(generate_faces(SUITE_PER_CLASS * len(LABELS), seed=SUITE_SEED, cfg=cfg))
    suite_images = resize_faces(np.stack([face for _, face in suite]), images.shape[1])
    suite_labels = np.array([label for label, _ in suite])
    suite_pred = logits_of(net, suite_images, mean, std).argmax(1)
    suite_recall = per_class_scores(confusion_matrix(suite_labels, suite_pred, len(LABELS)))
    recall_by_label = {label: s.recall for label, s in zip(LABELS, suite_recall, strict=True)}
    return {
        "flip_agreement": float((base == flipped).mean()),
        "photometric_agreement": float(np.mean([(base == p).mean() for p in photometric])),
        "suite_recall": recall_by_label,
        "suite_min_recall": min(recall_by_label.values()),
    }


# The Haar box of the face in skimage's astronaut photo (what OpenCV's frontal cascade finds at full size).
ASTRONAUT_FACE_BOX = (177, 66, 95, 95)


def _square_crop(gray: np.ndarray, box: tuple[int, int, int, int], margin: float, size: int) -> np.ndarray:
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    crop = gray[max(y0, 0) : y0 + round(side), max(x0, 0) : x0 + round(side)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def real_face_checks(net: torch.nn.Module, mean: float, std: float, size: int, margin: float) -> dict[str, Any]:
    """Label-free checks on real photos shipped in scikit-image: 100 LFW faces (public figures, mostly frontal)
    and the astronaut portrait (a broad smile). Mirror and lighting stability, and the astronaut's answer."""
    import skimage.data

    lfw = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # the first 100 are faces, 25x25
    faces = resize_faces(lfw, size)
    base = logits_of(net, faces, mean, std).argmax(1)
    flipped = logits_of(net, np.ascontiguousarray(faces[:, :, ::-1]), mean, std).argmax(1)
    f = faces.astype(np.float64)
    brighter = np.clip(f * 1.1 + 10, 0, 255).astype(np.uint8)
    darker = np.clip(f * 0.9 - 10, 0, 255).astype(np.uint8)
    photometric = [logits_of(net, x, mean, std).argmax(1) for x in (brighter, darker)]
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    crop = _square_crop(astronaut, ASTRONAUT_FACE_BOX, margin, size)
    probs = softmax(logits_of(net, crop[None], mean, std))[0]
    return {
        "lfw_faces": len(faces),
        "lfw_flip_agreement": float((base == flipped).mean()),
        "lfw_photometric_agreement": float(np.mean([(base == p).mean() for p in photometric])),
        "lfw_answers": {label: int((base == i).sum()) for i, label in enumerate(LABELS)},
        "astronaut": {"answer": LABELS[int(probs.argmax())], "confidence": float(probs.max())},
    }


def evaluate(
    checkpoint: Path,
    table: Path,
    abstain_target_precision: float = ABSTAIN_TARGET_PRECISION,
    imported_abstain_threshold: float = IMPORTED_ABSTAIN_THRESHOLD,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All evaluation figures, and the raw material for plots (confusion pairs, reliability tables).

    Weights trained on this table: the abstention threshold is chosen on validation predictions after
    temperature scaling (what the served model outputs) and then checked once on test. Imported weights: see
    the module docstring.
    """
    net, meta = load_checkpoint(checkpoint)
    mean, std, size = meta["mean"], meta["std"], meta.get("input_size", IMAGE_SIZE)
    val_images, val_labels = load_split(table, "validation", size)
    test_images, test_labels = load_split(table, "test", size)  # read once, here and nowhere else

    val_logits = logits_of(net, val_images, mean, std)
    fitted_here = trained_on_this_data(meta)
    temperature, abstention, chosen = _calibration(
        val_logits, val_labels, fitted_here, abstain_target_precision, imported_abstain_threshold
    )
    test_logits = logits_of(net, test_images, mean, std)
    before, after = softmax(test_logits), softmax(test_logits, temperature)
    test_precision, test_coverage = abstention_on(after, test_labels, abstention.threshold)
    predicted = before.argmax(1)  # temperature scaling never changes the argmax
    confusion = confusion_matrix(test_labels, predicted, len(LABELS))
    scores = per_class_scores(confusion)
    metrics = {
        "test_rows": len(test_labels),
        "accuracy": float((predicted == test_labels).mean()),
        "macro_f1": macro_f1(confusion),
        "per_class_recall": {label: s.recall for label, s in zip(LABELS, scores, strict=True)},
        "per_class": {label: asdict(s) for label, s in zip(LABELS, scores, strict=True)},
        "temperature": temperature,
        "ece_before": expected_calibration_error(before, test_labels),
        "ece_after": expected_calibration_error(after, test_labels),
        "behaviour": behavioural_checks(net, val_images, mean, std),
        "real_faces": real_face_checks(net, mean, std, size, meta.get("crop_margin", FER2013_CROP_MARGIN)),
        "trained_on_this_data": fitted_here,
        "abstention": {
            "chosen": chosen,
            "target_precision": abstention.target_precision if fitted_here else None,
            "threshold": abstention.threshold,
            "target_reached": abstention.reached,
            "validation_precision": abstention.precision,
            "validation_coverage": abstention.coverage,
            "test_precision": test_precision,
            "test_coverage": test_coverage,
        },
    }
    return metrics, _plot_data(test_labels, predicted, before, after, confusion)


def _calibration(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    fitted_here: bool,
    abstain_target_precision: float,
    imported_abstain_threshold: float,
) -> tuple[float, Abstention, str]:
    """Temperature, abstention threshold and how it was chosen. Weights trained on this table: both fitted on
    validation; imported weights: T = 1 (the authors' softmax) and the configured threshold."""
    if fitted_here:
        temperature = fit_temperature(val_logits, val_labels)
        abstention = abstention_threshold(softmax(val_logits, temperature), val_labels, abstain_target_precision)
        chosen = (f"the lowest confidence at which the validation predictions reach precision "
                  f"{abstain_target_precision:g} after temperature scaling")  # fmt: skip
        return temperature, abstention, chosen
    precision, coverage = abstention_on(softmax(val_logits), val_labels, imported_abstain_threshold)
    abstention = Abstention(abstain_target_precision, imported_abstain_threshold, precision, coverage, False)
    chosen = (f"set by evaluate.imported_abstain_threshold ({imported_abstain_threshold:g}): the weights were "
              "not trained on this table, so no threshold is fitted to it (see the README)")  # fmt: skip
    return 1.0, abstention, chosen


def _plot_data(
    test_labels: np.ndarray, predicted: np.ndarray, before: np.ndarray, after: np.ndarray, confusion: np.ndarray
) -> dict[str, Any]:
    """The raw material of the plots: confusion pairs, reliability tables (before/after scaling), the matrix."""
    return {
        "confusion": [
            {"actual": LABELS[a], "predicted": LABELS[p]} for a, p in zip(test_labels, predicted, strict=True)
        ],
        "reliability": [{"calibration": "before", **row} for row in reliability(before, test_labels)]
        + [{"calibration": "after", **row} for row in reliability(after, test_labels)],
        "matrix": confusion.tolist(),
    }


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The few figures `dvc metrics show` prints (one short row in a 120-column terminal); eval.json keeps every
    figure, per class and per check."""
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "ece_before": metrics["ece_before"],
        "ece_after": metrics["ece_after"],
        "temperature": metrics["temperature"],
        "abstain_below": metrics["abstention"]["threshold"],  # confidence under which a face is "uncertain"
        "coverage": metrics["abstention"]["test_coverage"],  # share of test faces answered above it
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="eval.json to write (every figure)")
    parser.add_argument("--headline", type=Path, required=True, help="the headline figures' JSON (dvc metrics show)")
    parser.add_argument("--plots-dir", type=Path, required=True, help="folder for confusion/reliability CSVs")
    parser.add_argument("--params", type=Path, default=None, help="params.yaml (evaluate.abstain_target_precision)")
    args = parser.parse_args(argv)
    configure_logging()

    section: dict[str, Any] = {}
    if args.params is not None:
        section = yaml.safe_load(args.params.read_text()).get("evaluate", {})
    target = float(section.get("abstain_target_precision", ABSTAIN_TARGET_PRECISION))
    imported = float(section.get("imported_abstain_threshold", IMPORTED_ABSTAIN_THRESHOLD))
    metrics, plots = evaluate(args.checkpoint, args.table, target, imported)
    if metrics["trained_on_this_data"] and not metrics["abstention"]["target_reached"]:
        logger.warning("no confidence threshold reaches precision %.2f on validation: every face will be answered "
                       "'uncertain'", target)  # fmt: skip
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    _write_csv(plots["confusion"], args.plots_dir / "confusion.csv")
    _write_csv(plots["reliability"], args.plots_dir / "reliability.csv")
    per_class = [{"label": label, **values} for label, values in metrics["per_class"].items()]
    _write_csv(per_class, args.plots_dir / "per_class.csv")
    plot_confusion(plots["matrix"], args.plots_dir / "confusion.png")
    plot_reliability(plots["reliability"], args.plots_dir / "reliability.png")
    args.headline.write_text(json.dumps(headline(metrics), indent=2) + "\n")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    meta = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["meta"]
    run_id, _ = ensure_run(client(), file_sha256(args.checkpoint), meta, "evaluate")
    use_fluent_api()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(evaluation_metrics(metrics))
        for name in ("confusion.png", "per_class.csv", "reliability.csv", "reliability.png"):
            mlflow.log_artifact(str(args.plots_dir / name), artifact_path="evaluation")
    logger.info("test accuracy %.4f, macro-F1 %.4f, ECE %.4f -> %.4f at T=%.3f", metrics["accuracy"],
                metrics["macro_f1"], metrics["ece_before"], metrics["ece_after"], metrics["temperature"])  # fmt: skip


if __name__ == "__main__":
    main()

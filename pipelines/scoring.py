"""Classification and calibration metrics on numpy arrays (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_scores(confusion: np.ndarray) -> list[ClassScores]:
    """Precision, recall and F1 per class; 0 where a class is never predicted or never present."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [
        ClassScores(float(p), float(r), float(f), int(s))
        for p, r, f, s in zip(precision, recall, f1, actual, strict=True)
    ]


def macro_f1(confusion: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in the data: rare classes count as much as common ones."""
    scores = per_class_scores(confusion)
    present = [s.f1 for s in scores if s.support > 0]
    return float(np.mean(present)) if present else 0.0


def reliability(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (equal-width bins over [0, 1])."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table = []
    for b in range(bins):
        members = index == b
        if members.any():
            table.append(
                {
                    "bin": b,
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                    "count": int(members.sum()),
                }
            )
    return table


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the count-weighted mean |accuracy - confidence| over confidence bins."""
    table = reliability(probabilities, y_true, bins)
    n = sum(row["count"] for row in table)
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table) / max(n, 1))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(1, keepdims=True))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, iterations: int = 60) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (fit on validation, never test).

    The NLL is convex in beta = 1/T, with slope mean(E_p[z] - z_true) (p = softmax(beta * z)), increasing in
    beta: bisection on the slope's sign in log beta over [1e-3, 1e3] finds the minimum to float precision in
    milliseconds (an optimiser in torch imported its compiler stack for seconds per evaluate stage)."""
    z = np.asarray(logits, np.float64)
    z_true = z[np.arange(len(z)), np.asarray(y_true)]

    def slope(log_beta: float) -> float:
        p = softmax(z * np.exp(log_beta))
        return float(np.mean((p * z).sum(1) - z_true))

    lo, hi = np.log(1e-3), np.log(1e3)
    if slope(hi) <= 0:  # sharper is always better (every prediction right): the sharpest allowed
        return float(np.exp(-hi))
    if slope(lo) >= 0:
        return float(np.exp(-lo))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return float(np.exp(-(lo + hi) / 2))


@dataclass(frozen=True)
class Abstention:
    """Answer `uncertain` below `threshold`: the lowest confidence at which the kept predictions still reach
    the target precision (on the data it was chosen from), keeping as many predictions as possible."""

    target_precision: float
    threshold: float  # keep a prediction when its confidence >= threshold; 1.0+ keeps none
    precision: float | None  # of the kept predictions (None: none kept)
    coverage: float  # share of predictions kept
    reached: bool  # False: no threshold reaches the target; every prediction is reported as uncertain


def abstention_threshold(probabilities: np.ndarray, y_true: np.ndarray, target_precision: float) -> Abstention:
    """Choose the confidence threshold from labelled (validation) predictions.

    Sort predictions by confidence, highest first; the precision of the top n is the accuracy of the n most
    confident answers. The threshold is the confidence of the largest n whose precision is >= the target
    (cut only between distinct confidences, so equal confidences are kept or dropped together).
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == y_true
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    precision_at = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    # A cut after position n-1 is valid only where the next confidence is strictly lower (or at the end).
    valid = np.append(confidence[1:] < confidence[:-1], True)
    ok = np.flatnonzero(valid & (precision_at >= target_precision))
    if len(ok) == 0:
        return Abstention(target_precision, 1.0 + 1e-6, None, 0.0, False)
    n = int(ok[-1]) + 1
    return Abstention(target_precision, float(confidence[n - 1]), float(precision_at[n - 1]), n / len(correct), True)


def abstention_on(probabilities: np.ndarray, y_true: np.ndarray, threshold: float) -> tuple[float | None, float]:
    """(precision of the kept predictions, coverage) at a threshold, e.g. on the test split."""
    kept = probabilities.max(1) >= threshold
    if not kept.any():
        return None, 0.0
    return float((probabilities[kept].argmax(1) == y_true[kept]).mean()), float(kept.mean())

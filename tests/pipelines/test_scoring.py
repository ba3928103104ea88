from __future__ import annotations

import numpy as np
import pytest

from pipelines.scoring import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    per_class_scores,
    reliability,
    softmax,
)


def test_confusion_and_per_class_scores() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    confusion = confusion_matrix(y_true, y_pred, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = per_class_scores(confusion)
    assert scores[1].precision == pytest.approx(2 / 3) and scores[1].recall == 1.0
    assert scores[2].f1 == pytest.approx(2 / 3) and scores[0].support == 2
    assert macro_f1(confusion) == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))


def test_macro_f1_ignores_absent_classes_and_handles_never_predicted() -> None:
    confusion = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 0]), 4)
    scores = per_class_scores(confusion)
    assert scores[1].f1 == 0.0 and scores[3].support == 0
    assert macro_f1(confusion) == pytest.approx(np.mean([0.8, 0.0]))


def test_ece_of_perfectly_calibrated_and_overconfident_predictions() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    confidence = rng.uniform(0.4, 1.0, n)
    correct = rng.random(n) < confidence  # accuracy equals confidence: calibrated
    probabilities = np.stack([confidence, 1 - confidence], 1)
    y_true = np.where(correct, 0, 1)
    assert expected_calibration_error(probabilities, y_true) < 0.02
    overconfident = np.stack([np.full(n, 0.99), np.full(n, 0.01)], 1)
    assert expected_calibration_error(overconfident, y_true) > 0.2
    bins = reliability(probabilities, y_true)
    assert sum(b["count"] for b in bins) == n


def test_temperature_scaling_fixes_overconfidence() -> None:
    rng = np.random.default_rng(1)
    n, classes = 4000, 5
    y = rng.integers(0, classes, n)
    clean = rng.normal(0, 1, (n, classes))
    clean[np.arange(n), y] += 1.5  # calibrated-ish logits
    logits = clean * 4.0  # the same ranking, four times too confident
    temperature = fit_temperature(logits, y)
    assert 2.0 < temperature < 5.0  # undoes most of the 4x overconfidence
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits, temperature), y)
    assert after < before / 2
    assert (softmax(logits, temperature).argmax(1) == softmax(logits).argmax(1)).all()

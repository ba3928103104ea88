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


def test_abstention_threshold_keeps_the_most_predictions_that_reach_the_target() -> None:
    from pipelines.scoring import abstention_on, abstention_threshold

    # Confidences 0.95 .. 0.55 (top label 0); the 4th and 6th most confident answers are wrong.
    confidence = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.55])
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    y_true = np.array([0, 0, 0, 1, 0, 1])
    chosen = abstention_threshold(probabilities, y_true, target_precision=0.8)
    assert chosen.threshold == 0.6 and chosen.coverage == pytest.approx(5 / 6) and chosen.precision == 0.8
    assert chosen.reached
    assert abstention_threshold(probabilities, y_true, 1.0).threshold == 0.8  # the top three are all right
    assert abstention_on(probabilities, y_true, 0.8) == (1.0, 0.5)
    never = abstention_threshold(probabilities, np.ones(6, dtype=int), 0.5)  # every answer is wrong
    assert not never.reached and never.coverage == 0.0 and never.threshold > 1.0
    with pytest.raises(ValueError, match="target precision"):
        abstention_threshold(probabilities, y_true, 0.0)


def test_abstention_never_splits_equal_confidences() -> None:
    from pipelines.scoring import abstention_threshold

    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.55, 0.45]])
    y_true = np.array([0, 0, 1, 0])  # keeping one of the two 0.6 answers would give 100 %; both give 2/3
    assert abstention_threshold(probabilities, y_true, 0.9).threshold == 0.9


def test_the_fitted_temperature_is_the_nll_minimum() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 600)
    logits = rng.normal(0, 2, (600, 7))
    logits[np.arange(600), y] += 3 * rng.random(600)

    def nll(t: float) -> float:
        return float(-np.log(softmax(logits, t)[np.arange(600), y]).mean())

    temperature = fit_temperature(logits, y)
    assert nll(temperature) < min(nll(temperature * 1.01), nll(temperature / 1.01))
    everything_right = np.eye(7)[y] * 5.0
    assert fit_temperature(everything_right, y) == pytest.approx(1e-3)  # sharper is always better: the bound

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.recommendation import EMOTION_PRIOR, noisy_prediction, reference, regret_exponent, simulate, summary

ROOT = Path(__file__).resolve().parents[2]


def test_the_learning_policy_beats_the_static_map_and_its_regret_flattens() -> None:
    results, _ = simulate(rounds=2000, k=5, seed=3, eval_rounds=1000)
    assert results["emotorch"].ctr > results["static"].ctr > results["random"].ctr
    # After learning, on users it has not learned from, it still beats the map, and nothing beats the oracle.
    assert reference(results)["ctr_after"] > results["emotorch"].ctr_after > results["static"].ctr_after
    figures = summary(results, 2000)
    assert "oracle" not in figures
    assert figures["emotorch"]["regret_last_window"] < 0.8 * figures["emotorch"]["regret_first_window"]  # type: ignore[operator]
    # The static map and random do not learn: their regret grows linearly.
    assert figures["static"]["regret_last_window"] > 0.85 * figures["static"]["regret_first_window"]  # type: ignore[operator]
    assert figures["static"]["regret_exponent"] > 0.95 > figures["emotorch"]["regret_exponent"]  # type: ignore[operator]


def test_regret_exponent_tells_linear_from_sublinear() -> None:
    t = np.arange(1, 5001, dtype=np.float64)
    assert regret_exponent(list(0.04 * t)) == pytest.approx(1.0)
    assert regret_exponent(list(3.0 * np.sqrt(t))) == pytest.approx(0.5)


def test_the_simulated_classifier_is_calibrated_like_the_served_model() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(len(EMOTION_PRIOR), p=EMOTION_PRIOR, size=20_000)
    p = np.array([noisy_prediction(int(t), len(EMOTION_PRIOR), rng) for t in truth])
    confidence, correct = p.max(1), p.argmax(1) == truth
    assert 0.70 < correct.mean() < 0.76  # FER2013-like top-1 accuracy
    bins = np.minimum((confidence * 10).astype(int), 9)
    ece = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
              for b in np.unique(bins))  # fmt: skip
    assert ece < 0.02


def test_the_script_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    command = [sys.executable, str(ROOT / "bench" / "recommendation.py"), "--rounds", "300", "--eval-rounds", "100",
               "--seeds", "2", "--json", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert "| emotorch |" in result.stdout and "| static |" in result.stdout and "| mean |" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"random", "static", "emotorch"}
    emotorch = data["policies"]["emotorch"]
    assert len(emotorch["regret"]) == 300 and 0 < emotorch["ctr"] < 1 and emotorch["after_impressions"] == 500
    assert [row["seed"] for row in data["seeds"]] == [0, 1] and data["oracle"]["ctr"] > data["policies"]["static"][
        "ctr"
    ]


def test_bad_arguments_are_refused() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "recommendation.py"), "--rounds", "2"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "--rounds must be at least 5" in result.stderr

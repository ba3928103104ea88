from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.recommendation import (
    EMOTION_PRIOR,
    OTHER_LEARNER,
    World,
    cells,
    evidence_for_accuracy,
    gate,
    gate_lines,
    hidden_rates,
    pooled,
    predict,
    react,
    run_grid,
    run_seeds,
    seed_passes,
    simulate,
    table,
)
from gateway.catalog import DEFAULT_CATALOG, load_catalog

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(DEFAULT_CATALOG)


def test_the_hidden_world_is_not_the_policys_prior() -> None:
    rng = np.random.default_rng(0)
    rates = hidden_rates(CATALOG, 0.8, rng)
    correlation = np.corrcoef(rates.ravel(), CATALOG.affinity.ravel())[0, 1]
    assert abs(correlation) < 0.35  # the catalog is a weak guess, not half of the truth
    blind = hidden_rates(CATALOG, 0.0, np.random.default_rng(0))
    assert np.allclose(blind, blind[:, :1])  # mood share 0: the emotion changes nothing
    assert not np.allclose(rates, rates[:, :1])


@pytest.mark.parametrize("accuracy", [0.4, 0.73, 0.9])
def test_the_simulated_classifier_has_the_asked_accuracy_and_is_calibrated(accuracy: float) -> None:
    rng = np.random.default_rng(1)
    gap = evidence_for_accuracy(accuracy)
    truth = rng.choice(len(EMOTION_PRIOR), p=EMOTION_PRIOR, size=8000)
    p = np.array([predict(int(t), gap, rng) for t in truth])
    correct = p.argmax(1) == truth
    assert abs(correct.mean() - accuracy) < 0.025
    assert abs(p.max(1).mean() - correct.mean()) < 0.03  # confidence matches accuracy on average


def test_users_send_likes_and_dismissals_only_for_what_they_looked_at() -> None:
    rng = np.random.default_rng(2)
    liked, dismissed, n = np.zeros(5), np.zeros(5), 4000
    for _ in range(n):
        likes, dismisses = react(np.full(5, 0.5), rng)
        liked[likes] += 1
        dismissed[dismisses] += 1
    assert liked[0] / n == pytest.approx(0.8 * 0.5, abs=0.03)
    assert liked[4] / n == pytest.approx(0.8 * 0.9**4 * 0.5, abs=0.03)  # lower positions are looked at less
    assert dismissed[0] / n == pytest.approx(0.8 * 0.5 * 0.1, abs=0.015)


def test_a_small_run_compares_every_policy_and_the_store_path_learns() -> None:
    results = simulate(CATALOG, World(0.8, 0.9), 240, seed=3, variants=True, store_dir=None)
    other = OTHER_LEARNER  # the learner that is not the gateway's default, and its blind twin
    assert set(results) == {"emotorch", "blind", other, f"{other}-blind", "popularity", "item-only", "no-decay",
                            "static", "oracle"}  # fmt: skip
    assert all(r[1] == 240 * 5 for r in results.values())  # every policy showed five items per user
    best = results["oracle"][0]
    assert best > max(r[0] for n, r in results.items() if n != "oracle")  # nothing beats knowing the rates
    assert "(" in gate(World(0.8, 0.9), results) and "blind" in gate(World(0.8, 0.9), results)
    assert "static" in gate(World(0.0, 0.9), results)


def test_the_store_path_runs_the_products_feedback_code(tmp_path: Path) -> None:
    results = simulate(CATALOG, World(0.5, 0.73), 60, seed=4, store_dir=tmp_path)
    likes, shown = results["emotorch (store)"][:2]
    assert shown == 300 and 0 <= likes < shown
    with sqlite3.connect(tmp_path / "sim.db") as db:  # the server-side log: every item shown, 60 users
        assert db.execute("SELECT count(*) FROM recommended_items").fetchone() == (300,)
        assert db.execute("SELECT count(DISTINCT session_id) FROM recommendations").fetchone() == (60,)


def test_the_script_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    command = [sys.executable, str(ROOT / "bench" / "recommendation.py"), "--rounds", "60", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert "emotorch | blind" in result.stdout and "| 50% | 73% |" in result.stdout
    data = json.loads(out.read_text())
    world = data["worlds"][0]
    assert world["policies"]["oracle"]["shown"] == 300 and world["gate"].split()[0] in ("PASS", "FAIL")


def test_a_tiny_grid_fills_the_table_and_its_gate_can_fail() -> None:
    results = run_grid(cells(True), 30, seed=5, store=False, jobs=1)
    assert len(results) == 15 and len({w for w, _ in results}) == 15
    names = [n for n in results[0][1] if all(n in r for _, r in results)]  # the first world adds variants
    assert {"emotorch", "blind", OTHER_LEARNER, "static", "popularity", "oracle"} <= set(names)
    lines = table([(w, {n: r[n] for n in names}) for w, r in results])
    assert len(lines) == 2 + 15 and all(line.count("|") == len(names) + 5 for line in lines)
    assert all(line.rstrip(" |").rsplit("|", 1)[1].split()[0] in ("PASS", "FAIL") for line in lines[2:])
    assert len(gate_lines(results)) == 15 + 2
    world, r = next((w, dict(r)) for w, r in results[1:] if w.mood_share > 0)
    r["blind"] = (1000, 10_000, 330, 3330)  # a full-size run's counts: 10 likes per 100, 2 SE = 0.6
    r["emotorch"] = (900, 10_000, 300, 3330)  # below its blind twin by more than two standard errors
    assert gate(world, r) == "FAIL (0.90x blind)"
    r["emotorch"] = (950, 10_000, 310, 3330)  # within them
    assert gate(world, r) == "PASS (0.95x blind)"
    quiet = World(0.0, 0.73)  # where mood does not matter the reference is static
    r["static"] = (1000, 10_000, 330, 3330)
    r["emotorch"] = (200, 10_000, 60, 3330)
    assert gate(quiet, r) == "FAIL (0.20x static)"
    assert "default learner: FAIL in 1 world(s)" in gate_lines([(quiet, r)])[-1]


def test_several_seeds_are_separate_reproducible_runs_judged_on_their_pooled_totals() -> None:
    world = World(0.5, 0.73)
    [(_, runs)] = run_seeds([world], 30, seed=7, store=False, jobs=1, seeds=2)
    assert len(runs) == 2 and runs[0] != runs[1]  # each seed draws its own world, users and luck
    [(_, [again])] = run_seeds([world], 30, seed=8, store=False, jobs=1)
    assert again == runs[1]  # the second seed of a run from 7 is the run of seed 8
    total = pooled(runs)
    assert total["emotorch"] == tuple(a + b for a, b in zip(runs[0]["emotorch"], runs[1]["emotorch"], strict=True))
    assert total["oracle"][1] == 2 * 30 * 5
    passes = [gate(world, run).startswith("PASS") for run in runs]
    assert seed_passes(world, runs) == f"{sum(passes)}/2 seeds"
    line = gate_lines([(world, total)], [(world, runs)])[1]
    assert gate(world, total) in line and "/2 seeds" in line


@pytest.mark.parametrize(("flag", "message"), [("--rounds", "--rounds must be at least 30"),
                                               ("--seeds", "--seeds must be at least 1")])  # fmt: skip
def test_bad_arguments_are_refused(flag: str, message: str) -> None:
    value = "2" if flag == "--rounds" else "0"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "recommendation.py"), flag, value],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr

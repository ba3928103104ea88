from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.recommendation import simulate, summary

ROOT = Path(__file__).resolve().parents[2]


def test_the_learning_policy_beats_the_static_map_and_its_regret_flattens() -> None:
    results, _ = simulate(rounds=2000, k=5, seed=3)
    assert results["emotorch"].ctr > results["static"].ctr > results["random"].ctr
    figures = summary(results, 2000)
    assert figures["emotorch"]["regret_last_window"] < 0.8 * figures["emotorch"]["regret_first_window"]  # type: ignore[operator]
    # The static map and random do not learn: their regret grows linearly.
    assert figures["static"]["regret_last_window"] > 0.85 * figures["static"]["regret_first_window"]  # type: ignore[operator]


def test_the_script_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "recommendation.py"), "--rounds", "300",
                             "--json", str(out)], capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert "| emotorch |" in result.stdout and "| static |" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"random", "static", "emotorch"}
    assert len(data["policies"]["emotorch"]["regret"]) == 300 and 0 < data["policies"]["emotorch"]["ctr"] < 1

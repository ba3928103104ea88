"""A tiny run of the scale benchmark: the real gateway process, every phase, memory read from /proc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.feedback_scale import run, table

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_run_measures_every_phase(tmp_path: Path) -> None:
    figures = run(events=2500, catalog_items=None, clients=1, minimum=5, workdir=tmp_path)
    phases = figures["phases"]
    assert set(phases) == {"idle", "rebuild", "erasure", "purge"}
    assert all(p["requests"] >= 5 and 0 < p["p50_ms"] <= p["p99_ms"] <= p["max_ms"] for p in phases.values())
    assert phases["rebuild"]["result"]["rows"] >= 2500  # the whole log: every impression and vote
    assert phases["purge"]["result"] == 10  # the tenth of the 100 recommendations dated past retention
    assert 50 < figures["memory_mib"]["rss"] <= figures["memory_mib"]["peak"]
    assert "| rebuild |" in "\n".join(table(figures))


def test_a_users_own_catalog_is_generated_loaded_and_ranked_by_the_other_learner_too(tmp_path: Path) -> None:
    figures = run(events=250, catalog_items=3000, clients=1, minimum=3, workdir=tmp_path, learner="linear")
    assert figures["catalog"]["items"] == 3000 and figures["catalog"]["rank_p99_ms"] > 0
    assert figures["learner"] == "linear" and figures["catalog"]["fit_ms"] > 0
    assert "learner 'linear'" in table(figures)[0]


def test_bad_arguments_are_refused() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "feedback_scale.py"), "--events", "3"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "--events must be at least 25" in result.stderr

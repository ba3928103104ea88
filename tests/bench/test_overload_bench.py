from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_the_overload_bench_sheds_the_burst_and_serves_everyone_else(tmp_path: Path) -> None:
    out = tmp_path / "overload.json"
    # A small burst: this checks what holds whatever the machine's speed, not how fast (the README has figures).
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overload.py"), "--burst", "80", "--seconds", "1",
         "--polite-interval", "0.2", "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    figures = json.loads(out.read_text())
    burst, refused = figures["figures"]["burst (all)"], figures["figures"]["burst refused (429/503)"]
    assert burst["n"] == 80 and burst.get("200", 0) + refused["n"] == 80  # every answer is a 200 or a refusal
    assert refused["n"] > 0 and refused["refusals_without_retry_after"] == 0
    # The polite client never holds more than one slot and the burst at most its share: it is always admitted.
    assert figures["polite_success"] == 1.0
    health = figures["figures"]["healthz"]
    assert health["n"] > 0 and health.get("200") == health["n"]
    assert "| burst refused (429/503) |" in result.stdout

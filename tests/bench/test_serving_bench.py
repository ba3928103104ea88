from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_the_serving_bench_measures_every_target_at_every_concurrency(tmp_path: Path) -> None:
    out = tmp_path / "serving.json"
    # Tiny cells: this checks that every target serves the same model without errors, not how fast.
    result = subprocess.run(
        [sys.executable, "-m", "bench.serving", "--model", "small", "--duration", "0.5",
         "--warmup", "0.2", "--concurrency", "1,2", "--retries", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(out.read_text())
    cells = {(c["target"], c["concurrency"]): c for c in data["cells"]}
    targets = ("baseline", "triton-http", "triton-grpc", "triton-grpc-nobatch", "gateway-face", "gateway-photo")
    assert set(cells) == {(t, c) for t in targets for c in (1, 2)}
    for key, cell in cells.items():
        assert cell["errors"] == 0, (key, cell["first_error"])
        assert cell["throughput_rps"] > 0 and cell["p99_ms"] >= cell["p50_ms"] > 0, key
    # Every target answered the same face with the same probabilities, and the selfie's one face was found.
    assert all(v <= 1e-4 for k, v in data["parity_max_abs_diff"].items() if k != "gateway-photo faces")
    assert data["parity_max_abs_diff"]["gateway-photo faces"] == 1
    # Triton's own counters saw the load: with 2 clients the batching model formed batches of at least 1.
    assert cells[("triton-grpc", 2)]["triton"]["requests"] > 0
    assert cells[("triton-grpc", 2)]["triton"]["mean_batch"] >= 1.0
    assert cells[("gateway-face", 1)]["gateway"]["infer_ms"] > 0
    assert 0 < data["compute"][-1]["fraction_of_peak"] < 1.5 and data["flop_per_face"] > 1e7
    assert "| gateway-face | 2 |" in result.stdout and "What dominates" in result.stdout

"""The model's FLOPs and achieved FLOP/s against the machine's measured dense fp32 peak."""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.serving.cpu import cpu_snapshot, wait_for_quiet
from bench.serving.inputs import model_input_size

logger = logging.getLogger("bench.serving")


def _best_time_s(fn: Callable[[], object], min_runs: int = 5, min_total_s: float = 1.0) -> float:
    """The fastest of several runs: what the machine can do, the least touched by other processes."""
    fn()  # warm-up (TorchScript profiling runs, allocator)
    fn()
    best, total, runs = float("inf"), 0.0, 0
    while runs < min_runs or total < min_total_s:
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        best, total, runs = min(best, elapsed), total + elapsed, runs + 1
    return best


def _compute_rows(
    model: torch.jit.ScriptModule, flop_per_face: int, threads: int, large_batch: int
) -> list[dict[str, float]]:
    torch.set_num_threads(threads)
    size = model_input_size(model)
    own = {"bench": [os.getpid()]}
    before, started = cpu_snapshot(own), time.perf_counter()
    # Two dense fp32 kernels, the faster is the limit: MKL's sgemm (behind torch.mm) takes a slower path on some
    # AMD CPUs than oneDNN's convolutions (behind the model's convs), so a 3x3 conv as a GEMM is measured too.
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, w = torch.randn(64, 512, 12, 12), torch.randn(512, 512, 3, 3)
    sgemm = 2 * 2048**3 / _best_time_s(lambda: torch.mm(a, b))
    with torch.inference_mode():
        conv = 2 * 64 * 512 * 512 * 9 * 12 * 12 / _best_time_s(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    peak = max(sgemm, conv)
    rows = []
    for batch in (1, large_batch):
        faces = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8)
        with torch.inference_mode():
            seconds = _best_time_s(lambda faces=faces: model(faces))  # type: ignore[misc]
        achieved = flop_per_face * batch / seconds
        rows.append({"threads": threads, "batch": batch, "ms_per_batch": 1000 * seconds, "faces_per_s": batch / seconds,
                     "achieved_gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "sgemm_gflops": sgemm / 1e9,
                     "conv_gemm_gflops": conv / 1e9, "fraction_of_peak": achieved / peak})  # fmt: skip
    after, wall_s = cpu_snapshot(own), time.perf_counter() - started
    foreign = max(0.0, ((after["machine"] - before["machine"]) - (after["bench"] - before["bench"])) / wall_s)
    return [row | {"foreign_cores": foreign} for row in rows]


def measure_compute(
    model: torch.jit.ScriptModule, large_batch: int, max_foreign_cores: float, retries: int, quiet_wait_s: float
) -> tuple[int, list[dict[str, float]]]:
    """FLOPs per face, and achieved vs peak fp32 FLOP/s at batch 1 and `large_batch`, on 1 thread and all cores."""
    size = model_input_size(model)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros((1, 1, size, size), dtype=torch.uint8))
    flop_per_face = int(counter.get_total_flops())
    threads_before = torch.get_num_threads()
    rows: list[dict[str, float]] = []
    try:
        for threads in sorted({1, threads_before}):
            best = _compute_rows(model, flop_per_face, threads, large_batch)
            for _ in range(retries):
                if best[0]["foreign_cores"] <= max_foreign_cores:
                    break
                logger.warning("compute on %d threads disturbed (other processes used %.2f cores): measuring again",
                               threads, best[0]["foreign_cores"])  # fmt: skip
                wait_for_quiet({"bench": [os.getpid()]}, max_foreign_cores, quiet_wait_s)
                again = _compute_rows(model, flop_per_face, threads, large_batch)
                best = min(best, again, key=lambda r: r[0]["foreign_cores"])
            rows += best
    finally:
        torch.set_num_threads(threads_before)
    return flop_per_face, rows


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform()}  # fmt: skip

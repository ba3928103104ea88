"""One measuring run: every (target, concurrency) cell, concurrency by concurrency, then the optional profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tritonclient.grpc.aio as triton_grpc

from bench.serving.cpu import process_groups, wait_for_quiet
from bench.serving.inputs import Inputs
from bench.serving.load import (
    REQUEST_TIMEOUT_S,
    Cell,
    Send,
    check_parity,
    grpc_sender,
    has_face,
    has_probabilities,
    http_sender,
    measure_cell,
    multipart,
    triton_http_request,
)
from bench.serving.profiling import profile
from bench.serving.servers import NOBATCH_SUFFIX, Servers

logger = logging.getLogger("bench.serving")


@dataclass(frozen=True)
class Plan:
    targets: list[str]
    concurrencies: list[int]
    warmup_s: float
    duration_s: float
    max_foreign_cores: float  # a cell in which other processes used more is run again
    retries: int
    quiet_wait_s: float
    py_spy: Path | None  # profile the gateway and a python-backend stub with this py-spy binary


async def run_cells(
    servers: Servers, inputs: Inputs, reference: np.ndarray, plan: Plan, work: Path
) -> tuple[list[Cell], dict[str, float | int], dict[str, dict[str, Any]]]:
    """Every (target, concurrency) cell, concurrency by concurrency so that targets compared sit close in time."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        grpc = triton_grpc.InferenceServerClient(servers.triton_grpc)
        try:
            parity = await check_parity(session, grpc, servers, inputs, reference)
            face_body, face_type = multipart({}, "face.png", "image/png", inputs.face_png)
            gw_face, gw_face_type = multipart({"consent": "true", "mode": "face"}, "face.png", "image/png",
                                              inputs.face_png)  # fmt: skip
            gw_photo, gw_photo_type = multipart({"consent": "true", "mode": "photo"}, "selfie.jpg", "image/jpeg",
                                                inputs.selfie_jpeg)  # fmt: skip
            http_body, http_headers = triton_http_request(inputs.face)
            emotions = f"{servers.gateway_url}/v1/emotions"
            senders: dict[str, Send] = {
                "baseline": http_sender(session, f"{servers.baseline_url}/predict", face_body,
                                        {"Content-Type": face_type}, has_probabilities),
                "triton-http": http_sender(session, f"http://{servers.triton_http}/v2/models/{servers.model_name}/infer",
                                           http_body, http_headers, lambda _: None),
                "triton-grpc": grpc_sender(grpc, servers.model_name, inputs.face),
                "triton-grpc-nobatch": grpc_sender(grpc, servers.model_name + NOBATCH_SUFFIX, inputs.face),
                "gateway-face": http_sender(session, emotions, gw_face, {"Content-Type": gw_face_type}, has_face),
                "gateway-photo": http_sender(session, emotions, gw_photo, {"Content-Type": gw_photo_type}, has_face),
            }  # fmt: skip
            cells: list[Cell] = []
            for concurrency in plan.concurrencies:
                for target in plan.targets:
                    cell = await measure_cell(target, senders[target], concurrency, plan.warmup_s, plan.duration_s,
                                              servers)  # fmt: skip
                    for attempt in range(2, plan.retries + 2):
                        if cell.foreign_cores <= plan.max_foreign_cores:
                            break
                        logger.warning("%s c=%d disturbed (other processes used %.2f cores): running it again",
                                       target, concurrency, cell.foreign_cores)  # fmt: skip
                        # Between cells nothing is in flight: blocking the loop while waiting costs nothing.
                        wait_for_quiet(process_groups(servers), plan.max_foreign_cores, plan.quiet_wait_s)
                        again = await measure_cell(target, senders[target], concurrency, plan.warmup_s,
                                                   plan.duration_s, servers)  # fmt: skip
                        cell = min(cell, again, key=lambda c: c.foreign_cores)
                        cell.attempts = attempt
                    logger.info("%-19s c=%-3d %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d", target,
                                concurrency, cell.throughput_rps, cell.p50_ms, cell.p99_ms, cell.errors)  # fmt: skip
                    cells.append(cell)
            profiles: dict[str, dict[str, Any]] = {}
            if plan.py_spy and "gateway-face" in plan.targets:
                profiles = await profile(plan.py_spy, servers, senders["gateway-face"], max(plan.concurrencies),
                                         max(2, round(plan.duration_s)), work)  # fmt: skip
        finally:
            await grpc.close()
    return cells, parity, profiles

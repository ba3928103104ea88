"""The load: closed-loop clients for every target, one cell per (target, concurrency), and the parity check."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http as triton_http

from bench.serving.counters import gateway_delta, scrape, triton_delta
from bench.serving.cpu import cpu_snapshot, process_groups
from bench.serving.inputs import Inputs
from bench.serving.servers import NOBATCH_SUFFIX, Servers
from pipelines.labels import LABELS

logger = logging.getLogger("bench.serving")

REQUEST_TIMEOUT_S = 30.0


PARITY_TOLERANCE = 1e-4


Send = Callable[[], Awaitable[None]]  # one request; raises on any bad answer


def multipart(fields: dict[str, str], filename: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and one file `image`, encoded once and sent as is."""
    boundary = "emotorch-bench-7d1f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]  # fmt: skip
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http_sender(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], check: Callable[[bytes], None]
) -> Send:
    async def send() -> None:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
            check(payload)

    return send


def grpc_sender(client: triton_grpc.InferenceServerClient, model: str, face: np.ndarray) -> Send:
    infer_input = triton_grpc.InferInput("image", list(face.shape), "UINT8")
    infer_input.set_data_from_numpy(face)

    async def send() -> None:
        result = await client.infer(model, [infer_input], client_timeout=REQUEST_TIMEOUT_S)
        if result.as_numpy("probabilities") is None:
            raise RuntimeError("no probabilities in Triton's answer")

    return send


def has_face(payload: bytes) -> None:
    if not json.loads(payload)["faces"]:
        raise RuntimeError("the gateway found no face")


def has_probabilities(payload: bytes) -> None:
    if len(json.loads(payload)["probabilities"]) != len(LABELS):
        raise RuntimeError("the baseline answered without probabilities")


def triton_http_request(face: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """Triton's HTTP/REST inference body (JSON header + binary tensor), encoded once by tritonclient."""
    infer_input = triton_http.InferInput("image", list(face.shape), "UINT8")
    infer_input.set_data_from_numpy(face, binary_data=True)
    output = triton_http.InferRequestedOutput("probabilities", binary_data=True)
    body, json_size = triton_http.InferenceServerClient.generate_request_body([infer_input], [output])
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


@dataclass
class Cell:
    target: str
    concurrency: int
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    client_cpu_ms: float  # per request
    server_cpu_ms: dict[str, float]  # per request, by process group
    foreign_cores: float  # cores other processes used meanwhile (disturbance)
    triton: dict[str, float] | None
    gateway: dict[str, float] | None
    first_error: str | None = None
    attempts: int = 1


async def closed_loop(
    send: Send, concurrency: int, warmup_s: float, duration_s: float, groups: dict[str, list[int]]
) -> tuple[list[float], int, str | None, dict[str, float]]:
    """`concurrency` clients send back to back; latencies of requests started in the window, errors, CPU used."""
    started = time.perf_counter()
    window_start, window_end = started + warmup_s, started + warmup_s + duration_s
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None

    async def client() -> None:
        nonlocal errors, first_error
        while (t0 := time.perf_counter()) < window_end:
            try:
                await send()
            except Exception as e:  # noqa: BLE001 - every failure is a counted error, the load goes on
                errors += 1
                first_error = first_error or f"{type(e).__name__}: {e}"[:300]
                continue
            if t0 >= window_start:
                latencies.append(time.perf_counter() - t0)

    async def cpu_window() -> dict[str, float]:
        await asyncio.sleep(window_start - time.perf_counter())
        first = cpu_snapshot(groups)
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        last = cpu_snapshot(groups)
        return {k: last[k] - first[k] for k in first}

    cpu_task = asyncio.create_task(cpu_window())
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, first_error, await cpu_task


_INVOLVED = {"baseline": ("baseline",), "gateway": ("gateway", "tritonserver", "python_backend"),
             "triton": ("tritonserver", "python_backend")}  # fmt: skip


def _involved(target: str) -> tuple[str, ...]:
    return _INVOLVED["baseline" if target == "baseline" else "gateway" if target.startswith("gateway") else "triton"]


async def measure_cell(
    target: str, send: Send, concurrency: int, warmup_s: float, duration_s: float, servers: Servers
) -> Cell:
    """One cell: the load, then throughput, latency, CPU per request and the servers' own counters."""
    groups = process_groups(servers)
    triton_model = servers.model_name + (NOBATCH_SUFFIX if target.endswith("nobatch") else "")
    triton_before = scrape(servers.triton_metrics_url)
    gateway_before = scrape(f"{servers.gateway_url}/metrics")
    latencies, errors, first_error, cpu = await closed_loop(send, concurrency, warmup_s, duration_s, groups)
    triton_after = scrape(servers.triton_metrics_url)
    gateway_after = scrape(f"{servers.gateway_url}/metrics")
    n = len(latencies)
    ms = np.array(latencies) * 1000 if n else np.array([np.nan])
    ours = sum(v for k, v in cpu.items() if k != "machine")
    involved = _involved(target)
    return Cell(
        target=target,
        concurrency=concurrency,
        requests=n,
        errors=errors,
        throughput_rps=n / duration_s,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        client_cpu_ms=1000 * cpu["client"] / max(n, 1),
        server_cpu_ms={k: 1000 * cpu[k] / max(n, 1) for k in involved},
        foreign_cores=max(0.0, (cpu["machine"] - ours) / duration_s),
        triton=None if target == "baseline" else triton_delta(triton_before, triton_after, triton_model),
        gateway=gateway_delta(gateway_before, gateway_after) if target.startswith("gateway") else None,
        first_error=first_error,
    )


async def check_parity(
    session: aiohttp.ClientSession,
    grpc: triton_grpc.InferenceServerClient,
    servers: Servers,
    inputs: Inputs,
    reference: np.ndarray,
) -> dict[str, float | int]:
    """One request per target: every target must give the same probabilities for the same face."""
    out: dict[str, float | int] = {}
    body, content_type = multipart({}, "face.png", "image/png", inputs.face_png)
    async with session.post(f"{servers.baseline_url}/predict", data=body, headers={"Content-Type": content_type}) as r:
        answer = await r.json()
    out["baseline"] = float(np.abs(np.array([answer["probabilities"][k] for k in LABELS]) - reference).max())
    for model in (servers.model_name, servers.model_name + NOBATCH_SUFFIX):
        infer_input = triton_grpc.InferInput("image", list(inputs.face.shape), "UINT8")
        infer_input.set_data_from_numpy(inputs.face)
        result = await grpc.infer(model, [infer_input], client_timeout=REQUEST_TIMEOUT_S)
        out[f"triton-grpc:{model}"] = float(np.abs(result.as_numpy("probabilities")[0] - reference).max())
    body, headers = triton_http_request(inputs.face)
    async with session.post(f"http://{servers.triton_http}/v2/models/{servers.model_name}/infer", data=body,
                            headers=headers) as r:  # fmt: skip
        header_length = r.headers.get("Inference-Header-Content-Length")
        result_http = triton_http.InferenceServerClient.parse_response_body(
            await r.read(), header_length=int(header_length) if header_length else None
        )
    out["triton-http"] = float(np.abs(result_http.as_numpy("probabilities")[0] - reference).max())
    for mode, name, kind, data in (("face", "face.png", "image/png", inputs.face_png),
                                   ("photo", "selfie.jpg", "image/jpeg", inputs.selfie_jpeg)):  # fmt: skip
        body, content_type = multipart({"consent": "true", "mode": mode}, name, kind, data)
        async with session.post(f"{servers.gateway_url}/v1/emotions", data=body,
                                headers={"Content-Type": content_type}) as r:  # fmt: skip
            faces = (await r.json())["faces"]
        if mode == "face":
            out["gateway-face"] = float(
                np.abs(np.array([faces[0]["probabilities"][k] for k in LABELS]) - reference).max()
            )
        else:
            out["gateway-photo faces"] = len(faces)
    off = {k: v for k, v in out.items() if k != "gateway-photo faces" and not v <= PARITY_TOLERANCE}
    if off or out["gateway-photo faces"] != 1:
        raise RuntimeError(f"the targets do not serve the same model on the same face: {out}")
    return out

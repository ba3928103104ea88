"""Serving benchmark: the stack (gateway + Triton) against an in-process FastAPI baseline, in one run.

Same TorchScript model and the same face for every target, all on loopback:
  baseline             a plain FastAPI app (bench/baseline_app.py, 1 uvicorn worker) running model.pt itself;
                       the model-sized face PNG uploaded as multipart
  triton-http          Triton directly, HTTP/REST with the binary tensor extension (dynamic batching on)
  triton-grpc          Triton directly, gRPC (dynamic batching on)
  triton-grpc-nobatch  Triton directly, gRPC, the same model published without dynamic batching
  gateway-face         the gateway, POST /v1/emotions with the face PNG, mode=face, consent=true
  gateway-photo        the gateway, POST /v1/emotions with a 640x480 JPEG selfie (detection as EMOTORCH_DETECTOR
                       says, MTCNN by default; crop; Triton)
Triton runs the project's python backend and publish config (params.yaml) on a fresh repository. Each target is
driven by a closed-loop load generator on the same cores (cheap clients: aiohttp with bodies encoded once,
tritonclient's gRPC aio) at each concurrency for `--duration` seconds after a warm-up. Per cell: throughput,
p50/p99 latency, errors, CPU per request of the client and of each server process (from /proc), Triton's own
queue/compute counters and the gateway's stage timings (from their metrics endpoints), and the CPU other
processes took meanwhile (a disturbed cell is run again). The model's FLOPs are counted with FlopCounterMode
and its achieved FLOP/s at a large batch is set against the machine's measured dense fp32 FLOP/s (the faster
of an sgemm and a 3x3 convolution run as a GEMM). With `--py-spy`, an extra unmeasured run profiles the gateway
and a python-backend stub.

    python bench/serving.py --model small|vgg_fer|mini_xception[,...] [--model-pt model.pt] [--duration 5]
                            [--concurrency 1,8,32]
                            [--json results.json] [--py-spy $(which py-spy)]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import torch
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.baseline_app import MODEL_PT_ENV  # noqa: E402
from emotorch import processes, triton_server  # noqa: E402
from emotorch.triton_server import TritonPorts  # noqa: E402
from gateway.detection import HaarFaceDetector  # noqa: E402
from gateway.imaging import FER_MARGIN, crop_to_fer, decode_grayscale  # noqa: E402
from pipelines.inference import ServingModel, script  # noqa: E402
from pipelines.labels import LABELS  # noqa: E402
from pipelines.model import MODELS, build_model  # noqa: E402
from pipelines.repository import publish_version  # noqa: E402
from pipelines.triton_config import PublishParams  # noqa: E402

logger = logging.getLogger("bench.serving")

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("baseline", "triton-http", "triton-grpc", "triton-grpc-nobatch", "gateway-face", "gateway-photo")
NOBATCH_SUFFIX = "_nobatch"
REQUEST_TIMEOUT_S = 30.0
PARITY_TOLERANCE = 1e-4
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


# ---- the model and the inputs -------------------------------------------------------------------------------


def build_torchscript(name: str, out: Path, seed: int = 0) -> Path:
    """The serving TorchScript of network `name` with untrained, seeded weights (speed does not need training)."""
    torch.manual_seed(seed)
    serving = ServingModel(build_model(name).eval(), list(LABELS), mean=0.5, std=0.25)
    script(serving).save(str(out))
    return out


@dataclass(frozen=True)
class Inputs:
    face: np.ndarray  # 1 x 1 x S x S uint8: the face the selfie path classifies, at the model's input size
    face_png: bytes
    selfie_jpeg: bytes  # 640 x 480


def model_input_size(model: torch.jit.ScriptModule) -> int:
    """The side of the faces a serving TorchScript reads (files exported before 2026-11 read 48x48)."""
    return int(getattr(model, "input_size", 48))


def make_inputs(size: int, margin: float) -> Inputs:
    """A 640x480 selfie from scikit-image's astronaut photo, and its face cropped as the gateway crops it."""
    from skimage import data

    photo = cv2.resize(data.astronaut(), (640, 640), interpolation=cv2.INTER_AREA)[:480]  # keep the head
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    gray = decode_grayscale(jpeg.tobytes(), 10**8)
    boxes = HaarFaceDetector().detect(gray)
    if not boxes:
        raise RuntimeError("the Haar detector found no face in the selfie")
    face = crop_to_fer(gray, boxes[0], (size, size), margin)
    ok, png = cv2.imencode(".png", face)
    assert ok
    return Inputs(face[None, None], png.tobytes(), jpeg.tobytes())


# ---- servers --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server in its own session; it gets SIGTERM when the bench dies, even by SIGKILL (no orphans)."""
    prctl = ctypes.CDLL("libc.so.6").prctl  # loaded before the fork: the child only calls it
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=functools.partial(prctl, _PR_SET_PDEATHSIG, signal.SIGTERM),
        )  # fmt: skip


def publish_models(
    repository: Path, model_pt: Path, labels: list[str], params: PublishParams, size: int
) -> list[str]:
    """Publish `model_pt` twice: as the configured model, and without dynamic batching under `<name>_nobatch`."""
    metadata = {"labels": labels, "model": "bench", "input": {"shape": [-1, 1, size, size]}}
    publish_version(repository, model_pt, metadata, params)
    nobatch = replace(params, model_name=params.model_name + NOBATCH_SUFFIX)
    publish_version(repository, model_pt, metadata, nobatch)
    config = repository / nobatch.model_name / "config.pbtxt"
    lines = config.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("dynamic_batching")]
    if len(kept) != len(lines) - 1:
        raise RuntimeError(f"expected one dynamic_batching line in {config}")
    config.write_text("".join(kept))
    return [params.model_name, nobatch.model_name]


@dataclass(frozen=True)
class Servers:
    triton_http: str  # host:port
    triton_grpc: str
    triton_metrics_url: str
    triton_version: str
    gateway_url: str
    baseline_url: str
    model_name: str
    pids: dict[str, int]  # process group name -> pid


@contextlib.contextmanager
def running_servers(
    work: Path, model_pt: Path, labels: list[str], params: PublishParams, size: int
) -> Iterator[Servers]:
    """Triton (on a fresh repository), the gateway and the baseline on free loopback ports; all stopped after."""
    repository = work / "model_repository"
    models = publish_models(repository, model_pt, labels, params, size)
    ports = TritonPorts(_free_port(), _free_port(), _free_port())
    gateway_port, baseline_port = _free_port(), _free_port()
    with contextlib.ExitStack() as stack:
        backend_dir = triton_server.prepare_backend_dir(work)
        command = triton_server.triton_command(repository, ports, models, backend_dir, f"emotorchbench{os.getpid()}")
        triton = _spawn(command, triton_server.triton_environment(), work / "triton.log")
        stack.callback(triton_server.stop, triton)
        baseline_cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_app:create_app", "--factory",
                        "--host", "127.0.0.1", "--port", str(baseline_port), "--log-level", "warning"]  # fmt: skip
        baseline = _spawn(baseline_cmd, {**os.environ, MODEL_PT_ENV: str(model_pt)}, work / "baseline.log")
        stack.callback(processes.stop, baseline)
        try:
            triton_server.wait_until_ready(triton, ports.http, models, timeout_s=180)
        except triton_server.TritonStartError as e:
            raise RuntimeError(f"{e}:\n{(work / 'triton.log').read_text()[-3000:]}") from e
        gateway_env = {**os.environ, "EMOTORCH_DATABASE_URL": f"sqlite:///{work / 'feedback.db'}",
                       "EMOTORCH_RATE_LIMIT_PER_S": "0", "EMOTORCH_MODEL_NAME": params.model_name,
                       # admission control off in effect: this bench measures serving, bench/overload.py shedding
                       "EMOTORCH_MAX_IMAGES_IN_FLIGHT": "1024", "EMOTORCH_MAX_IMAGES_PER_CLIENT": "1024"}  # fmt: skip
        gateway_cmd = [sys.executable, "-m", "emotorch.cli", "gateway", "--port", str(gateway_port),
                       "--triton-url", f"127.0.0.1:{ports.grpc}", "--log-level", "warning"]  # fmt: skip
        gateway = _spawn(gateway_cmd, gateway_env, work / "gateway.log")
        stack.callback(processes.stop, gateway)
        processes.wait_http_ok(f"http://127.0.0.1:{gateway_port}/readyz", gateway, 120, "gateway", work / "gateway.log")
        processes.wait_http_ok(f"http://127.0.0.1:{baseline_port}/healthz", baseline, 120, "baseline",
                               work / "baseline.log")  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.http}/v2", timeout=5) as response:
            version = str(json.loads(response.read())["version"])
        yield Servers(
            triton_http=f"127.0.0.1:{ports.http}",
            triton_grpc=f"127.0.0.1:{ports.grpc}",
            triton_metrics_url=f"http://127.0.0.1:{ports.metrics}/metrics",
            triton_version=version,
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            baseline_url=f"http://127.0.0.1:{baseline_port}",
            model_name=params.model_name,
            pids={"baseline": baseline.pid, "gateway": gateway.pid, "tritonserver": triton.pid},
        )


# ---- CPU accounting and server counters -----------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after "pid (comm) "; state is [0]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def process_groups(servers: Servers) -> dict[str, list[int]]:
    """Every process of the run by role; Triton's python-backend stubs (one per model instance) apart."""
    groups = {name: [pid, *_descendants(pid)] for name, pid in servers.pids.items() if name != "tritonserver"}
    groups["tritonserver"] = [servers.pids["tritonserver"]]
    groups["python_backend"] = _descendants(servers.pids["tritonserver"])
    groups["client"] = [os.getpid()]
    return groups


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group (all threads), and by the whole machine (`machine`)."""
    snapshot: dict[str, float] = {}
    for name, pids in groups.items():
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = _stat_fields(pid)
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        snapshot[name] = ticks / CLK_TCK
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, steal = int(cpu[0]), int(cpu[1]), int(cpu[2]), int(cpu[7])
    snapshot["machine"] = (user + nice + system + steal) / CLK_TCK  # steal: the hypervisor took it
    return snapshot


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus endpoint's samples, keyed by (name, sorted labels); counters named without `_total`."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser appends `_total` to counter samples; Triton's counters are exposed without it.
            name = sample.name.removesuffix("_total") if family.type == "counter" else sample.name
            samples[(name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_TRITON_COUNTERS = ("request_success", "request_failure", "count", "exec_count", "request_duration_us",
                    "queue_duration_us", "compute_input_duration_us", "compute_infer_duration_us",
                    "compute_output_duration_us")  # fmt: skip


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def triton_delta(before: Samples, after: Samples, model: str) -> dict[str, float]:
    """Triton's per-request averages over a cell: server time split into queue and compute, mean batch size."""
    d = {c: _sum(after, f"nv_inference_{c}", model=model) - _sum(before, f"nv_inference_{c}", model=model)
         for c in _TRITON_COUNTERS}  # fmt: skip
    requests = max(d["request_success"], 1.0)
    per_request_ms = {f"{c.removesuffix('_duration_us')}_ms": d[c] / requests / 1000
                      for c in _TRITON_COUNTERS if c.endswith("_us")}  # fmt: skip
    return {"requests": d["request_success"], "failures": d["request_failure"],
            "mean_batch": d["count"] / max(d["exec_count"], 1.0), **per_request_ms}  # fmt: skip


def gateway_delta(before: Samples, after: Samples) -> dict[str, float]:
    """The gateway's own timings per request over a cell: in-app time of /v1/emotions and each stage."""

    def mean_ms(histogram: str, **labels: str) -> float:
        count = _sum(after, f"{histogram}_count", **labels) - _sum(before, f"{histogram}_count", **labels)
        total = _sum(after, f"{histogram}_sum", **labels) - _sum(before, f"{histogram}_sum", **labels)
        return 1000 * total / max(count, 1.0)

    out = {"in_app_ms": mean_ms("emotorch_request_duration_seconds", route="/v1/emotions")}
    for stage in ("decode", "detect", "preprocess", "infer"):
        out[f"{stage}_ms"] = mean_ms("emotorch_stage_duration_seconds", stage=stage)
    return out


# ---- load generation ------------------------------------------------------------------------------------------

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


def _has_face(payload: bytes) -> None:
    if not json.loads(payload)["faces"]:
        raise RuntimeError("the gateway found no face")


def _has_probabilities(payload: bytes) -> None:
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


async def _parity(
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


def wait_for_quiet(groups: dict[str, list[int]], max_foreign_cores: float, timeout_s: float) -> None:
    """Block (at most `timeout_s`) until other processes use at most `max_foreign_cores` over one second."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        first = cpu_snapshot(groups)
        time.sleep(1.0)
        last = cpu_snapshot(groups)
        if (last["machine"] - first["machine"]) - sum(last[k] - first[k] for k in groups) <= max_foreign_cores:
            return


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
            parity = await _parity(session, grpc, servers, inputs, reference)
            face_body, face_type = multipart({}, "face.png", "image/png", inputs.face_png)
            gw_face, gw_face_type = multipart({"consent": "true", "mode": "face"}, "face.png", "image/png",
                                              inputs.face_png)  # fmt: skip
            gw_photo, gw_photo_type = multipart({"consent": "true", "mode": "photo"}, "selfie.jpg", "image/jpeg",
                                                inputs.selfie_jpeg)  # fmt: skip
            http_body, http_headers = triton_http_request(inputs.face)
            emotions = f"{servers.gateway_url}/v1/emotions"
            senders: dict[str, Send] = {
                "baseline": http_sender(session, f"{servers.baseline_url}/predict", face_body,
                                        {"Content-Type": face_type}, _has_probabilities),
                "triton-http": http_sender(session, f"http://{servers.triton_http}/v2/models/{servers.model_name}/infer",
                                           http_body, http_headers, lambda _: None),
                "triton-grpc": grpc_sender(grpc, servers.model_name, inputs.face),
                "triton-grpc-nobatch": grpc_sender(grpc, servers.model_name + NOBATCH_SUFFIX, inputs.face),
                "gateway-face": http_sender(session, emotions, gw_face, {"Content-Type": gw_face_type}, _has_face),
                "gateway-photo": http_sender(session, emotions, gw_photo, {"Content-Type": gw_photo_type}, _has_face),
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


PROFILE_RATE_HZ = 200


def _package(path: str) -> str:
    """The library a source file belongs to: the site-packages folder, `gateway`, or the stdlib module."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    parts = Path(path).parts
    if "gateway" in parts:
        return "gateway"
    if len(parts) > 1 and parts[-2].isdigit():  # a Triton version folder
        return f"backend {parts[-1]}"
    return parts[-2] if len(parts) > 1 and not parts[-2].startswith("python3") else Path(path).stem


def summarise_profile(raw: str, seconds: float, n: int = 6) -> dict[str, Any]:
    """py-spy's raw (collapsed-stack) samples: busy share, and own time by function and by library."""
    by_frame: dict[str, int] = {}
    by_package: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", leaf)
        function, path = (match.group(1), match.group(2)) if match else (leaf, "?")
        name = f"{function} ({Path(path).name})"
        by_frame[name] = by_frame.get(name, 0) + int(count)
        by_package[_package(path)] = by_package.get(_package(path), 0) + int(count)
    total = sum(by_frame.values()) or 1

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, c / total) for k, c in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]

    return {"samples": total, "busy_share": total / (PROFILE_RATE_HZ * seconds), "functions": top(by_frame),
            "libraries": top(by_package)}  # fmt: skip


async def profile(
    py_spy: Path, servers: Servers, send: Send, concurrency: int, seconds: int, work: Path
) -> dict[str, dict[str, Any]]:
    """py-spy on the gateway and on one python-backend stub of the batching model while gateway-face runs.

    An extra run after the measured ones: sampling slows down the processes it samples. The gateway is sampled
    only while a thread holds the GIL (its idle worker threads would otherwise show as busy), so its busy share
    is how much of the time its one interpreter was running Python.
    """
    stubs = [pid for pid in _descendants(servers.pids["tritonserver"])
             if f"/{servers.model_name}/" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]  # fmt: skip
    sampled = {"gateway": (servers.pids["gateway"], ["--gil"]), "python_backend": (stubs[0], [])}
    recorders = {}
    for name, (pid, flags) in sampled.items():
        command = [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate",
                   str(PROFILE_RATE_HZ), "--full-filenames", *flags, "--format", "raw", "--output",
                   str(work / f"py-spy-{name}.txt")]  # fmt: skip
        recorders[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await closed_loop(send, concurrency, 0.5, seconds + 1.0, process_groups(servers))
    out = {}
    for name, recorder in recorders.items():
        _, stderr = recorder.communicate(timeout=60)
        raw = work / f"py-spy-{name}.txt"
        if recorder.returncode != 0 or not raw.exists():
            logger.warning("py-spy on %s failed: %s", name, stderr.decode(errors="replace")[-500:])
            continue
        out[name] = summarise_profile(raw.read_text(), seconds)
    return out


# ---- the model's compute against the machine's --------------------------------------------------------------


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


# ---- report ---------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform()}  # fmt: skip


def _cell(cells: list[Cell], target: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if c.target == target and c.concurrency == concurrency), None)


def comparisons(cells: list[Cell], concurrencies: list[int]) -> list[dict[str, float | int | None]]:
    """The ratios the issue asks about, per concurrency (None where a target was not measured)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def figure(target: str, c: int, name: str) -> float | None:
        cell = _cell(cells, target, c)
        return None if cell is None else float(getattr(cell, name))

    rows: list[dict[str, float | int | None]] = []
    for c in concurrencies:
        face_p50, grpc_p50 = figure("gateway-face", c, "p50_ms"), figure("triton-grpc", c, "p50_ms")
        rows.append({
            "concurrency": c,
            "stack_vs_baseline_rps": ratio(figure("gateway-face", c, "throughput_rps"),
                                           figure("baseline", c, "throughput_rps")),
            "stack_vs_baseline_p99": ratio(figure("gateway-face", c, "p99_ms"), figure("baseline", c, "p99_ms")),
            "gateway_added_p50_ms": face_p50 - grpc_p50 if face_p50 is not None and grpc_p50 is not None else None,
            "batching_on_vs_off_rps": ratio(figure("triton-grpc", c, "throughput_rps"),
                                            figure("triton-grpc-nobatch", c, "throughput_rps")),
            "http_vs_grpc_rps": ratio(figure("triton-http", c, "throughput_rps"),
                                      figure("triton-grpc", c, "throughput_rps")),
        })  # fmt: skip
    return rows


def aims(model: str, rows: list[dict[str, float | int | None]]) -> dict[str, Any]:
    """The issue's aims: vgg_fer at top concurrency >= 1.5x baseline at no worse p99; small adds < 2 ms p50."""
    top, low = rows[-1], rows[0]
    rps, p99, added = top["stack_vs_baseline_rps"], top["stack_vs_baseline_p99"], low["gateway_added_p50_ms"]
    return {
        "stack_vs_baseline": {"applies": model == "vgg_fer", "concurrency": top["concurrency"], "rps_ratio": rps,
                              "p99_ratio": p99,
                              "met": rps is not None and p99 is not None and rps >= 1.5 and p99 <= 1.0},
        "gateway_overhead": {"applies": model == "small", "concurrency": low["concurrency"], "added_p50_ms": added,
                             "met": added is not None and added < 2.0},
    }  # fmt: skip


def dominates(cells: list[Cell], flop_per_face: int, compute: list[dict[str, float]], cores: int) -> list[str]:
    """Where the time and the CPU go, from the servers' own counters and /proc."""
    lines = []
    single = next((r for r in compute if r["threads"] == 1 and r["batch"] > 1), None)
    for cell in cells:
        if cell.target not in ("triton-grpc", "gateway-face", "gateway-photo") or not cell.requests:
            continue
        cpu = cell.server_cpu_ms | {"client": cell.client_cpu_ms}
        total = max(sum(cpu.values()), 1e-9)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        line = (f"- {cell.target} c={cell.concurrency}: mean {cell.mean_ms:.2f} ms; CPU ms/request {parts} "
                f"(total {total:.2f}: {cores} cores allow {1000 * cores / total:.0f} req/s, measured "
                f"{cell.throughput_rps:.0f})")  # fmt: skip
        if cell.triton:
            t = cell.triton
            line += (f"; Triton {t['request_ms']:.2f} ms/request = queue {t['queue_ms']:.2f} + compute "
                     f"{t['compute_input_ms'] + t['compute_infer_ms'] + t['compute_output_ms']:.2f}, "
                     f"mean batch {t['mean_batch']:.1f}")  # fmt: skip
        if cell.gateway:
            g = cell.gateway
            line += (
                f"; gateway in-app {g['in_app_ms']:.2f} ms (decode {g['decode_ms']:.2f}, detect "
                f"{g['detect_ms']:.2f}, preprocess {g['preprocess_ms']:.2f}, wait for Triton {g['infer_ms']:.2f})"
            )
        lines.append(line)
    if single:
        per_face_ms = 1000 * flop_per_face / (single["achieved_gflops"] * 1e9)
        lines.append(
            f"- pure model compute at batch {single['batch']:.0f} on 1 thread: {per_face_ms:.3f} ms CPU per "
            "face; compare with python_backend CPU ms/request above (the rest is Python and Triton overhead)"
        )
    return lines


def _f(x: float | int | None, spec: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def render(result: dict[str, Any]) -> str:
    """The markdown report printed by the benchmark."""
    m, s = result["machine"], result["settings"]
    cells = [Cell(**c) for c in result["cells"]]
    lines = [
        f"### Serving benchmark: `{result['model']}` ({result['flop_per_face'] / 1e6:.1f} MFLOP/face, "
        f"{result['parameters'] / 1e6:.2f} M parameters)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), Python "
        f"{m['python']}, Triton {result['triton_version']} (python backend, "
        f"{s['publish']['instance_count']} instances x "
        f"{s['publish']['torch_threads']} torch thread, dynamic batching {s['publish']['max_queue_delay_us']} us, "
        f"max batch {s['publish']['max_batch_size']}). Load generator on the same cores; closed loop, "
        f"{s['duration_s']:g} s per cell after {s['warmup_s']:g} s warm-up.",
        "",
        "| target | c | req/s | p50 ms | p99 ms | errors | client CPU ms/req | server CPU ms/req | Triton batch | "
        "other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        batch = _f(c.triton["mean_batch"], ".1f") if c.triton else "-"
        mark = f" ({c.attempts} runs)" if c.attempts > 1 else ""
        lines.append(
            f"| {c.target} | {c.concurrency} | {c.throughput_rps:.1f} | {_f(c.p50_ms)} | {_f(c.p99_ms)} | {c.errors} | "
            f"{c.client_cpu_ms:.2f} | {sum(c.server_cpu_ms.values()):.2f} | {batch} | {c.foreign_cores:.2f}{mark} |"
        )
    lines += ["", "| c | stack / baseline req/s | stack / baseline p99 | gateway adds p50 (ms) | "
              "batching on / off req/s | HTTP / gRPC req/s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["comparisons"]:
        lines.append(
            f"| {r['concurrency']} | {_f(r['stack_vs_baseline_rps'])}x | {_f(r['stack_vs_baseline_p99'])}x | "
            f"{_f(r['gateway_added_p50_ms'])} | {_f(r['batching_on_vs_off_rps'])}x | {_f(r['http_vs_grpc_rps'])}x |"
        )
    lines += [
        "",
        "| torch threads | batch | ms / batch | faces/s | achieved GFLOP/s | fp32 peak GFLOP/s (sgemm, conv) | "
        "of peak | other load (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["compute"]:
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['ms_per_batch']:.2f} | {r['faces_per_s']:.0f} | "
            f"{r['achieved_gflops']:.1f} | {r['peak_gflops']:.0f} ({r['sgemm_gflops']:.0f}, "
            f"{r['conv_gemm_gflops']:.0f}) | {100 * r['fraction_of_peak']:.0f} % | "
            f"{r['foreign_cores']:.2f} |"
        )
    disturbed = [f"{c.target} c={c.concurrency} ({c.foreign_cores:.2f})" for c in cells
                 if c.foreign_cores > s["max_foreign_cores"]]  # fmt: skip
    if disturbed:
        lines += ["", f"Still disturbed after reruns (other processes' cores): {', '.join(disturbed)}."]
    a = result["aims"]
    sb, go = a["stack_vs_baseline"], a["gateway_overhead"]
    lines += [
        "",
        f"Stack = gateway-face (gateway + Triton) vs the in-process baseline, same face PNG. Aim (vgg_fer): at "
        f"c={sb['concurrency']} >= 1.5x the baseline's req/s at no worse p99: {_f(sb['rps_ratio'])}x req/s, "
        f"{_f(sb['p99_ratio'])}x p99 -> {'met' if sb['met'] else 'not met'}"
        f"{'' if sb['applies'] else ' (the aim is for vgg_fer)'}.",
        f"Aim (small): the gateway adds < 2 ms p50 over Triton gRPC direct at c={go['concurrency']}: "
        f"{_f(go['added_p50_ms'])} ms -> {'met' if go['met'] else 'not met'}"
        f"{'' if go['applies'] else ' (the aim is for small)'}.",
        "",
        "What dominates (CPU per request from /proc, times from Triton's and the gateway's metrics):",
        *result["dominates"],
    ]
    for name, prof in result["py_spy"].items():
        libraries = ", ".join(f"{lib} {100 * share:.0f} %" for lib, share in prof["libraries"])
        functions = "; ".join(f"{frame} {100 * share:.0f} %" for frame, share in prof["functions"])
        what = "GIL held" if name == "gateway" else "busy"
        lines.append(f"- py-spy, {name} during gateway-face c={max(s['concurrency'])}: {what} "
                     f"{100 * prof['busy_share']:.0f} % of the time; own time by library: {libraries}; "
                     f"top functions: {functions}")  # fmt: skip
    return "\n".join(lines)


def side_by_side(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gateway's rows of every model next to the first model's, at each concurrency (one run)."""
    first = {(c["target"], c["concurrency"]): c for c in results[0]["cells"]}
    rows = []
    for result in results[1:]:
        for cell in result["cells"]:
            key = (cell["target"], cell["concurrency"])
            if cell["target"].startswith("gateway") and key in first:
                base = first[key]
                rows.append({"target": key[0], "concurrency": key[1], "model": result["model"],
                             "baseline_model": results[0]["model"], "p50_ms": cell["p50_ms"],
                             "baseline_p50_ms": base["p50_ms"], "p50_ratio": cell["p50_ms"] / base["p50_ms"],
                             "rps": cell["throughput_rps"], "baseline_rps": base["throughput_rps"]})  # fmt: skip
    return rows


def render_side_by_side(rows: list[dict[str, Any]]) -> str:
    lines = ["", "## Side by side (one run)", "",
             "| target | c | model | p50 ms | baseline model | p50 ms | p50 ratio | req/s | req/s |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['target']} | {r['concurrency']} | {r['model']} | {r['p50_ms']:.2f} | "
                     f"{r['baseline_model']} | {r['baseline_p50_ms']:.2f} | {r['p50_ratio']:.2f} | {r['rps']:.1f} | "
                     f"{r['baseline_rps']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small",
                        help=f"network(s) to build, untrained and seeded, comma-separated ({', '.join(MODELS)}); "
                        "several are measured one after the other in this run and compared side by side")  # fmt: skip
    parser.add_argument("--model-pt", type=Path, default=None, help="serve this exported TorchScript instead")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="publish section: Triton config")
    parser.add_argument("--max-foreign-cores", type=float, default=0.3,
                        help="run a cell again when other processes used more cores than this meanwhile")  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="extra runs of a disturbed cell")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait for other processes to calm down before a rerun")  # fmt: skip
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="py-spy binary: profile gateway and python backend in an extra run")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the servers are stopped on the way out
    names = [n for n in args.model.split(",") if n]
    if unknown_models := sorted(set(names) - set(MODELS)):
        parser.error(f"unknown models {unknown_models}; known: {', '.join(MODELS)}")
    if args.model_pt is not None and len(names) > 1:
        parser.error("--model-pt serves one model: give one --model")
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    results = [bench_model(name, args, targets) for name in names]
    for result in results:
        print(render(result))  # noqa: T201 - a benchmark prints its table
    output: dict[str, Any] = results[0]
    if len(results) > 1:
        output = {"models": results, "side_by_side": side_by_side(results)}
        print(render_side_by_side(output["side_by_side"]))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(_finite(output), indent=2, allow_nan=False) + "\n")
    return 0


def bench_model(model_name: str, args: argparse.Namespace, targets: list[str]) -> dict[str, Any]:
    """Every target at every concurrency for one network, then its compute efficiency; the result dict."""
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    params = PublishParams.from_yaml(args.params) if args.params.exists() else PublishParams()
    with tempfile.TemporaryDirectory(prefix="emotorch-bench-") as tmp:
        work = Path(tmp)
        model_pt = args.model_pt.resolve() if args.model_pt else build_torchscript(model_name, work / "model.pt")
        model = torch.jit.load(str(model_pt), map_location="cpu").eval()
        labels = list(model.labels)
        name = model_name if args.model_pt is None else model_pt.name
        size = model_input_size(model)
        inputs = make_inputs(size, FER_MARGIN)
        with torch.inference_mode():
            reference = model(torch.from_numpy(inputs.face))[0].numpy()
        logger.info("starting Triton, the gateway and the baseline for %s", name)
        with running_servers(work, model_pt, labels, params, size) as servers:
            plan = Plan(targets, concurrencies, args.warmup, args.duration, args.max_foreign_cores, args.retries,
                        args.quiet_wait, args.py_spy)  # fmt: skip
            cells, parity, profiles = asyncio.run(run_cells(servers, inputs, reference, plan, work))
        logger.info("measuring the model's FLOP/s against the fp32 peak (servers stopped)")
        flop_per_face, compute = measure_compute(
            model, params.max_batch_size, args.max_foreign_cores, args.retries, args.quiet_wait
        )
    info = machine()
    rows = comparisons(cells, concurrencies)
    result = {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flop_per_face": flop_per_face,
        "machine": info,
        "triton_version": servers.triton_version,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": concurrencies,
            "targets": targets,
            "max_foreign_cores": args.max_foreign_cores,
            "publish": asdict(params),
        },  # fmt: skip
        "parity_max_abs_diff": parity,
        "cells": [asdict(c) for c in cells],
        "comparisons": rows,
        "compute": compute,
        "aims": aims(name, rows),
        "dominates": dominates(cells, flop_per_face, compute, int(info["cores"] or 1)),
        "py_spy": profiles,
    }
    return result


def _finite(value: Any) -> Any:
    """NaN (a cell without a single answer) as JSON null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())

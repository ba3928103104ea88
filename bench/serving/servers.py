"""The servers of the serving bench: Triton on a fresh repository, the gateway and the baseline, on free ports."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bench.baseline_app import MODEL_PT_ENV
from emotorch import processes, triton_server
from emotorch.triton_server import TritonPorts
from pipelines.repository import publish_version
from pipelines.triton_config import PublishParams

ROOT = Path(__file__).resolve().parents[2]


NOBATCH_SUFFIX = "_nobatch"


_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server in its own session; it gets SIGTERM when the bench dies, even by SIGKILL (no orphans)."""
    prctl = ctypes.CDLL("libc.so.6").prctl  # loaded before the fork: the child only calls it
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=functools.partial(prctl, _PR_SET_PDEATHSIG, signal.SIGTERM),
        )  # fmt: skip


def publish_models(repository: Path, model_pt: Path, labels: list[str], params: PublishParams, size: int) -> list[str]:
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
    ports = TritonPorts(free_port(), free_port(), free_port())
    gateway_port, baseline_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        backend_dir = triton_server.prepare_backend_dir(work)
        command = triton_server.triton_command(repository, ports, models, backend_dir, f"emotorchbench{os.getpid()}")
        triton = spawn(command, triton_server.triton_environment(), work / "triton.log")
        stack.callback(triton_server.stop, triton)
        baseline_cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_app:create_app", "--factory",
                        "--host", "127.0.0.1", "--port", str(baseline_port), "--log-level", "warning"]  # fmt: skip
        baseline = spawn(baseline_cmd, {**os.environ, MODEL_PT_ENV: str(model_pt)}, work / "baseline.log")
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
        gateway = spawn(gateway_cmd, gateway_env, work / "gateway.log")
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

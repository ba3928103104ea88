"""Faults with a load generator running: Triton killed and restarted, hot swap, a corrupt version, a gateway
killed after acknowledging feedback. This module runs its own Triton on a copy of the model repository."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from emotorch import triton_server
from emotorch.triton_server import TritonPorts
from pipelines.synthetic import generate_faces
from tests.conftest import free_port, png_bytes
from tests.integration.conftest import spawn_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FACE = png_bytes(next(iter(generate_faces(1, seed=8)))[1])
TIMEOUT_S = 2.0


@dataclass
class Load:
    """A background client posting one face at a time; records (start time, status, seconds, model version)."""

    url: str
    results: list[tuple[float, int, float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=TIMEOUT_S * 5) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(f"{self.url}/v1/emotions", files={"image": ("f.png", FACE)},
                                           data={"consent": "true", "mode": "face"})  # fmt: skip
                    version = response.json()["model"]["version"] if response.status_code == 200 else None
                    status = response.status_code
                except httpx.HTTPError:
                    status, version = -1, None  # the gateway itself failed to answer
                self.results.append((started, status, time.monotonic() - started, version))
                time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class Stack:
    repository: Path
    ports: TritonPorts
    workdir: Path
    triton: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start_triton(self) -> None:
        self.triton = triton_server.start_triton(self.repository, self.ports, ["emotion"], cache_dir=self.workdir,
                                                 log_file=self.workdir / "triton.log")  # fmt: skip
        triton_server.wait_until_ready(self.triton, self.ports.http, ["emotion"], timeout_s=120)

    def kill_triton(self) -> None:
        assert self.triton is not None
        os.killpg(self.triton.pid, signal.SIGKILL)  # a crash: no drain, stubs die with it
        self.triton.wait()

    def publish(self, model: Path, metadata: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines.publish", "--params", str(self.workdir / "params.yaml"), "--model",
             str(model), "--metadata", str(metadata), "--repository", str(self.repository),
             "--receipt", str(self.workdir / "receipt.json"), "--triton-url", f"127.0.0.1:{self.ports.http}"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def versions(self) -> list[str]:
        return sorted((p.name for p in (self.repository / "emotion").iterdir() if p.name.isdigit()), key=int)


@pytest.fixture(scope="module")
def stack(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("faults")
    repository = workdir / "model_repository"
    shutil.copytree(pipeline_project / "model_repository", repository)
    shutil.copy(pipeline_project / "params.yaml", workdir / "params.yaml")
    stack = Stack(repository, TritonPorts(free_port(), free_port(), free_port()), workdir)
    stack.start_triton()
    stack.gateway, stack.url = spawn_gateway(f"127.0.0.1:{stack.ports.grpc}", workdir,
                                             triton_timeout_s=str(TIMEOUT_S), retry_after_s="2")  # fmt: skip
    try:
        yield stack
    finally:
        stop_gateway(stack.gateway)
        if stack.triton is not None and stack.triton.poll() is None:
            triton_server.stop(stack.triton)


def test_triton_killed_then_restarted(stack: Stack) -> None:
    with Load(stack.url) as load:
        time.sleep(2)
        killed_at = time.monotonic()
        stack.kill_triton()
        time.sleep(3)
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["ready"] is False
        outage = [r for r in load.results if r[0] > killed_at + 0.5]
        assert outage, "the load generator made no request during the outage"
        assert {status for _, status, _, _ in outage} <= {503, 504}, {s for _, s, _, _ in outage}
        assert max(seconds for _, _, seconds, _ in outage) < TIMEOUT_S * 2 + 1  # no request hangs
        failed = httpx.post(f"{stack.url}/v1/emotions", files={"image": ("f.png", FACE)},
                            data={"consent": "true", "mode": "face"}, timeout=10)  # fmt: skip
        assert failed.status_code == 503 and failed.headers["retry-after"] == "2"

        stack.start_triton()
        restarted_at = time.monotonic()
        deadline = restarted_at + 10
        while not any(r[0] > restarted_at and r[1] == 200 for r in load.results):
            assert time.monotonic() < deadline, "the gateway did not recover within 10 s of Triton's restart"
            time.sleep(0.1)
        recovery = min(r[0] for r in load.results if r[0] > restarted_at and r[1] == 200) - restarted_at
    assert httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200
    assert -1 not in {status for _, status, _, _ in load.results}  # the gateway answered every request
    print(f"recovered {recovery:.2f} s after Triton was ready again; {len(outage)} requests during the outage")  # noqa: T201


def test_hot_swap_under_load_fails_no_request(stack: Stack, pipeline_project: Path) -> None:
    before = stack.versions()
    with Load(stack.url) as load:
        time.sleep(1)
        result = stack.publish(pipeline_project / "models" / "model.pt", pipeline_project / "models" / "export.json")
        assert result.returncode == 0, result.stderr[-3000:]
        new = stack.versions()[-1]
        deadline = time.monotonic() + 10
        while not any(v == new for _, _, _, v in load.results):
            assert time.monotonic() < deadline, "no answer from the new version"
            time.sleep(0.1)
        time.sleep(1)
    statuses = [status for _, status, _, _ in load.results]
    assert len(statuses) > 20 and set(statuses) == {200}, f"{statuses.count(200)} ok of {len(statuses)}"
    assert int(new) == int(before[-1]) + 1 and load.results[-1][3] == new
    print(f"hot swap {before[-1]} -> {new}: {len(statuses)} requests, 0 failed")  # noqa: T201


def test_corrupt_version_is_refused_and_the_previous_keeps_serving(stack: Stack, pipeline_project: Path) -> None:
    serving = stack.versions()[-1]
    corrupt = stack.workdir / "corrupt.pt"
    corrupt.write_bytes(os.urandom(4096))
    with Load(stack.url) as load:
        result = stack.publish(corrupt, pipeline_project / "models" / "export.json")
        time.sleep(1)
    assert result.returncode != 0 and "previous version still serves" in result.stderr
    assert stack.versions()[-1] == serving and not list((stack.repository / "emotion").glob(".staging-*"))
    assert {status for _, status, _, _ in load.results} == {200}
    assert {version for _, _, _, version in load.results} == {serving}


def test_acknowledged_feedback_survives_a_gateway_kill(stack: Stack, tmp_path: Path) -> None:
    process, url = spawn_gateway(f"127.0.0.1:{stack.ports.grpc}", tmp_path)
    try:
        rec = httpx.post(f"{url}/v1/recommendations", json={"emotion": "happy", "k": 5}).json()
        items = [i["item_id"] for items in rec["domains"].values() for i in items]
        acknowledged = 0
        for item in items:
            for event in ("impression", "click", "like", "purchase"):  # distinct events: a replay is stored once
                response = httpx.post(f"{url}/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                                  "item_id": item, "event": event,
                                                                  "session_id": rec["session_id"]})  # fmt: skip
                acknowledged += response.status_code == 201
        process.kill()  # SIGKILL: no shutdown hooks, no flush
        process.wait()
    finally:
        if process.poll() is None:
            stop_gateway(process)
    with sqlite3.connect(tmp_path / "feedback.db") as db:
        stored = db.execute("select count(*) from events where recommendation_id = ?",
                            (rec["recommendation_id"],)).fetchone()[0]  # fmt: skip
    assert acknowledged == len(items) * 4 == stored


def _repository_is_valid(stack: Stack) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    model_dir = stack.repository / "emotion"
    text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    text_format.Parse((model_dir / "configs" / "libtorch.pbtxt").read_text(), model_config_pb2.ModelConfig())
    required = {"labels.txt", "metadata.json", "model.pt", "model.py"}
    for entry in model_dir.iterdir():
        if entry.name.isdigit():
            files = {p.name for p in entry.iterdir() if p.name != "__pycache__"}  # Triton's import cache
            assert required <= files <= required | {"model_card.md", "model_card.json"}, entry
        elif entry.name == "configs":
            assert all(p.name == "libtorch.pbtxt" or p.name.startswith(".staging-") for p in entry.iterdir()), entry
        elif entry.name == ".last_version":  # the high-water mark: at least every version present
            assert int(entry.read_text()) >= max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        else:
            assert entry.name == "config.pbtxt" or entry.name.startswith(".staging-"), entry


def test_publish_killed_midway_leaves_a_valid_repository(stack: Stack, pipeline_project: Path) -> None:
    """SIGKILL publish the moment its staging folder appears (mid-copy), several times; then publish again."""
    model_dir = stack.repository / "emotion"
    interrupted = 0
    for _ in range(5):
        before = set(stack.versions())
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.publish", "--params", str(stack.workdir / "params.yaml"),
             "--model", str(pipeline_project / "models" / "model.pt"),
             "--metadata", str(pipeline_project / "models" / "export.json"),
             "--repository", str(stack.repository), "--receipt", str(stack.workdir / "killed.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if any(p.name.startswith(".staging-") for p in model_dir.iterdir()):
                process.kill()
                break
            time.sleep(0.0005)
        process.wait()
        interrupted += process.returncode == -signal.SIGKILL and set(stack.versions()) == before
        _repository_is_valid(stack)
    # The next publish cleans up and serves its version; Triton never saw a half-written one.
    result = stack.publish(pipeline_project / "models" / "model.pt", pipeline_project / "models" / "export.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(model_dir.glob(".staging-*"))
    _repository_is_valid(stack)
    answer = httpx.post(f"{stack.url}/v1/emotions", files={"image": ("f.png", FACE)},
                        data={"consent": "true", "mode": "face"}, timeout=30).json()  # fmt: skip
    assert answer["model"]["version"] == stack.versions()[-1]
    print(f"publish killed mid-copy {interrupted} of 5 times; repository valid every time")  # noqa: T201

"""Real servers for integration tests: a pipeline run in a scratch project, Triton and the gateway.

Everything runs as subprocesses on free loopback ports and is stopped at the end of the session, also when
tests fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from emotorch import processes, triton_server
from emotorch.stack import tool_environment
from emotorch.triton_server import TritonPorts
from tests.conftest import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Small enough to train in well under a minute on 2 cores, large enough to land far above chance.
SMALL_PARAMS = {
    "generate": {"n_faces": 3000},
    "train": {"model": "small", "weights": "scratch", "epochs": 8, "batch_size": 32, "patience": 8,
              "torch_threads": 1},  # one thread: make test runs two pytest-xdist workers on 2 cores
}


def run_dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=tool_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


CODE_PACKAGES = ("pipelines", "emotorch")  # what the stages run and list as deps (tests/pipelines/test_stage_deps.py)


def copy_code(source: Path, destination: Path) -> None:
    """The project code a pipeline copy needs beside its dvc.yaml."""
    for package in CODE_PACKAGES:
        shutil.copytree(source / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))


def tracked_copy(project: Path, clone: Path) -> Path:
    """What a git clone of a pipeline `project` holds (before `dvc pull`): dvc.yaml, dvc.lock, params.yaml, the
    code and DVC's config, without its cache or any output."""
    clone.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(project / name, clone / name)
    copy_code(project, clone)
    shutil.copytree(project / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    return clone


def make_project(root: Path, overrides: dict[str, dict[str, object]]) -> Path:
    """A scratch copy of the project's pipeline (dvc.yaml, pipelines/, params.yaml with `overrides`)."""
    shutil.copy(PROJECT_ROOT / "dvc.yaml", root)
    copy_code(PROJECT_ROOT, root)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc(root, "init", "--no-scm", "-q").returncode == 0
    return root


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the project's pipeline, reproduced once with small params."""
    root = make_project(tmp_path_factory.mktemp("project"), SMALL_PARAMS)
    result = run_dvc(root, "repro")
    assert result.returncode == 0, f"dvc repro failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return root


@dataclass(frozen=True)
class RunningTriton:
    ports: TritonPorts
    repository: Path
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"


@contextmanager
def serving_triton(repository: Path, work: Path) -> Iterator[RunningTriton]:
    """A real Triton on free ports serving `repository`'s emotion model (log and backends in `work`); stopped
    on the way out, whatever happens."""
    ports = TritonPorts(free_port(), free_port(), free_port())
    process = triton_server.start_triton(repository, ports, ["emotion"], cache_dir=work, log_file=work / "triton.log")
    try:
        try:
            triton_server.wait_until_ready(process, ports.http, ["emotion"], timeout_s=120)
        except triton_server.TritonStartError:
            pytest.fail(f"Triton did not start:\n{(work / 'triton.log').read_text()[-4000:]}")
        yield RunningTriton(ports, repository, work / "triton.log")
    finally:
        triton_server.stop(process)


@pytest.fixture(scope="session")
def triton(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTriton]:
    with serving_triton(pipeline_project / "model_repository", tmp_path_factory.mktemp("triton")) as running:
        yield running


@dataclass(frozen=True)
class RunningGateway:
    url: str
    pid: int
    workdir: Path  # its log and feedback database


def spawn_gateway(triton_grpc_url: str, workdir: Path, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start a gateway subprocess on a free port (feedback DB and log in `workdir`); wait until it is ready."""
    port = free_port()
    log = workdir / f"gateway-{port}.log"
    # Limits far above what the tests send keep the rate limiter and admission control in the path without
    # throttling the tests (all of which come from one address); tests/gateway/test_admission.py tests them.
    env = {**os.environ, "EMOTORCH_DATABASE_URL": f"sqlite:///{workdir / 'feedback.db'}",
           "EMOTORCH_RATE_LIMIT_PER_S": "100000", "EMOTORCH_RATE_LIMIT_BURST": "100000",
           "EMOTORCH_MAX_IMAGES_IN_FLIGHT": "256", "EMOTORCH_MAX_IMAGES_PER_CLIENT": "256"}  # fmt: skip
    env |= {f"EMOTORCH_{k.upper()}": v for k, v in settings.items()}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "emotorch.cli", "gateway", "--port", str(port), "--triton-url", triton_grpc_url,
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_http_ok(f"{url}/readyz", process, 60, "gateway", log)
    except RuntimeError:
        stop_gateway(process)
        raise
    return process, url


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def stop_gateway(process: subprocess.Popen[bytes]) -> None:
    processes.stop(process)


@pytest.fixture(scope="session")
def gateway(triton: RunningTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    process, url = spawn_gateway(triton.grpc_url, workdir)
    try:
        yield RunningGateway(url, process.pid, workdir)
    finally:
        stop_gateway(process)


@pytest.fixture(scope="session")
def gateway_url(gateway: RunningGateway) -> str:
    return gateway.url


@dataclass(frozen=True)
class ServedProject:
    """A project folder whose model repository is served by its own Triton and gateway."""

    project: Path
    triton: RunningTriton
    gateway_url: str


@contextmanager
def served_project(root: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[ServedProject]:
    """Triton on `root`'s model repository and a gateway in front of it; both stopped on the way out."""
    with serving_triton(root / "model_repository", tmp_path_factory.mktemp(f"{name}-triton")) as running:
        gateway_process, url = spawn_gateway(running.grpc_url, tmp_path_factory.mktemp(f"{name}-gateway"))
        try:
            yield ServedProject(root, running, url)
        finally:
            stop_gateway(gateway_process)



@pytest.fixture(scope="session")
def real_faces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProject]:
    """`dvc repro` on the project's own params.yaml (only the synthetic evaluation set is smaller), served."""
    root = make_project(tmp_path_factory.mktemp("real-faces"), {"generate": {"n_faces": 700}})
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["train"]["weights"] != "scratch", "the default must serve the pretrained weights"
    result = run_dvc(root, "repro")
    assert result.returncode == 0, f"dvc repro failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    with served_project(root, tmp_path_factory, "real-faces") as served:
        yield served

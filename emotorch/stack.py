"""`emotorch up`: the local stack (model build if needed, Triton, gateway), ready-checked, stopped on Ctrl-C."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emotorch import monitoring, processes, triton_server
from emotorch.triton_server import TritonPorts
from pipelines import tracking

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackConfig:
    project_dir: Path
    repository: Path
    triton_ports: TritonPorts
    gateway_port: int
    prometheus_port: int = 9090
    mlflow_port: int = 5000
    host: str = "127.0.0.1"
    model_name: str = "emotion"


def state_dir(config: StackConfig) -> Path:
    """Where the running stack keeps its logs, Prometheus data and lock (ignored by git)."""
    return config.project_dir / ".cache" / "stack"


def published_versions(repository: Path, model_name: str) -> list[str]:
    """Version folders of the model that hold a model.pt."""
    model_dir = repository / model_name
    if not model_dir.is_dir():
        return []
    return sorted((p.name for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.pt").exists()), key=int)


def tool_environment() -> dict[str, str]:
    """Environment for pipeline tools: this venv's bin first (dvc stages call `python`), telemetry off."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("EMOTORCH_PYTHON", sys.executable)  # pipelines/stage.sh runs the stages with it
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def detector_dir(config: StackConfig) -> Path:
    """Where the `detector` stage writes MTCNN's ONNX networks (unless EMOTORCH_DETECTOR_DIR says otherwise)."""
    return Path(os.environ.get("EMOTORCH_DETECTOR_DIR", config.project_dir / "models" / "detector"))


def ensure_detector(config: StackConfig) -> None:
    """Export MTCNN's networks with `dvc repro detector` when they are missing (the Haar setting needs none)."""
    if os.environ.get("EMOTORCH_DETECTOR", "mtcnn").lower() == "haar" or (detector_dir(config) / "onet.onnx").exists():
        return
    logger.info("no face detector networks in %s: exporting them with `dvc repro detector`", detector_dir(config))
    subprocess.run([sys.executable, "-m", "dvc", "repro", "detector"], cwd=config.project_dir, env=tool_environment(),
                   check=True)  # fmt: skip


def ensure_model(config: StackConfig) -> None:
    """Reproduce the pipeline with `dvc repro` before serving: it builds a model when none exists, and its
    release stage (which runs every time) makes the repository and the `champion` alias match the decision."""
    logger.info("reconciling the model repository with `dvc repro`")
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=config.project_dir, env=tool_environment(), check=True)
    if not published_versions(config.repository, config.model_name):
        raise RuntimeError(
            f"no model is published in {config.repository}: the last trained model was not promoted "
            "(see metrics/promotion.json). Retrain (`dvc repro --force train`) or relax the gate in params.yaml."
        )


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class _Interrupted(Exception):
    """SIGINT or SIGTERM arrived before the stack was up."""


def _start_observability(config: StackConfig, children: list[tuple[str, subprocess.Popen[bytes]]]) -> dict[str, str]:
    """Prometheus (scraping the gateway and Triton, with the project's rules) and the MLflow UI."""
    urls: dict[str, str] = {}
    state = state_dir(config)
    state.mkdir(parents=True, exist_ok=True)
    try:
        monitoring.prometheus_binary()
    except monitoring.PrometheusError as e:
        logger.warning("not starting Prometheus: %s", e)
    else:
        prometheus_config = monitoring.render_config(
            state / "prometheus", [f"{config.host}:{config.gateway_port}"], [f"127.0.0.1:{config.triton_ports.metrics}"]
        )
        prometheus = monitoring.start_prometheus(
            prometheus_config, config.prometheus_port, state / "prometheus" / "data", state / "prometheus.log"
        )
        children.append(("prometheus", prometheus))
        monitoring.wait_until_ready(prometheus, config.prometheus_port)
        urls["prometheus"] = f"http://127.0.0.1:{config.prometheus_port}  (log {state / 'prometheus.log'})"
    # One web worker and no job runners: by default `mlflow ui` is 15 processes and ~2.2 GiB (PSS) on this
    # machine, for GenAI jobs a training project never submits; like this it is 2 processes and ~380 MiB.
    mlflow_ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(config.mlflow_port),
         "--backend-store-uri", tracking.tracking_uri(), "--workers", "1"],
        cwd=config.project_dir, env=tool_environment() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True, stdout=(state / "mlflow.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    children.append(("mlflow ui", mlflow_ui))
    base = f"http://127.0.0.1:{config.mlflow_port}"
    processes.wait_http_ok(f"{base}/health", mlflow_ui, 90, "mlflow ui")
    urls["mlflow ui"] = f"{training_runs_url(base)}  (log {state / 'mlflow.log'})"
    return urls


def training_runs_url(base: str) -> str:
    """The MLflow UI's page of the project's training runs (its home page opens on GenAI views instead)."""
    query = urllib.parse.urlencode({"experiment_name": tracking.EXPERIMENT})
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=5) as answer:
            experiment_id = json.load(answer)["experiment"]["experiment_id"]
    except (OSError, ValueError, KeyError) as e:  # no experiment yet, or an unexpected answer: the home page
        logger.debug("no training-runs page: %s", e)
        return base
    return f"{base}/#/experiments/{experiment_id}"


class AlreadyRunningError(RuntimeError):
    """Another `emotorch up` holds the project's stack lock."""


@contextmanager
def stack_lock(config: StackConfig) -> Iterator[None]:
    """Hold the project's stack lock while the stack runs: a second `make up` says who runs it instead of
    failing on a busy port. The kernel releases the lock when the holder dies, so a crash never leaves it stale."""
    path = state_dir(config) / "up.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise AlreadyRunningError(f"EmoTorch is already running here ({holder}); use it, or stop it with "
                                      "Ctrl-C in its terminal before starting another") from None  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, gateway http://{config.host}:{config.gateway_port}")
        handle.flush()
        yield
    finally:
        handle.close()


def run_stack(config: StackConfig) -> int:
    """Bring the stack up, print its URLs, and block until Ctrl-C or a part dies; always stop every part."""
    try:
        with stack_lock(config):
            return _run_stack(config)
    except AlreadyRunningError as e:
        logger.error("%s", e)
        return 1


def _run_stack(config: StackConfig) -> int:
    if not _ports_free(config) or not _models_built(config):
        return 1
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    signals = _StopSignals()
    try:
        _start_serving(config, children)
        urls = _start_observability(config, children)
        print(_banner(config, urls), flush=True)  # noqa: T201 - the command's output for the person at the terminal
        signals.started = True
        return _watch(children, signals)
    except (RuntimeError, triton_server.TritonStartError, monitoring.PrometheusError) as e:
        logger.error("%s", e)
        return 1
    except _Interrupted as e:
        logger.info("interrupted by signal %d while starting; stopping what started", e.args[0])
        return 128 + int(e.args[0])
    finally:
        _stop_all(children)
        signals.restore()


def _ports_free(config: StackConfig) -> bool:
    tp = config.triton_ports
    ports = [tp.http, tp.grpc, tp.metrics, config.gateway_port, config.prometheus_port, config.mlflow_port]
    busy = [p for p in ports if port_in_use(config.host, p)]
    if busy:
        logger.error("port(s) %s already in use: is another `make up` running? Stop it or choose other ports "
                     "(emotorch up --help)", busy)  # fmt: skip
    return not busy


def _models_built(config: StackConfig) -> bool:
    try:
        ensure_model(config)
        ensure_detector(config)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        logger.error("cannot build a model: %s", e)
        return False
    return True


class _StopSignals:
    """SIGINT/SIGTERM handling while the stack runs: a signal during start-up stops at once (not after every
    part is ready); once up, it ends the watch loop. `restore` puts the previous handlers back."""

    def __init__(self) -> None:
        self.stopping = False
        self.started = False
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if not self.started:
            raise _Interrupted(signum)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _start_serving(config: StackConfig, children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Triton, then the gateway in front of it; each appended to `children` as soon as it runs."""
    # Triton's start-up table and its harmless CUDA lines on CPU machines go to a file, not the terminal.
    triton_log = state_dir(config) / "triton.log"
    triton_log.parent.mkdir(parents=True, exist_ok=True)
    triton = triton_server.start_triton(config.repository, config.triton_ports, [config.model_name],
                                        log_file=triton_log)  # fmt: skip
    children.append(("triton", triton))
    triton_server.wait_until_ready(triton, config.triton_ports.http, [config.model_name])
    gateway = subprocess.Popen(
        [sys.executable, "-m", "emotorch.cli", "gateway", "--host", config.host, "--port", str(config.gateway_port),
         "--triton-url", f"127.0.0.1:{config.triton_ports.grpc}"],
        env={**os.environ, "EMOTORCH_DETECTOR_DIR": str(detector_dir(config))},
        start_new_session=True,
    )  # fmt: skip
    children.append(("gateway", gateway))
    processes.wait_http_ok(f"http://{config.host}:{config.gateway_port}/readyz", gateway, 60, "gateway")


def _banner(config: StackConfig, urls: dict[str, str]) -> str:
    base = f"http://{config.host}:{config.gateway_port}"
    lines = [
        "",
        "EmoTorch is up (Ctrl-C stops everything)",
        f"  demo page      {base}/",
        f"  gateway        {base}  (API docs {base}/docs)",
        f"  triton         http://127.0.0.1:{config.triton_ports.http}  grpc 127.0.0.1:{config.triton_ports.grpc}"
        f"  (log {state_dir(config) / 'triton.log'})",
        f"  triton metrics http://127.0.0.1:{config.triton_ports.metrics}/metrics",
        *[f"  {name:<14} {url}" for name, url in urls.items()],
        f"  try: .venv/bin/emotorch samples && curl -F image=@samples/selfie.jpg -F consent=true {base}/v1/emotions",
        "",
    ]
    return "\n".join(lines)


def _watch(children: list[tuple[str, subprocess.Popen[bytes]]], signals: _StopSignals) -> int:
    """Block until a signal (0) or until a part dies (1)."""
    while not signals.stopping:
        for name, process in children:
            if process.poll() is not None:
                logger.error("%s exited with code %s; stopping the stack", name, process.returncode)
                return 1
        time.sleep(0.5)
    return 0


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for name, process in reversed(children):
        logger.info("stopping %s (pid %d)", name, process.pid)
        if name == "triton":
            triton_server.stop(process)  # Triton stops its own python-backend stubs
        else:
            processes.stop(process, whole_group=True)

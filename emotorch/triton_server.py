"""Launch the real Triton Inference Server bundled in the nvidia-pytriton wheel against a model repository.

The bundled `tritonserver` needs four things to serve a python-backend model here (PLATFORM.md):
a backend directory holding the python backend and the stub for the running Python; LD_LIBRARY_PATH starting
with the interpreter's own lib dir, then the wheel's `nvidia_pytriton.libs` (without it the server hangs at
"loading"); the virtual environment's `bin` first on PATH so the stub imports torch; `model.py` in the version
folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from emotorch import processes

logger = logging.getLogger(__name__)


class TritonNotFoundError(RuntimeError):
    """The nvidia-pytriton wheel (and its tritonserver binary) is not installed."""


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready in time."""


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _pytriton_dirs() -> tuple[Path, Path]:
    try:
        import pytriton
    except ImportError as e:
        raise TritonNotFoundError("nvidia-pytriton is not installed: run `make venv`") from e
    package = Path(pytriton.__file__).parent
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def prepare_backend_dir(cache_dir: Path) -> Path:
    """Assemble `<cache_dir>/backends/python/` from the wheel's python backend and the stub for this Python."""
    home, _ = _pytriton_dirs()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": home / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": home / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": home / "python_backend_stubs" / version / "triton_python_backend_stub",
    }
    target = cache_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            raise TritonNotFoundError(f"{source} is missing from the nvidia-pytriton wheel (Python {version})")
        link = target / name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        link.symlink_to(source)
    return target.parent


def triton_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its python stub (library path and PATH order matter)."""
    env = dict(os.environ if base is None else base)
    _, libs = _pytriton_dirs()
    lib_path = [str(sysconfig.get_config_var("LIBDIR")), str(libs)]
    if env.get("LD_LIBRARY_PATH"):
        lib_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def triton_command(
    repository: Path,
    ports: TritonPorts,
    models: list[str],
    backend_dir: Path,
    instance_name: str,
    host: str = "127.0.0.1",
    config_name: str | None = None,
) -> list[str]:
    """The tritonserver command line: explicit model control, CPU only, ports as given.

    `config_name` selects `<model>/configs/<name>.pbtxt` instead of `config.pbtxt` where a model has one
    (publish writes `configs/libtorch.pbtxt` for the NGC image; the bundled server has no libtorch backend).
    """
    home, _ = _pytriton_dirs()
    command = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={repository.resolve()}",
        f"--backend-directory={backend_dir}",
        "--model-control-mode=explicit",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        # Loopback unless asked otherwise: the gateway is the only public entry point.
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=10",
        "--strict-readiness=true",
        # Several servers on one host must not share python-backend shared-memory regions.
        f"--backend-config=python,shm-region-prefix-name={instance_name}",
    ]
    command += [f"--load-model={m}" for m in models]
    if config_name:
        command.append(f"--model-config-name={config_name}")
    return command


def _launch_spec(
    repository: Path,
    ports: TritonPorts,
    models: list[str] | None,
    cache_dir: Path | None,
    host: str,
    config_name: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    models = ["emotion"] if models is None else models
    cache_dir = cache_dir or Path(os.environ.get("EMOTORCH_CACHE_DIR", Path.home() / ".cache" / "emotorch"))
    backend_dir = prepare_backend_dir(cache_dir)
    instance = f"emotorch{os.getpid()}p{ports.grpc}"
    command = triton_command(repository, ports, models, backend_dir, instance, host, config_name)
    logger.info("starting Triton: %s", " ".join(command))
    return command, triton_environment()


def start_triton(
    repository: Path,
    ports: TritonPorts,
    models: list[str] | None = None,
    cache_dir: Path | None = None,
    log_file: Path | None = None,
    host: str = "127.0.0.1",
    config_name: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start tritonserver as a child process (its own process group) and return it without waiting."""
    command, env = _launch_spec(repository, ports, models, cache_dir, host, config_name)
    out = log_file.open("ab") if log_file else None
    try:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
        )
    finally:
        if out:
            out.close()


def exec_triton(
    repository: Path,
    ports: TritonPorts,
    models: list[str] | None = None,
    host: str = "127.0.0.1",
    config_name: str | None = None,
) -> None:
    """Replace this process with tritonserver: signals (Ctrl-C, SIGTERM) reach Triton itself and nothing is
    left behind if the caller kills this PID."""
    command, env = _launch_spec(repository, ports, models, None, host, config_name)
    os.execve(command[0], command, env)


def wait_until_ready(
    process: subprocess.Popen[bytes], http_port: int, models: list[str], timeout_s: float = 120.0
) -> None:
    """Poll Triton's readiness endpoints until every model is ready; raise if it exits or times out."""
    urls = [f"http://127.0.0.1:{http_port}/v2/models/{m}/ready" for m in models] or [
        f"http://127.0.0.1:{http_port}/v2/health/ready"
    ]
    processes.wait_http_ok(urls, process, timeout_s, "tritonserver", error=TritonStartError)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int | None:
    """Stop a child started by `start_triton`: SIGTERM (Triton drains and exits), then SIGKILL."""
    return processes.stop(process, timeout_s)


def clear_cache(cache_dir: Path) -> None:
    """Remove the assembled backend directory (it is rebuilt on the next start)."""
    shutil.rmtree(cache_dir / "backends", ignore_errors=True)

"""Run a real Prometheus (Debian's `prometheus` package) with the project's rules against local targets."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import yaml

from emotorch import processes

logger = logging.getLogger(__name__)

MONITORING_DIR = Path(__file__).resolve().parents[1] / "monitoring"


class PrometheusError(RuntimeError):
    """Prometheus is missing, exited, or did not become ready."""


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError(
            "the `prometheus` binary is not installed: `apt-get install -y --no-install-recommends prometheus` "
            "(make up and make test do it when run as root)"
        )
    return found


def render_config(
    workdir: Path, gateway_targets: list[str], triton_targets: list[str], interval_s: float = 15.0
) -> Path:
    """Write monitoring/prometheus.yml with these targets and intervals (and a copy of the rules) to workdir."""
    config = yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = f"{interval_s:g}s"
    config["global"]["evaluation_interval"] = f"{interval_s:g}s"
    targets = {"gateway": gateway_targets, "triton": triton_targets}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    rules = workdir / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for name in config["rule_files"]:
        shutil.copy(MONITORING_DIR / name, workdir / name)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(config: Path, port: int, data_dir: Path, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Prometheus on 127.0.0.1:port (its own process group) without waiting."""
    command = [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2d",
    ]
    out = log_file.open("ab") if log_file else None
    try:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True)
    finally:
        if out:
            out.close()


def wait_until_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0) -> None:
    processes.wait_http_ok(f"http://127.0.0.1:{port}/-/ready", process, timeout_s, "prometheus", error=PrometheusError)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    processes.stop(process, timeout_s)

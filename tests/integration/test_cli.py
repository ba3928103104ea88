"""`emotorch triton` runs the real server and stops cleanly on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotorch import triton_server
from emotorch.stack import port_in_use
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_triton_command_serves_and_stops_on_signal(pipeline_project: Path, tmp_path: Path, signum: int) -> None:
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = (tmp_path / "triton.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emotorch.cli",
            "triton",
            "--model-repository",
            str(pipeline_project / "model_repository"),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "EMOTORCH_CACHE_DIR": str(tmp_path)},
    )
    try:
        triton_server.wait_until_ready(process, http, ["emotion"], timeout_s=120)  # type: ignore[arg-type]
        deadline = time.monotonic() + 15  # the metrics endpoint may open a moment after HTTP reports ready
        while not (port_in_use("127.0.0.1", grpc) and port_in_use("127.0.0.1", metrics)):
            assert time.monotonic() < deadline, "Triton's gRPC or metrics port did not open"
            time.sleep(0.1)
        process.send_signal(signum)
        assert process.wait(timeout=30) is not None
        assert not port_in_use("127.0.0.1", http)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_model_config_name_selects_the_published_libtorch_config(pipeline_project: Path, tmp_path: Path) -> None:
    """`--model-config-name=libtorch` makes Triton read configs/libtorch.pbtxt. The bundled server has no
    PyTorch backend, so the load fails naming it: proof that the production config was selected and parsed."""
    assert (pipeline_project / "model_repository" / "emotion" / "configs" / "libtorch.pbtxt").exists()
    log = tmp_path / "triton.log"
    ports = triton_server.TritonPorts(free_port(), free_port(), free_port())
    process = triton_server.start_triton(pipeline_project / "model_repository", ports, ["emotion"],
                                         cache_dir=tmp_path, log_file=log, config_name="libtorch")  # fmt: skip
    try:
        assert process.wait(timeout=120) != 0  # a model that fails to load at start stops the server
    finally:
        triton_server.stop(process)
    text = log.read_text()
    assert "pytorch" in text.lower() and "emotion" in text, text[-3000:]


def test_predict_prints_a_table_of_faces_and_names_what_failed(gateway_url: str, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data as skdata

    photo, broken, missing = tmp_path / "astronaut.jpg", tmp_path / "broken.jpg", tmp_path / "missing.jpg"
    Image.fromarray(skdata.astronaut()).save(photo, quality=90)
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")

    def predict(*photos: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "emotorch.cli", "predict", "--consent", "--url", gateway_url]
        command += [str(p) for p in photos]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    ok = predict(photo)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "HTTP Request" not in ok.stderr  # no request log noise around the table
    header, rule, row, *_ = ok.stdout.splitlines()
    assert header.split()[:3] == ["photo", "face", "box"] and set(rule) <= {"-", " "}
    assert row.startswith("astronaut.jpg") and "1 of 1 photo(s) analysed by model emotion v1" in ok.stdout
    mixed = predict(photo, broken, missing)
    assert mixed.returncode == 1
    assert "astronaut.jpg" in mixed.stdout and "1 of 3 photo(s) analysed" in mixed.stdout
    assert "broken.jpg: HTTP 415" in mixed.stdout and "missing.jpg: No such file" in mixed.stdout

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emotorch.cli import build_parser, main
from emotorch.stack import StackConfig, run_stack, stack_lock
from emotorch.triton_server import TritonPorts
from tests.conftest import free_port


@pytest.mark.parametrize("command", [[], ["up"], ["triton"], ["gateway"], ["predict"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: emotorch" in capsys.readouterr().out


def test_ports_are_options() -> None:
    args = build_parser().parse_args(["triton", "--http-port", "9000", "--grpc-port", "9001", "--metrics-port", "9002"])
    assert (args.http_port, args.grpc_port, args.metrics_port) == (9000, 9001, 9002)
    assert build_parser().parse_args(["up", "--port", "9090"]).port == 9090


def test_a_second_up_says_one_is_already_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def config() -> StackConfig:
        ports = TritonPorts(free_port(), free_port(), free_port())
        return StackConfig(tmp_path, tmp_path / "model_repository", ports, free_port(), free_port(), free_port())

    first = config()
    with stack_lock(first), caplog.at_level(logging.ERROR):
        assert run_stack(config()) == 1  # other ports: it is the lock, not a busy port, that stops it
    assert "already running" in caplog.text and f"gateway http://127.0.0.1:{first.gateway_port}" in caplog.text
    with stack_lock(first):  # released when the first holder stopped
        pass


def test_predict_needs_consent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"not used")
    assert main(["predict", str(photo), "--url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "--consent" in capsys.readouterr().out

from __future__ import annotations

import pytest

from emotorch.cli import build_parser, main


@pytest.mark.parametrize("command", [[], ["up"], ["triton"], ["gateway"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: emotorch" in capsys.readouterr().out


def test_ports_are_options() -> None:
    args = build_parser().parse_args(["triton", "--http-port", "9000", "--grpc-port", "9001", "--metrics-port", "9002"])
    assert (args.http_port, args.grpc_port, args.metrics_port) == (9000, 9001, 9002)
    assert build_parser().parse_args(["up", "--port", "9090"]).port == 9090

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emotorch.cli import build_parser, main
from emotorch.stack import StackConfig, run_stack, stack_lock
from emotorch.triton_server import TritonPorts
from tests.conftest import free_port


@pytest.mark.parametrize("command", [[], ["up"], ["triton"], ["gateway"], ["predict"], ["samples"]])
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


def test_predict_says_when_the_gateway_is_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["predict", "--consent", str(photo), str(photo), "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    out = capsys.readouterr().out
    assert out.count("could not be reached") == 1 and "is `make up` running?" in out


def test_predict_goes_on_after_a_dropped_connection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that drops the first connection without answering: that photo is retried, the rest go on."""
    import socket
    import threading

    answer = {"faces": [{"box": {"x": 1, "y": 2, "width": 30, "height": 30}, "emotion": "happy", "uncertain": False,
                         "most_likely": "happy", "confidence": 0.9,
                         "probabilities": {"happy": 0.9, "sad": 0.1}}],
              "model": {"name": "emotion", "version": "3"}, "timings_ms": {}}  # fmt: skip
    calls: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(1)
            if len(calls) == 1:
                self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all
                return
            _send_json(self, answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        photos = [tmp_path / f"{name}.png" for name in ("one", "two")]
        for photo in photos:
            photo.write_bytes(b"\x89PNG fake")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["predict", "--consent", *map(str, photos), "--url", url]) == 0
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert len(calls) == 3 and "2 of 2 photo(s) analysed by model emotion v3" in out


def test_predict_counts_only_what_was_analysed_when_the_gateway_goes_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    answer = {"faces": [], "model": {"name": "emotion", "version": "3"}, "timings_ms": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            _send_json(self, answer)
            server.socket.close()  # the gateway stops after its first answer: later connections are refused

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    photos = [tmp_path / f"{i}.png" for i in range(3)]
    for photo in photos:
        photo.write_bytes(b"\x89PNG fake")
    try:
        assert main(["predict", "--consent", *map(str, photos), "--url", url]) == 1
    finally:
        thread.join(timeout=10)
        server.server_close()
    out = capsys.readouterr().out
    assert "1 of 3 photo(s) analysed" in out and "could not be reached" in out


def _send_json(handler: BaseHTTPRequestHandler, payload: object) -> None:
    """A fake gateway's 200 answer."""
    body = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_waiting_for_a_server_that_died_says_so_with_its_log(tmp_path: Path) -> None:
    import subprocess
    import sys

    from emotorch.processes import wait_http_ok

    log = tmp_path / "server.log"
    log.write_text("Traceback ...\nOSError: address already in use\n")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(RuntimeError, match=r"(?s)gateway exited with code 3 before it was ready:.*already in use"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/readyz", process, 5, "gateway", log)


def test_predict_waits_as_a_busy_gateway_asks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Admission control answers 503 + Retry-After when the gateway is full: predict waits and sends again."""
    import threading

    answer = {"faces": [], "model": {"name": "emotion", "version": "3"}, "timings_ms": {}}
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            if len(statuses) < 2:
                statuses.append(503)
                body = b'{"title": "Service busy", "status": 503, "detail": "at capacity"}'
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            statuses.append(200)
            _send_json(self, answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        photo = tmp_path / "one.png"
        photo.write_bytes(b"\x89PNG fake")
        assert main(["predict", "--consent", str(photo), "--url", f"http://127.0.0.1:{server.server_address[1]}"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [503, 503, 200] and "1 of 1 photo(s) analysed" in capsys.readouterr().out

"""A real gateway process (uvicorn, as `emotorch gateway` runs it) without a model, for protocol-level tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from emotorch import processes
from tests.conftest import free_port


@dataclass(frozen=True)
class Gateway:
    host: str
    port: int
    pid: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A raw TCP connection from `source` (any 127.x.y.z address is this machine)."""
        sock = socket.create_connection((self.host, self.port), timeout=10, source_address=(source, 0))
        return sock


@contextmanager
def gateway_process(tmp_path: Path, **settings: str) -> Iterator[Gateway]:
    """Start `emotorch gateway` on a free loopback port (Triton absent: it starts unready); stop it after."""
    port = free_port()
    log = tmp_path / f"gateway-{port}.log"
    env = {**os.environ, "EMOTORCH_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.db'}",
           "EMOTORCH_MODEL_WAIT_S": "0", "EMOTORCH_TRITON_URL": f"127.0.0.1:{free_port()}"}  # fmt: skip
    env |= {f"EMOTORCH_{k.upper()}": v for k, v in settings.items()}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "emotorch.cli", "gateway", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield Gateway("127.0.0.1", port, process.pid, log)
    finally:
        processes.stop(process)


def read_status(sock: socket.socket) -> int | None:
    """The status code of the answer on `sock`, or None when the server closed or reset it without one."""
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, TimeoutError):
        return None
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

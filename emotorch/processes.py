"""The child processes the stack (and the serving bench) starts: waiting until one answers, and stopping it
(each runs in its own process group)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0, whole_group: bool = False) -> int | None:
    """SIGTERM the child (or its whole process group), wait, then SIGKILL the group; return its exit code.

    `whole_group` is for programs whose workers do not stop with their parent (mlflow ui, uvicorn workers);
    Triton stops its own python-backend stubs and must get the signal alone to drain cleanly.
    """
    if process.poll() is not None:
        return process.returncode
    try:
        if whole_group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d did not stop in %.0f s; killing its process group", process.pid, timeout_s)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()
    return process.returncode


def wait_http_ok(
    url: str, process: subprocess.Popen[bytes], timeout_s: float, what: str, log: Path | None = None
) -> None:
    """Poll `url` until it answers 200; raise if `process` exits first or the deadline passes (with the tail of
    its `log`, when given)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # URLError is an OSError: not listening yet, or not ready
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s ({url}){_tail(log)}")


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-3000:]}" if log is not None and log.exists() else ""

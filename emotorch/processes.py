"""The child processes the stack (and the serving bench) starts: waiting until one answers, and stopping it
(each runs in its own process group)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
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
    urls: str | Sequence[str],
    process: subprocess.Popen[bytes],
    timeout_s: float,
    what: str,
    log: Path | None = None,
    error: type[Exception] = RuntimeError,
) -> None:
    """Poll every one of `urls` until each answers 200: the one readiness wait of the stack, the tests and the
    benches. Raise `error` if `process` exits first or the deadline passes (with the tail of its `log`)."""
    pending = [urls] if isinstance(urls, str) else list(urls)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise error(f"{what} exited with code {process.returncode} before it was ready{_tail(log)}")
        pending = [url for url in pending if not _answers_ok(url)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise error(f"{what} not ready after {timeout_s:.0f} s ({', '.join(pending)}){_tail(log)}")
        time.sleep(0.2)


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:  # URLError is an OSError: not listening yet, or not ready
        return False


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-3000:]}" if log is not None and log.exists() else ""

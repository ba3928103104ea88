"""Stopping the child processes the stack starts (each in its own process group)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

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

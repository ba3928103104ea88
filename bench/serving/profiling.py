"""py-spy profiles of the gateway and a python-backend stub, summarised by package."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.serving.cpu import descendants, process_groups
from bench.serving.load import Send, closed_loop
from bench.serving.servers import Servers

logger = logging.getLogger("bench.serving")

PROFILE_RATE_HZ = 200


def _package(path: str) -> str:
    """The library a source file belongs to: the site-packages folder, `gateway`, or the stdlib module."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    parts = Path(path).parts
    if "gateway" in parts:
        return "gateway"
    if len(parts) > 1 and parts[-2].isdigit():  # a Triton version folder
        return f"backend {parts[-1]}"
    return parts[-2] if len(parts) > 1 and not parts[-2].startswith("python3") else Path(path).stem


def summarise_profile(raw: str, seconds: float, n: int = 6) -> dict[str, Any]:
    """py-spy's raw (collapsed-stack) samples: busy share, and own time by function and by library."""
    by_frame: dict[str, int] = {}
    by_package: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", leaf)
        function, path = (match.group(1), match.group(2)) if match else (leaf, "?")
        name = f"{function} ({Path(path).name})"
        by_frame[name] = by_frame.get(name, 0) + int(count)
        by_package[_package(path)] = by_package.get(_package(path), 0) + int(count)
    total = sum(by_frame.values()) or 1

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, c / total) for k, c in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]

    return {"samples": total, "busy_share": total / (PROFILE_RATE_HZ * seconds), "functions": top(by_frame),
            "libraries": top(by_package)}  # fmt: skip


async def profile(
    py_spy: Path, servers: Servers, send: Send, concurrency: int, seconds: int, work: Path
) -> dict[str, dict[str, Any]]:
    """py-spy on the gateway and on one python-backend stub of the batching model while gateway-face runs.

    An extra run after the measured ones: sampling slows down the processes it samples. The gateway is sampled
    only while a thread holds the GIL (its idle worker threads would otherwise show as busy), so its busy share
    is how much of the time its one interpreter was running Python.
    """
    stubs = [pid for pid in descendants(servers.pids["tritonserver"])
             if f"/{servers.model_name}/" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]  # fmt: skip
    sampled = {"gateway": (servers.pids["gateway"], ["--gil"]), "python_backend": (stubs[0], [])}
    recorders = {}
    for name, (pid, flags) in sampled.items():
        command = [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate",
                   str(PROFILE_RATE_HZ), "--full-filenames", *flags, "--format", "raw", "--output",
                   str(work / f"py-spy-{name}.txt")]  # fmt: skip
        recorders[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await closed_loop(send, concurrency, 0.5, seconds + 1.0, process_groups(servers))
    out = {}
    for name, recorder in recorders.items():
        _, stderr = recorder.communicate(timeout=60)
        raw = work / f"py-spy-{name}.txt"
        if recorder.returncode != 0 or not raw.exists():
            logger.warning("py-spy on %s failed: %s", name, stderr.decode(errors="replace")[-500:])
            continue
        out[name] = summarise_profile(raw.read_text(), seconds)
    return out

"""CPU accounting from /proc: the CPU seconds of each process group of a run, and of everything else."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from bench.serving.servers import Servers

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after "pid (comm) "; state is [0]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def process_groups(servers: Servers) -> dict[str, list[int]]:
    """Every process of the run by role; Triton's python-backend stubs (one per model instance) apart."""
    groups = {name: [pid, *descendants(pid)] for name, pid in servers.pids.items() if name != "tritonserver"}
    groups["tritonserver"] = [servers.pids["tritonserver"]]
    groups["python_backend"] = descendants(servers.pids["tritonserver"])
    groups["client"] = [os.getpid()]
    return groups


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group (all threads), and by the whole machine (`machine`)."""
    snapshot: dict[str, float] = {}
    for name, pids in groups.items():
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = _stat_fields(pid)
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        snapshot[name] = ticks / CLK_TCK
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, steal = int(cpu[0]), int(cpu[1]), int(cpu[2]), int(cpu[7])
    snapshot["machine"] = (user + nice + system + steal) / CLK_TCK  # steal: the hypervisor took it
    return snapshot


def wait_for_quiet(groups: dict[str, list[int]], max_foreign_cores: float, timeout_s: float) -> None:
    """Block (at most `timeout_s`) until other processes use at most `max_foreign_cores` over one second."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        first = cpu_snapshot(groups)
        time.sleep(1.0)
        last = cpu_snapshot(groups)
        if (last["machine"] - first["machine"]) - sum(last[k] - first[k] for k in groups) <= max_foreign_cores:
            return

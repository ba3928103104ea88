"""Helpers shared by every test folder."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER:
    # Two workers share the cores: one math thread per process (pipeline stages, Triton's backends, the gateway
    # inherit it). Two processes each running two spinning OpenMP threads on 2 cores train ~10x slower.
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

# Under pytest-xdist (`make test` runs two workers) each worker hands out ports from its own block below the
# kernel's ephemeral range (32768 and up here), in turn, so two workers never pick the same free port, and a
# port handed out for a server that has not bound it yet is not handed out again until the block wraps.
PORT_BLOCK = 4000
EPHEMERAL_FLOOR = 32_768
_first = 10_000 + PORT_BLOCK * int(_WORKER[2:]) if _WORKER.startswith("gw") else EPHEMERAL_FLOOR
# More workers than blocks below the floor draw from the kernel like a run without workers.
_NEXT_PORTS = itertools.cycle(range(_first, _first + PORT_BLOCK)) if _first + PORT_BLOCK <= EPHEMERAL_FLOOR else None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port nobody listens on right now (8000-8002 may be taken on these machines)."""
    if _NEXT_PORTS is not None:
        for _, port in zip(range(PORT_BLOCK), _NEXT_PORTS, strict=False):
            if _bindable(port):
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup`: every test that uses the session's pipeline project (and
    the Triton and gateway serving it) runs on one worker, which builds them once; other tests stay with the
    rest of their file (module fixtures start their own servers or projects once)."""
    for item in items:
        group = "session-stack" if "pipeline_project" in item.fixturenames else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MTCNN's networks exported once per session, as the `detector` stage does; every gateway the tests build
    or start (they inherit the environment) finds them through EMOTORCH_DETECTOR_DIR."""
    from pipelines.detector_export import export_all

    out = tmp_path_factory.mktemp("detector")
    export_all(out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMOTORCH_DETECTOR_DIR", str(out))
        yield out


PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What a test run may leave in the project: test tools' own caches and the browser tests' screenshots.
TEST_OUTPUTS = (".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "test-artifacts/")


def project_state(root: Path = PROJECT_ROOT) -> dict[str, tuple[int, int] | None]:
    """`git status` with ignored files, as {path: (size, mtime) for files, None for folders}, test outputs aside."""
    listing = subprocess.run(["git", "status", "--porcelain", "--ignored", "-z"], cwd=root, capture_output=True,
                             check=True, timeout=60).stdout.decode()  # fmt: skip
    state: dict[str, tuple[int, int] | None] = {}
    for entry in filter(None, listing.split("\0")):
        path = entry[3:]
        if path.startswith(TEST_OUTPUTS) or "__pycache__" in path:
            continue
        full = root / path
        state[entry] = (full.stat().st_size, full.stat().st_mtime_ns) if full.is_file() else None
    return state


@pytest.fixture(scope="session", autouse=True)
def project_files_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never write into the user's project: every gateway a test builds or starts (they inherit the
    environment) keeps its feedback database in a temporary folder, and after the session the working tree,
    ignored files included, is exactly as it was (the user's own `emotorch-feedback.db`, `mlflow.db`...)."""
    if not (PROJECT_ROOT / ".git").exists():
        yield  # not a checkout (an installed copy): nothing of the user's to compare
        return
    before = project_state()
    database = tmp_path_factory.mktemp("feedback") / "feedback.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMOTORCH_DATABASE_URL", f"sqlite:///{database}")
        yield
    after = project_state()
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"the tests changed the project's files: {changed}"

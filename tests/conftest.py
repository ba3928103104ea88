"""Helpers shared by every test folder."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now (8000-8002 may be taken on these machines)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

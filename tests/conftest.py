"""Helpers shared by every test folder."""

from __future__ import annotations

import socket
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

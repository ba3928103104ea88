"""Helpers shared by every test folder."""

from __future__ import annotations

import socket

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

"""Data minimisation and client identity as plain functions, and the answers that must stay small or exact."""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.clientip import client_key, forwarded_client, parse_ip, parse_networks
from gateway.privacy import SESSION_ID_PATTERN, coarsen, new_session_id, session_digest
from gateway.settings import Settings
from tests.conftest import free_port

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0,
                        database_url=f"sqlite:///{tmp_path / 'f.db'}", rate_limit_per_s=0)  # fmt: skip
    with TestClient(create_app(settings)) as c:
        yield c


def test_coarsened_vectors_sit_on_the_grid_and_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    for alpha in (0.1, 1.0, 10.0):
        for p in rng.dirichlet([alpha] * 7, size=300):
            stored = coarsen(dict(zip(LABELS, p.tolist(), strict=True)))
            assert sum(stored.values()) == pytest.approx(1.0)
            assert all(round(v * 10) == pytest.approx(v * 10) for v in stored.values())
            assert max(abs(stored[k] - q) for k, q in zip(LABELS, p, strict=True)) < 0.1 + 1e-9


def test_coarsening_makes_near_identical_readings_indistinguishable() -> None:
    """What a stored row can tell apart: on tenths at most 8,008 vectors exist; photos of the same expression
    (jitter of a few hundredths around one reading) collapse to a handful of rows instead of one each."""
    assert sum(1 for c in itertools.product(range(11), repeat=7) if sum(c) == 10) == 8008
    rng = np.random.default_rng(1)
    base = np.array([0.02, 0.01, 0.03, 0.81, 0.09, 0.02, 0.02])
    readings = [np.clip(base + rng.normal(0, 0.01, 7), 0, None) for _ in range(1000)]
    full = {tuple(r / r.sum()) for r in readings}
    stored = {tuple(coarsen(dict(zip(LABELS, (r / r.sum()).tolist(), strict=True))).values()) for r in readings}
    assert len(full) == 1000 and len(stored) <= 10, stored


def test_session_ids_are_unguessable_and_stored_as_digests() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 43 for i in ids)  # 256 bits, base64url
    assert all(re.fullmatch(SESSION_ID_PATTERN, i) for i in ids)
    one = next(iter(ids))
    assert session_digest(one) == session_digest(one) != one and len(session_digest(one)) == 64


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "client"),
    [
        ("203.0.113.9", ["1.2.3.4"], [], "203.0.113.9"),  # no proxy trusted: the header is ignored
        ("203.0.113.9", ["1.2.3.4"], ["10.0.0.0/8"], "203.0.113.9"),  # the peer is no proxy
        ("10.0.0.5", ["1.2.3.4"], ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.5", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], ["10.0.0.0/8"], "1.2.3.4"),  # forged left part ignored
        ("10.0.0.5", ["6.6.6.6", "1.2.3.4"], ["10.0.0.0/8"], "1.2.3.4"),  # several headers: in order
        ("10.0.0.5", ["x" * 100_000], ["10.0.0.0/8"], "10.0.0.5"),  # junk: the proxy itself
        ("10.0.0.5", ["1.2.3.4, junk"], ["10.0.0.0/8"], "10.0.0.5"),
        ("10.0.0.5", [" 2001:db8::1 "], ["10.0.0.0/8"], "2001:db8::1"),
        ("10.0.0.5", ["::ffff:1.2.3.4"], ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.5", [", ".join(["10.0.0.1"] * 40)], ["10.0.0.0/8"], "10.0.0.1"),  # bounded walk
    ],
)
def test_forwarded_client(peer: str, forwarded: list[str], proxies: list[str], client: str) -> None:
    address = parse_ip(peer)
    assert address is not None
    found = forwarded_client(address, [f.encode() for f in forwarded], parse_networks(proxies))
    assert str(found) == client


def test_client_keys_are_bounded_addresses() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("1.2.3.4") == "1.2.3.4" and client_key("not an address" * 1000) == "unknown"
    assert parse_ip("1.2.3.4:80") is None and parse_ip("[::1]") is None and parse_ip("a" * 10_000) is None
    assert isinstance(parse_ip("::1"), ipaddress.IPv6Address)


@pytest.mark.parametrize("consent", ["True", "TRUE", " true", "true ", "true\n", "\u00a0true", "yes", "1", ""])
def test_consent_is_exactly_true(client: TestClient, consent: str) -> None:
    response = client.post("/v1/emotions", files={"image": ("f.png", b"x")}, data={"consent": consent})
    assert response.status_code == 422 and "exactly 'true'" in response.json()["detail"]


def test_the_openapi_schema_says_what_consent_accepts(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    multipart = spec["paths"]["/v1/recommendations"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert multipart["schema"]["properties"]["consent"]["enum"] == ["true"]


@pytest.mark.parametrize(
    "payload",
    [
        {"probabilities": {f"label-{i}": 0.1 for i in range(50_000)}},
        {"emotion": "sad", **{f"extra-{i}": 1 for i in range(50_000)}},
        {"emotion": "sad", "domains": [f"d{i}" * 50 for i in range(5)]},
    ],
)
def test_error_bodies_are_bounded(client: TestClient, payload: dict) -> None:  # type: ignore[type-arg]
    response = client.post("/v1/recommendations", json=payload)
    assert response.status_code == 422 and len(response.content) < 4096, len(response.content)


def test_validation_error_lists_are_bounded(client: TestClient) -> None:
    response = client.post("/v1/feedback", json={f"extra-{i}": 1 for i in range(5000)})
    body = response.json()
    assert response.status_code == 422 and len(body["errors"]) <= 20 and body["errors_omitted"] > 4000
    assert len(response.content) < 8192

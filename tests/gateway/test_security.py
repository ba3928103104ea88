"""Rate limiting, CORS and the admin token, on a real app with a real SQLite store (no model needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import DEFAULT_CATALOG
from gateway.settings import Settings
from tests.conftest import free_port


def make_client(tmp_path: Path, **overrides: object) -> TestClient:
    settings = Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0,  # type: ignore[arg-type]
                        database_url=f"sqlite:///{tmp_path / 'f.db'}", **overrides)  # fmt: skip
    return TestClient(create_app(settings))


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, rate_limit_per_s=2, rate_limit_burst=3) as client:
        yield client


def test_rate_limit_answers_429_with_retry_after(limited: TestClient) -> None:
    statuses = [limited.post("/v1/recommendations", json={"emotion": "sad", "k": 1}).status_code for _ in range(6)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    response = limited.post("/v1/recommendations", json={"emotion": "sad", "k": 1})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["title"] == "Too many requests"
    assert limited.get("/healthz").status_code == 200  # health and metrics are never throttled
    assert limited.get("/metrics").status_code == 200


def test_cors_allows_only_configured_origins(tmp_path: Path) -> None:
    with make_client(tmp_path, cors_origins=["https://app.example"], rate_limit_per_s=0) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        allowed = client.options("/v1/recommendations", headers={"Origin": "https://app.example", **preflight})
        assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
        denied = client.options("/v1/recommendations", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers
    with make_client(tmp_path, rate_limit_per_s=0) as client:  # no origins configured: no CORS at all
        response = client.get("/healthz", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers


def test_admin_routes_need_the_token(tmp_path: Path) -> None:
    with make_client(tmp_path, rate_limit_per_s=0) as client:  # no token configured: disabled
        assert client.post("/v1/admin/catalog/reload").status_code == 403
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(DEFAULT_CATALOG.read_text())
    with make_client(tmp_path, rate_limit_per_s=0, admin_token="s3cret", catalog_path=catalog) as client:
        assert client.post("/v1/admin/catalog/reload").status_code == 401
        assert client.post("/v1/admin/catalog/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
        admin = {"Authorization": "Bearer s3cret"}
        ok = client.post("/v1/admin/catalog/reload", headers=admin)
        assert ok.status_code == 200 and ok.json()["items"] == len(DEFAULT_CATALOG.read_text().splitlines()) - 1
        assert client.post("/v1/admin/learned-state/rebuild").status_code == 401
        rebuilt = client.post("/v1/admin/learned-state/rebuild", headers=admin)
        assert rebuilt.status_code == 200 and rebuilt.json()["rebuilt"] is True
        # A reloaded catalog is used by the next request; a broken one is refused and the old one stays.
        lines = DEFAULT_CATALOG.read_text().splitlines()
        catalog.write_text("\n".join([lines[0], *[line for line in lines if line.startswith("song-upbeat-pop-0")]]))
        assert client.post("/v1/admin/catalog/reload", headers=admin).json()["items"] == 9
        body = client.post("/v1/recommendations", json={"emotion": "happy", "domains": ["songs"], "k": 20}).json()
        assert {i["item_id"] for i in body["domains"]["songs"]} <= {f"song-upbeat-pop-0{n}" for n in range(1, 10)}
        catalog.write_text("id,title\nbroken,row\n")
        broken = client.post("/v1/admin/catalog/reload", headers=admin)
        assert broken.status_code == 422 and "missing column" in broken.json()["detail"]
        assert client.post("/v1/recommendations", json={"emotion": "happy", "k": 1}).status_code == 200
        refresh = client.post("/v1/admin/model/refresh", headers=admin)
        assert refresh.status_code == 503  # no Triton here: a clear answer, not a crash

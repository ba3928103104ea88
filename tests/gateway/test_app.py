"""Gateway behaviour that needs no model: limits, consent, errors, and Triton being unreachable."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import free_port, png_bytes


@pytest.fixture
def client() -> Iterator[TestClient]:
    # Nothing listens on this port: the real "Triton is down" situation, no mock involved.
    settings = Settings(
        triton_url=f"127.0.0.1:{free_port()}",
        model_wait_s=0,
        triton_timeout_s=1,
        max_upload_bytes=64 * 1024,
        retry_after_s=7,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def face_png() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8))


def test_alive_but_not_ready_without_triton(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json() == {"ready": False, "model": None}


def test_triton_down_is_a_503_with_retry_after(client: TestClient) -> None:
    response = client.post("/v1/emotions", files={"image": ("f.png", face_png())}, data={"consent": "true"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/problem+json"
    assert "not available" in response.json()["detail"]


def test_consent_is_checked_before_anything_else(client: TestClient) -> None:
    response = client.post("/v1/emotions", files={"image": ("f.png", face_png())})
    assert response.status_code == 422 and "'consent'" in response.json()["detail"]


def test_declared_oversize_body_is_refused_unread(client: TestClient) -> None:
    response = client.post("/v1/emotions", files={"image": ("f.png", b"\0" * 70_000)}, data={"consent": "true"})
    assert response.status_code == 413
    assert response.json()["title"] == "Payload too large" and "65536" in response.json()["detail"]


def test_streamed_oversize_body_is_cut_off(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/v1/emotions", content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["status"] == 413


def test_validation_errors_name_the_field_without_echoing_input(client: TestClient) -> None:
    response = client.post("/v1/emotions", data={"consent": "true", "secret": "s3cr3t-value"})
    body = response.json()
    assert response.status_code == 422 and body["errors"][0]["field"] == "body.image"
    assert "s3cr3t-value" not in response.text


def test_openapi_documents_the_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/emotions"]["post"]
    assert {"200", "413", "415", "422", "429", "503", "504"} <= set(operation["responses"])
    consent = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert spec["components"]["schemas"][consent]["properties"]["consent"]["enum"] == ["true"]  # exactly, as checked
    assert "examples" in spec["components"]["schemas"]["EmotionsResponse"]


def test_uploads_stay_in_memory_up_to_the_body_limit() -> None:
    from starlette.formparsers import MultiPartParser

    # Starlette spools uploads over 1 MB to a temporary file; the gateway raises that threshold above its
    # body limit so an accepted image is never written to disk.
    limit = 50 * 1024 * 1024
    create_app(Settings(triton_url="127.0.0.1:1", max_upload_bytes=limit))
    assert MultiPartParser.spool_max_size > limit


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/metrics", "/v1/model"])
def test_head_answers_wherever_get_does(client: TestClient, path: str) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code != 405 and head.content == b""


def test_deep_or_huge_json_is_a_400_not_a_crash(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    nested = client.post("/v1/recommendations", content="[" * 20_000 + "]" * 20_000, headers=headers)
    huge = client.post("/v1/recommendations", content='{"emotion": "sad", "k": ' + "9" * 5000 + "}", headers=headers)
    for response in (nested, huge):
        assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    assert client.get("/healthz").status_code == 200


def test_form_errors_name_every_field(client: TestClient) -> None:
    files = {"image": ("f.png", face_png())}
    response = client.post("/v1/recommendations", files=files, data={"consent": "true", "k": "0", "session_id": "."})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "k: Input should be greater than or equal to 1" in detail and "session_id" in detail


@pytest.mark.parametrize("route", ["/v1/emotions", "/v1/recommendations"])
def test_repeated_parts_are_refused(client: TestClient, route: str) -> None:
    files = [("image", ("a.png", face_png())), ("image", ("b.png", face_png()))]
    response = client.post(route, files=files, data={"consent": "true"})
    assert response.status_code == 422 and "'image' appears 2 times" in response.json()["detail"]


def test_neither_json_nor_multipart_is_named_as_such(client: TestClient) -> None:
    response = client.post("/v1/recommendations", content=b"emotion=sad", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and response.json()["title"] == "Unsupported media type"


def test_unexpected_errors_are_problem_details_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app) as c:  # nothing escapes to the server: the exception is answered, not re-raised
        response = c.get("/boom")
        assert response.status_code == 500 and response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Internal error" and "a bug" not in response.text
        assert response.headers["x-content-type-options"] == "nosniff"  # the security headers still apply
        assert c.get("/healthz").status_code == 200
    logged = [r for r in caplog.records if "unexpected error on GET /boom" in r.message]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_a_body_trickled_in_slowly_is_cut_off_with_a_408() -> None:
    import socket
    import threading
    import time

    import uvicorn

    port = free_port()
    settings = Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0, body_timeout_s=1.0)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"emo")  # fmt: skip
            answer = sock.recv(4096).decode()  # nothing more is sent: the server must answer by itself
        assert answer.startswith("HTTP/1.1 408") and "did not arrive in time (1 s plus" in answer
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize(("page", "assets"), [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
                                              ("/redoc", ["redoc.standalone.js"])])  # fmt: skip
def test_api_docs_load_their_assets_from_the_gateway_not_a_cdn(client: TestClient, page: str,
                                                               assets: list[str]) -> None:  # fmt: skip
    import re

    response = client.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from another host
    for name in assets:
        assert f"/docs-assets/{name}" in sources
        asset = client.get(f"/docs-assets/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100_000, name

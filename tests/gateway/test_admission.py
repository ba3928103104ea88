"""Admission control on a real uvicorn: image requests whose bodies are still arriving hold their slots, so the
limits can be filled deterministically from loopback addresses that stand for different clients."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import Gateway, gateway_process

BOUNDARY = b"xBOUNDARYx"


def image_head(path: bytes = b"/v1/emotions", body_bytes: int = 100_000) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
            b"Content-Length: %d\r\n\r\n" % (path, BOUNDARY, body_bytes))  # fmt: skip


def answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers and JSON body of one answer read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_process(tmp_path_factory.mktemp("gw"), max_images_in_flight="6", max_images_per_client="3",
                         rate_limit_per_s="0") as running:  # fmt: skip
        yield running


def hold(stack: ExitStack, gateway: Gateway, source: str, path: bytes = b"/v1/emotions") -> socket.socket:
    """An admitted image request whose body has not finished arriving: it holds its slot until closed."""
    sock = stack.enter_context(gateway.connect(source))
    sock.sendall(image_head(path) + b"--" + BOUNDARY + b"\r\n")
    return sock


def refused(gateway: Gateway, source: str) -> tuple[int, dict[str, str], dict[str, object]]:
    with gateway.connect(source) as sock:
        sock.sendall(image_head())  # refused before a byte of the body is sent
        return answer(sock)


def test_one_client_cannot_take_every_image_slot(gateway: Gateway) -> None:
    with ExitStack() as stack:
        for _ in range(3):
            hold(stack, gateway, "127.0.0.2")
        status, headers, body = refused(gateway, "127.0.0.2")
        assert (status, headers["retry-after"], body["title"]) == (429, "1", "Too many requests")
        assert "3 images in analysis" in str(body["detail"])
        # Another client still has room; health, readiness and metrics answer outside the queue.
        for path in (b"/v1/emotions", b"/v1/recommendations", b"/v1/emotions"):
            hold(stack, gateway, "127.0.0.3", path)
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
        status, headers, body = refused(gateway, "127.0.0.4")  # 6 of 6 image slots held: the process is full
        assert (status, headers["retry-after"], body["title"]) == (503, "1", "Service busy")
        json_rec = httpx.post(f"{gateway.url}/v1/recommendations", json={"emotion": "sad", "k": 1})
        assert json_rec.status_code == 200  # cheap JSON work is not an image: it is still admitted
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert 'emotorch_shed_requests_total{reason="busy"} 1.0' in metrics
        assert 'emotorch_shed_requests_total{reason="client_busy"} 1.0' in metrics
    # Closed connections give their slots back: the next image is admitted (and then fails for want of a model).
    response = httpx.post(f"{gateway.url}/v1/emotions", files={"image": ("f.png", b"x")}, data={"consent": "true"})
    assert response.json()["title"] != "Service busy" and response.status_code in (400, 415, 503)


def test_the_slots_come_back_after_every_kind_of_ending(tmp_path: Path) -> None:
    with gateway_process(tmp_path, max_images_in_flight="2", max_images_per_client="2", rate_limit_per_s="0") as gw:
        for _ in range(10):  # finished, refused for consent, cut off mid-body: none may leak a slot
            httpx.post(f"{gw.url}/v1/emotions", files={"image": ("f.png", b"x")}, data={"consent": "false"})
            with gw.connect() as sock:
                sock.sendall(image_head() + b"partial")
        deadline = time.monotonic() + 10  # a cut-off request gives its slot back when the server sees the close
        while True:
            post = httpx.post(f"{gw.url}/v1/emotions", files={"image": ("f.png", b"x")}, data={"consent": "false"})
            if post.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ok = [httpx.post(f"{gw.url}/v1/emotions", files={"image": ("f.png", b"x")}, data={"consent": "false"})
              for _ in range(3)]  # fmt: skip
        assert [r.status_code for r in [post, *ok]] == [422] * 4  # admitted, then refused for consent: no leak

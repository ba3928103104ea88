"""Hostile clients against a real uvicorn running the gateway: forged forwarding headers, header floods,
slowloris, idle keep-alive, secrets in the query string. Loopback only, bounded, every process stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import Gateway, gateway_process, read_status, rss_kib

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
JSON_REC = b'{"emotion": "sad", "k": 1, "domains": ["food"]}'


def post_recommendation(gateway: Gateway, forwarded_for: str, source: str = "127.0.0.1") -> int | None:
    """One JSON recommendation over a raw connection from `source`, carrying `X-Forwarded-For`."""
    with gateway.connect(source) as sock:
        head = b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close"
        head += b"\r\nX-Forwarded-For: %s\r\nContent-Length: %d\r\n\r\n" % (forwarded_for.encode(), len(JSON_REC))
        sock.sendall(head + JSON_REC)
        return read_status(sock)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # No proxy is trusted (the default); a low rate limit makes forged client identities visible as 200s.
    with gateway_process(tmp_path_factory.mktemp("gw"), rate_limit_per_s="0.5", rate_limit_burst="40",
                         head_timeout_s="1", keep_alive_s="1") as running:  # fmt: skip
        yield running


def test_forged_forwarded_for_does_not_make_a_new_client(gateway: Gateway) -> None:
    statuses = [post_recommendation(gateway, f"203.0.113.{i}", source="127.0.0.2") for i in range(60)]
    assert statuses.count(200) <= 41 and statuses.count(429) >= 19, statuses  # one bucket of 40 (+ refill)


def test_a_trusted_proxy_names_the_client_and_junk_falls_back_to_the_proxy(tmp_path: Path) -> None:
    with gateway_process(tmp_path, rate_limit_per_s="0.5", rate_limit_burst="2",
                         trusted_proxies='["127.0.0.3"]') as gw:  # fmt: skip
        distinct = [post_recommendation(gw, f"198.51.100.{i}, 127.0.0.3", source="127.0.0.3") for i in range(10)]
        assert distinct == [200] * 10  # each forwarded client has its own bucket
        junk = [post_recommendation(gw, f"x{i}" * 50, source="127.0.0.3") for i in range(6)]
        assert junk.count(429) >= 3, junk  # unparseable: the proxy itself is the client, one bucket
        untrusted = [post_recommendation(gw, f"192.0.2.{i}", source="127.0.0.4") for i in range(6)]
        assert untrusted.count(429) >= 3, untrusted  # a peer that is no proxy cannot name a client


def test_too_many_headers_are_refused_with_431(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        sock.sendall(HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n")
        assert read_status(sock) == 431
    with gateway.connect() as sock:
        sock.sendall(HEAD + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert read_status(sock) == 431
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_header_floods_cost_no_memory(gateway: Gateway) -> None:
    """1,000 requests with distinct 1 MB header values, and one with 100,000 headers: refused, RSS flat."""
    before = rss_kib(gateway.pid)
    answers = []
    for i in range(1000):
        with gateway.connect() as sock:
            try:
                sock.sendall(HEAD + b"X-Forwarded-For: " + str(i).encode() * (1_000_000 // len(str(i))) + b"\r\n\r\n")
            except OSError:  # the server closed as soon as the head passed its budget
                pass
            answers.append(read_status(sock))
    with gateway.connect() as sock:
        try:
            sock.sendall(HEAD + b"".join(b"H%d: v\r\n" % i for i in range(100_000)) + b"\r\n")
        except OSError:
            pass
        answers.append(read_status(sock))
    grown_mib = (rss_kib(gateway.pid) - before) / 1024
    print(f"RSS after 1,000 x 1 MB headers: {grown_mib:+.1f} MiB; answers {set(answers)}")  # noqa: T201
    assert set(answers) <= {431, None} and answers.count(431) > 0
    assert grown_mib < 20
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_slowloris_connections_are_cut_at_the_head_deadline(gateway: Gateway) -> None:
    socks = [gateway.connect() for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(HEAD)  # a head that never ends
        closed_at: list[float] = []
        started = time.monotonic()
        for _ in range(40):  # one header line every 0.1 s for up to 4 s, as a slowloris client does
            for sock in socks:
                if sock.fileno() != -1:
                    try:
                        sock.sendall(b"X-a: b\r\n")
                    except OSError:
                        closed_at.append(time.monotonic() - started)
                        sock.close()
            if len(closed_at) == len(socks):
                break
            time.sleep(0.1)
        assert len(closed_at) == len(socks)  # every one was cut (head timeout 1 s), none held on
    finally:
        for sock in socks:
            sock.close()
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_a_silent_connection_gets_408_and_an_idle_kept_alive_one_is_closed(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert read_status(sock) == 408
    with gateway.connect() as sock:
        sock.sendall(HEAD + b"\r\n")
        assert read_status(sock) == 200
        sock.settimeout(5)
        data = b"-"
        while data:  # the rest of the answer, then the server's close at the keep-alive timeout (1 s)
            data = sock.recv(4096)


def test_the_access_log_is_bounded_and_keeps_no_query_string(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        client.get("/healthz", params={"token": "SECRET-TOKEN-42"})
        client.get("/v1/" + "z" * 5000)
        client.get("/v1/x%0aforged 200 line")
        client.delete("/v1/sessions/" + "s" * 43, params={"access_token": "SECRET-TOKEN-43"})
    time.sleep(0.3)
    log = gateway.log.read_text(errors="replace")
    assert "SECRET-TOKEN" not in log and "s" * 43 not in log
    assert not any(line.startswith("forged") for line in log.splitlines())  # a newline cannot forge a log line
    lines = [line for line in log.splitlines() if "gateway.access" in line]
    assert len(lines) >= 3 and max(len(line) for line in lines) < 300, lines[-3:]
    assert any('"DELETE /v1/sessions/{session_id}" 204' in line for line in lines), lines[-3:]
    assert not any('"GET /healthz"' in line for line in lines)  # probes and scrapes are not logged at INFO

"""Serving the gateway with uvicorn, with HTTP/1.1 protocol limits set deliberately.

uvicorn's httptools protocol bounds neither the number nor the size of request headers and has no timeout for
reading them: 100,000 headers were accepted, and a connection trickling its head (slowloris) was held for as
long as the client liked. `LimitedHttpToolsProtocol` adds the three limits: a header count, a byte budget for
the request head (request line and headers, counted as they arrive, so an unfinished 1 MB header is cut off
too), and a deadline for the whole head, from the connection's opening (or a kept-alive request's first
byte). Over the count or size: 431 and close; past the deadline: 408 and close.

Forwarded headers are never trusted by uvicorn here (`proxy_headers=False`): the gateway's own
`ClientAddress` reads them, only from configured proxies. uvicorn's access log is off: `RequestTiming` writes
a bounded one (route template, never the query string or raw header text).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import Settings


@dataclass(frozen=True)
class ProtocolLimits:
    max_headers: int = 100
    max_head_bytes: int = 16 * 1024  # request line + headers (nginx's default large buffer is 8 KiB x 4)
    head_timeout_s: float = 10.0


class HeadTooLargeError(Exception):
    """The request head is over the header count or byte budget."""


def _raw_response(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header count, a head size budget and a head-read deadline."""

    limits = ProtocolLimits()  # replaced per server by `protocol_class`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head, self._head_bytes, self._head_count, self._too_large = True, 0, 0, False
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)  # may include body bytes of the same read; only an unfinished head fails
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_head_bytes and not self.transport.is_closing():
            self._close_with(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._head_count = True, 0, 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._head_count > self.limits.max_headers or self._head_bytes > self.limits.max_head_bytes:
            self._too_large = True
            raise HeadTooLargeError()  # httptools stops parsing; uvicorn answers through send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._close_with(b"431 Request Header Fields Too Large")
        else:
            super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._close_with(b"408 Request Timeout")

    def _close_with(self, status: bytes) -> None:
        self._cancel_head_timer()
        self.transport.write(_raw_response(status))
        self.transport.close()


def protocol_class(limits: ProtocolLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class carrying `limits` (uvicorn builds protocols from a class and its own arguments)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


def limits_from(settings: Settings) -> ProtocolLimits:
    return ProtocolLimits(settings.max_headers, settings.max_head_bytes, settings.head_timeout_s)


def uvicorn_config(app: FastAPI, settings: Settings, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration the gateway runs with (also used by the tests that start a real server)."""
    options: dict[str, Any] = {
        "http": protocol_class(limits_from(settings)),
        "proxy_headers": False,  # X-Forwarded-For is read by ClientAddress, from trusted proxies only
        "access_log": False,  # RequestTiming logs a bounded line instead
        "server_header": False,
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,  # beyond it uvicorn answers 503 without calling the app
        "timeout_graceful_shutdown": 10,
    }
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, **options)

"""Request timing and response headers as one pure ASGI middleware (cheaper per request than Starlette's
`BaseHTTPMiddleware`, which runs each request through an extra task and memory streams)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics, outcome

access_log = logging.getLogger("gateway.access")
MAX_LOGGED_PATH = 120  # characters of an unmatched path written to the access log


def loggable_path(scope: Scope) -> str:
    """What the access log says about the path: the route template when one matched (never an id or secret in
    it), else the raw path cut short and percent-encoded; never the query string."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "?"))
    return quote(str(scope.get("path", ""))[:MAX_LOGGED_PATH], safe="/-._~!$&'()*+,;=:@")  # controls escaped


class RequestTiming:
    """Observe every HTTP request's duration by route template (never the raw path) and outcome, and add
    `headers_for(template)` to its response. An exception escaping the app counts as a server error."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, headers_for: Callable[[str], dict[str, str]]) -> None:
        self.app = app
        self.metrics = metrics
        self.headers_for = headers_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        def template() -> str:
            return str(getattr(scope.get("route"), "path", "unmatched"))  # set by the router when it matched

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).update(self.headers_for(template()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request_duration.labels(route=template(), method=scope["method"], outcome=outcome(status)
                                                 ).observe(seconds)  # fmt: skip
            if access_log.isEnabledFor(logging.INFO):  # client: a parsed IP (ClientAddress); method: parser-checked
                client = (scope.get("client") or ("unknown", 0))[0]
                access_log.info('%s "%s %s" %d %.1fms', client, scope["method"][:16], loggable_path(scope), status,
                                seconds * 1000)  # fmt: skip

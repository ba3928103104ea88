"""Request timing and response headers as one pure ASGI middleware (cheaper per request than Starlette's
`BaseHTTPMiddleware`, which runs each request through an extra task and memory streams)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics, outcome

access_log = logging.getLogger("gateway.access")
MAX_LOGGED_PATH = 120  # characters of an unmatched path written to the access log
QUIET_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})  # logged at DEBUG when they succeed


def route_template(scope: Scope, incoming: Scope | None = None) -> str | None:
    """The template of the route that serves this request: the one the router recorded, else (mounts such as
    /static and /docs-assets, and plain routes such as /openapi.json, which record none) the app route that
    fully matches the request as it came in (`incoming`: a mount rewrites the scope's root path); None when
    nothing does."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "?"))
    incoming = incoming or scope
    for candidate in getattr(getattr(incoming.get("app"), "router", None), "routes", ()):
        match, _ = candidate.matches(incoming)
        if match is Match.FULL:
            return str(getattr(candidate, "path", "?"))
    return None


def loggable_path(scope: Scope, incoming: Scope | None = None) -> str:
    """What the access log says about the path: the route template when one matched (never an id or secret in
    it), else the raw path cut short and percent-encoded; never the query string."""
    template = route_template(scope, incoming)
    if template is not None:
        return template
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
        incoming = dict(scope)  # before routing: a mount rewrites root_path in place

        def template() -> str:
            return route_template(scope, incoming) or "unmatched"

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
            # Probes and scrapes (every few seconds, from machines) go to DEBUG: the log shows what people asked.
            level = logging.DEBUG if template() in QUIET_ROUTES and status < 400 else logging.INFO
            if access_log.isEnabledFor(level):  # client: a parsed IP (ClientAddress); method: parser-checked
                client = (scope.get("client") or ("unknown", 0))[0]
                access_log.log(level, '%s "%s %s" %d %.1fms', client, scope["method"][:16],
                                loggable_path(scope, incoming), status, seconds * 1000)  # fmt: skip

"""Per-client rate limiting: a token bucket per client address, answered as a problem-details 429."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.clientip import client_key
from gateway.errors import send_problem

MAX_CLIENTS = 10_000  # buckets kept; the least recently seen client is forgotten first


class RateLimit:
    """Allow `rate_per_s` requests per second per client with bursts of `burst`, on paths under `prefix`.

    The client is `scope["client"]` as `ClientAddress` parsed it (the peer, or what a trusted proxy forwarded),
    keyed by `client_key`: always a bounded address string, so the buckets' memory is bounded by MAX_CLIENTS.
    """

    def __init__(self, app: ASGIApp, rate_per_s: float, burst: int, prefix: str = "/v1/") -> None:
        self.app = app
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1)
        self.prefix = prefix
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, last time)

    def _take(self, client: str) -> float:
        """Spend one token; return 0 if allowed, else the seconds until a token is available."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate_per_s <= 0 or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        wait = self._take(client_key(str((scope.get("client") or ("unknown", 0))[0])))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        detail = f"too many requests from this client: at most {self.rate_per_s:g} per second; retry in {retry_after} s"
        await send_problem(send, 429, "Too many requests", detail, {"Retry-After": retry_after})

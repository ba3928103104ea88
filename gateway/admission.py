"""Admission control: bound the work in flight per process, and refuse at once what does not fit.

Checked before a byte of the body is read or decoded, so a refused request costs the gateway one dictionary
lookup, and an answer (503 or 429 with Retry-After) goes out at once instead of after the queue ahead of it.
Images are the expensive work (body parsing, decoding, face detection, a Triton call): they have their own,
small bound, and no single client may hold more than its share of it, so a burst from one client cannot starve
another. Health, readiness and metrics never pass through here: they answer whatever the load.
"""

from __future__ import annotations

from collections import Counter

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.clientip import client_key
from gateway.errors import send_problem
from gateway.metrics import GatewayMetrics

IMAGE_ROUTES = frozenset({"/v1/emotions", "/v1/recommendations"})


def is_image_request(scope: Scope) -> bool:
    """A POST of a multipart body to a route that analyses images (JSON recommendations are cheap)."""
    if scope["method"] != "POST" or scope["path"] not in IMAGE_ROUTES:
        return False
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    return content_type.split(b";")[0].strip().lower() != b"application/json"


class Admission:
    """Admit at most `max_requests` requests under `/v1/` and `max_images` image requests at a time, of which
    `max_images_per_client` per client; refuse the rest with 503 (the process is full) or 429 (this client is)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: GatewayMetrics,
        max_requests: int,
        max_images: int,
        max_images_per_client: int,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_requests = max_requests
        self.max_images = max_images
        self.max_images_per_client = max_images_per_client
        self.retry_after = str(retry_after_s)
        self.requests = 0
        self.images = 0
        self._per_client: Counter[str] = Counter()  # only clients with an image in flight: bounded by max_images

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        image = is_image_request(scope)
        client = client_key(str((scope.get("client") or ("unknown", 0))[0])) if image else ""
        if self.requests >= self.max_requests or (image and self.images >= self.max_images):
            await self._refuse(send, 503, "busy", "the gateway is at capacity; retry shortly")
            return
        if image and self._per_client[client] >= self.max_images_per_client:
            detail = f"this client already has {self.max_images_per_client} images in analysis; wait for an answer"
            await self._refuse(send, 429, "client_busy", detail)
            return
        self.requests += 1
        if image:
            self.images += 1
            self._per_client[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.requests -= 1
            if image:
                self.images -= 1
                self._per_client[client] -= 1
                if self._per_client[client] <= 0:
                    del self._per_client[client]

    async def _refuse(self, send: Send, status: int, reason: str, detail: str) -> None:
        self.metrics.shed_requests.labels(reason=reason).inc()
        title = "Service busy" if status == 503 else "Too many requests"
        await send_problem(send, status, title, detail, {"Retry-After": self.retry_after})

"""Request-size limit answered before the body is read, as a problem-details 413."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import PROBLEM_JSON


class ContentLengthLimit:
    """Refuse a request whose declared Content-Length exceeds the limit without reading its body.

    Bodies without a Content-Length (chunked) are bounded by FastAPI's `max_body_size` while streaming.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
                status = 413 if declared.isdigit() else 400
                detail = (
                    f"the request body is {int(declared)} bytes; the limit is {self.max_bytes}"
                    if status == 413
                    else "the Content-Length header is not a number"
                )
                title = "Payload too large" if status == 413 else "Bad request"
                body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"connection", b"close")],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)

"""Request-body size limit, answered as a problem-details 413 before or while the body is read."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import send_problem

_CLOSE = {"Connection": "close"}  # the unread body makes the connection unusable


class BodySizeLimit:
    """Refuse request bodies over `max_bytes`.

    A declared Content-Length over the limit is refused before a byte of the body is read. A body without one
    (chunked) is counted as it streams; crossing the limit raises a 413 HTTPException, which FastAPI passes
    to the app's problem-details handler.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_problem(send, 400, "Bad request", "the Content-Length header is not a number", _CLOSE)
                return
            if int(declared) > self.max_bytes:
                detail = f"the request body is {int(declared)} bytes; the limit is {self.max_bytes}"
                await send_problem(send, 413, "Payload too large", detail, _CLOSE)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"the request body exceeds the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

"""Request-body size and time limits, answered as problem details (413, 408) before or while the body is read."""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import send_problem

_CLOSE = {"Connection": "close"}  # the unread body makes the connection unusable


MIN_BODY_RATE = 16 * 1024  # bytes per second every upload is granted on top of the fixed allowance


class BodySizeLimit:
    """Refuse request bodies over `max_bytes`, or arriving slower than the time limit allows.

    A declared Content-Length over the limit is refused before a byte of the body is read. A body without one
    (chunked) is counted as it streams; crossing the limit raises a 413 HTTPException, which FastAPI passes
    to the app's problem-details handler. A body trickled in slowly (one byte a second holds a worker's memory
    and a connection for as long as the client likes) is cut off with a 408 at the deadline: `timeout_s` from
    the first read plus one second per MIN_BODY_RATE bytes received, so a large upload on a slow mobile link
    (10 MB at 16 KiB/s) still gets through while a trickle does not.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

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
        complete = False
        deadline: float | None = None

        async def counting_receive() -> Message:
            nonlocal received, complete, deadline
            if complete:  # after the body only a disconnect can come, whenever it comes
                return await receive()
            deadline = deadline or time.monotonic() + self.timeout_s
            remaining = deadline + received / MIN_BODY_RATE - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive in time ({self.timeout_s:g} s plus 1 s per "
                                         f"{MIN_BODY_RATE // 1024} KiB)") from None  # fmt: skip
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"the request body exceeds the limit of {self.max_bytes} bytes")
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, counting_receive, send)

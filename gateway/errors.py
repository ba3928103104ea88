"""The gateway's own error types and the one handler that renders them as RFC 9457 problem details."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Error bodies are bounded whatever the request held: 50,000 unknown keys once produced a 550 KB answer.
MAX_DETAIL_CHARS = 1000
MAX_FIELD_ERRORS = 20


def bounded_detail(detail: str) -> str:
    """The detail cut to MAX_DETAIL_CHARS, saying how much was left out."""
    if len(detail) <= MAX_DETAIL_CHARS:
        return detail
    return f"{detail[:MAX_DETAIL_CHARS]}... ({len(detail) - MAX_DETAIL_CHARS} more characters)"


class GatewayError(Exception):
    """Base class: an HTTP status, a short title and a detail message safe to show the client."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadInputError(GatewayError):
    status, title = 400, "Bad input"


class ConsentRequiredError(GatewayError):
    status, title = 422, "Consent required"


class PayloadTooLargeError(GatewayError):
    status, title = 413, "Payload too large"


class UnsupportedImageError(GatewayError):
    status, title = 415, "Unsupported image"


class UnsupportedMediaTypeError(GatewayError):
    status, title = 415, "Unsupported media type"


class ModelUnavailableError(GatewayError):
    status, title = 503, "Model unavailable"


class InferenceTimeoutError(GatewayError):
    status, title = 504, "Inference timed out"


class UnauthorizedError(GatewayError):
    status, title = 401, "Unauthorized"


class ForbiddenError(GatewayError):
    status, title = 403, "Forbidden"


class NotFoundError(GatewayError):
    status, title = 404, "Not found"


class UnprocessableError(GatewayError):
    status, title = 422, "Unprocessable request"


class NoFaceInCloseUpError(UnprocessableError):
    title = "No face in the close-up"


async def send_problem(send: Send, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer a problem-details response from ASGI middleware, before the app (and its handlers) runs."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": bounded_detail(detail)})
    body_bytes = body.encode()
    raw_headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body_bytes)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body_bytes})


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem-details response; `extra` adds members such as a list of field errors."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": bounded_detail(detail), **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the gateway can raise to a problem-details response."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        if exc.status >= 500:
            logger.warning("%s: %s", exc.title, exc.detail)
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Name each offending field; never echo the submitted value (it could be image bytes).
        errors = [{"field": ".".join(str(p) for p in e["loc"])[:200], "message": str(e["msg"])[:200]}
                  for e in exc.errors()]  # fmt: skip
        fields = ", ".join(e["field"] for e in errors)
        extra: dict[str, Any] = {"errors": errors[:MAX_FIELD_ERRORS]}
        if len(errors) > MAX_FIELD_ERRORS:
            extra["errors_omitted"] = len(errors) - MAX_FIELD_ERRORS
        return problem(422, "Invalid request", f"invalid or missing field(s): {fields}", None, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = "Error"
        return problem(exc.status_code, title, str(exc.detail), dict(exc.headers or {}))


class CatchUnexpected:
    """Answer an exception no handler took (a bug, not the client's fault) as a problem-details 500.

    Pure ASGI and innermost, so the answer still passes through CORS, timing and the security headers, and the
    traceback is logged once, here. If the response had already started, the exception goes on up.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            logger.exception("unexpected error on %s %s", scope["method"], scope["path"])
            await send_problem(send, 500, "Internal error", "the gateway hit an unexpected error; it has been logged")

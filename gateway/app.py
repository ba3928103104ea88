"""The FastAPI gateway: the only public entry point of EmoTorch.

`create_app(settings, triton=None, detector=None)` builds the app: the lifespan (gateway/lifespan.py), the
docs, the middleware, the error handlers and the routers (gateway/routes/, one per concern).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.formparsers import MultiPartParser

from gateway.admission import Admission
from gateway.clientip import ClientAddress
from gateway.detection import FaceDetector, HaarFaceDetector
from gateway.docs import REDOC_HEADERS, install_docs
from gateway.errors import CatchUnexpected, install_error_handlers
from gateway.lifespan import make_lifespan
from gateway.limits import BodySizeLimit
from gateway.metrics import GatewayMetrics
from gateway.mtcnn import MtcnnDetector
from gateway.ratelimit import RateLimit
from gateway.routes import admin, demo, emotions, health, model, recommendations
from gateway.settings import Settings
from gateway.timing import RequestTiming
from gateway.triton import TritonClassifier

logger = logging.getLogger(__name__)

API_VERSION = "0.1.0"


def build_detector(settings: Settings) -> FaceDetector:
    """The face detector the settings name; MTCNN's networks are read now, so a missing file stops start-up."""
    if settings.detector == "haar":
        return HaarFaceDetector()
    return MtcnnDetector(settings.detector_dir, min_face_fraction=settings.min_face_fraction)


def create_app(
    settings: Settings | None = None,
    triton: TritonClassifier | None = None,
    detector: FaceDetector | None = None,
) -> FastAPI:
    """Build the gateway app; `triton` and `detector` replace the ones built from settings."""
    settings = settings or Settings()
    metrics = GatewayMetrics.create()
    # Keep uploads in memory: Starlette spools files above 1 MB to a temporary file on disk otherwise,
    # and a person's image must never touch the disk. BodySizeLimit bounds the memory.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)
    app = FastAPI(
        title="EmoTorch gateway",
        version=API_VERSION,
        description="Facial-emotion recognition served by Triton, for mood-aware recommendations. "
        "Images are analysed in memory, only with consent, and never stored.",
        lifespan=make_lifespan(settings, metrics, detector or build_detector(settings), triton),
        docs_url=None,  # served by install_docs with local assets: the defaults load them from a CDN
        redoc_url=None,
    )
    install_docs(app)
    install_middleware(app, settings, metrics)
    install_error_handlers(app)
    for router in (recommendations.router, admin.router, demo.router, health.router, emotions.router, model.router):
        app.include_router(router)
    demo.mount_static(app)
    return app


def install_middleware(app: FastAPI, settings: Settings, metrics: GatewayMetrics) -> None:
    """Middleware runs outermost-last-added: the client's address, timing, CORS, the rate limit, admission, the
    body limit, then the catch-all. Everything up to admission runs before a byte of the body is read."""
    app.add_middleware(CatchUnexpected)  # innermost: its 500 still gets every header below
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(
        Admission,
        metrics=metrics,
        max_requests=settings.max_in_flight,
        max_images=settings.max_images_in_flight,
        max_images_per_client=settings.max_images_per_client,
    )
    app.add_middleware(RateLimit, rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "authorization"],
            expose_headers=["retry-after"],
        )
    app.add_middleware(RequestTiming, metrics=metrics, headers_for=_response_headers)  # sees 413/429/503 too
    app.add_middleware(ClientAddress, trusted_proxies=settings.trusted_proxies)  # outermost: all see the parsed client


_BASE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _response_headers(route_template: str) -> dict[str, str]:
    """Headers for every answer; the demo page and its assets also get a strict Content-Security-Policy."""
    if route_template in ("/", "/static"):
        return _BASE_HEADERS | demo.DEMO_HEADERS
    return _BASE_HEADERS | REDOC_HEADERS if route_template == "/redoc" else _BASE_HEADERS

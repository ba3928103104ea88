"""The FastAPI gateway: the only public entry point of EmoTorch.

`create_app(settings, triton=None)` builds the app; its lifespan opens the Triton adapter, waits for the model
with a deadline (the gateway still starts if the model is late: /readyz says so and predictions answer 503),
and closes the adapter on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser

from gateway.abuse import ClientBudget
from gateway.admin import router as admin_router
from gateway.admission import Admission
from gateway.analysis import Mode, abstain_threshold, analyse
from gateway.catalog import load_catalog
from gateway.clientip import ClientAddress
from gateway.detection import FaceDetector, HaarFaceDetector
from gateway.docs import REDOC_HEADERS, install_docs
from gateway.errors import CatchUnexpected, GatewayError, install_error_handlers
from gateway.feedback import FeedbackStore
from gateway.limits import BodySizeLimit
from gateway.metrics import GatewayMetrics
from gateway.mtcnn import MtcnnDetector
from gateway.ratelimit import RateLimit
from gateway.recommendations_api import router as recommendations_router
from gateway.schemas import AbstentionPolicy, EmotionsResponse, Health, ModelDescription, ModelRef, Readiness
from gateway.settings import Settings
from gateway.state import CatalogHolder, StateDep, require_consent, require_single_parts
from gateway.timing import RequestTiming
from gateway.triton import TritonClassifier

logger = logging.getLogger(__name__)

API_VERSION = "0.1.0"
RETENTION_INTERVAL_S = 3600.0  # how often old feedback is deleted
LEARNED_STATE_WAIT_S = 5.0  # start-up waits this long for the learned state's first build, then serves anyway
STATIC_DIR = Path(__file__).parent / "static"  # the demo page: every asset served from here, no CDN
# The demo page may only talk to this origin and only use the camera here.
DEMO_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}


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
    face_detector = detector or build_detector(settings)
    # Keep uploads in memory: Starlette spools files above 1 MB to a temporary file on disk otherwise,
    # and a person's image must never touch the disk. BodySizeLimit bounds the memory.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = triton or TritonClassifier(
            settings.triton_url, settings.model_name, settings.triton_timeout_s, settings.retry_after_s
        )
        catalog = CatalogHolder(load_catalog(settings.catalog_path))  # a bad catalog stops start-up, naming the row
        store = FeedbackStore(settings.database_url, half_life_days=settings.learning_half_life_days,
                              learner=settings.learner)
        # The learned state builds in the background; a large log keeps ranking from the catalog until it is in.
        await run_in_threadpool(store.start, catalog.current, LEARNED_STATE_WAIT_S)
        retention_s = settings.feedback_retention_days * 86400.0

        async def enforce_retention() -> None:
            while True:
                purged = await run_in_threadpool(store.purge, retention_s)
                if purged:
                    logger.info(
                        "deleted %d recommendations older than %g days", purged, settings.feedback_retention_days
                    )
                await asyncio.sleep(RETENTION_INTERVAL_S)

        retention = asyncio.create_task(enforce_retention())
        await client.wait_until_ready(settings.model_wait_s)
        try:
            budget = ClientBudget(settings.counted_per_client_hour)
            yield {"settings": settings, "triton": client, "detector": face_detector, "metrics": metrics,
                   "catalog": catalog, "store": store, "budget": budget}  # fmt: skip
        finally:
            retention.cancel()
            await client.close()
            store.close()

    app = FastAPI(
        title="EmoTorch gateway",
        version=API_VERSION,
        description="Facial-emotion recognition served by Triton, for mood-aware recommendations. "
        "Images are analysed in memory, only with consent, and never stored.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs with local assets: the defaults load them from a CDN
        redoc_url=None,
    )
    install_docs(app)
    # Middleware runs outermost-last-added: the client's address, timing, CORS, the rate limit, admission, the
    # body limit, then the catch-all. Everything up to admission runs before a byte of the body is read.
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
    install_error_handlers(app)
    app.include_router(recommendations_router)
    app.include_router(admin_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        """The demo page: consent, camera or upload, emotion bars, recommendations with feedback buttons."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, tags=["health"], responses={503: {"model": Readiness}})
    async def readyz(state: StateDep) -> Any:
        """Readiness: Triton answers and the model is ready."""
        triton = state["triton"]
        info = None
        if await triton.is_ready():
            try:
                info = await triton.model_info()
            except GatewayError:
                info = None
        metrics.model_ready.set(1 if info else 0)
        if info is None:
            return JSONResponse(Readiness(ready=False).model_dump(), status_code=503)
        metrics.observe_model(info.name, info.version, info.labels, info.metadata)
        return Readiness(ready=True, model=ModelRef(name=info.name, version=info.version))

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/emotions",
        response_model=EmotionsResponse,
        tags=["emotions"],
        responses={code: {"description": text} for code, text in _ERROR_RESPONSES.items()},
    )
    async def emotions(
        request: Request,
        state: StateDep,
        image: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo (or face crop with mode=face)")],
        consent: Annotated[
            str | None,
            Form(
                description="exactly 'true' (lower case, no spaces): the person consents to the analysis",
                examples=["true"],
                json_schema_extra={"enum": ["true"]},
            ),  # fmt: skip
        ] = None,
        mode: Annotated[
            Mode,
            Form(
                description="photo: find every face; face: the image is one face crop, read whole unchecked; "
                "closeup: a close-up of one face, read whole once the detector has seen a face in it (422 if not)"
            ),
        ] = Mode.photo,
    ) -> EmotionsResponse:
        """Find the faces in an image and classify the emotion of each (largest face first)."""
        require_single_parts(await request.form(), ("image", "consent", "mode"))
        require_consent(consent)
        data = await image.read()
        await image.close()
        settings = state["settings"]
        result = await analyse(data, mode, state["detector"], state["triton"], metrics, settings.max_image_pixels,
                               settings.abstain_threshold, align=settings.align_faces)  # fmt: skip
        return EmotionsResponse(
            faces=result.faces(),
            model=ModelRef(name=result.model.name, version=result.model.version),
            timings_ms=result.timings_ms,
        )

    @app.get(
        "/v1/model",
        response_model=ModelDescription,
        tags=["model"],
        responses={503: {"description": "the model is not available (Retry-After says when to retry)"}},
    )
    async def model_description(state: StateDep) -> ModelDescription:
        """The served model version: labels, test metrics, abstention threshold and its model card."""
        info = await state["triton"].model_info()
        threshold, source = abstain_threshold(info, state["settings"].abstain_threshold)
        evaluation = dict(info.metadata.get("evaluation") or {})
        return ModelDescription(
            name=info.name,
            version=info.version,
            labels=list(info.labels),
            synthetic_training_data=info.metadata.get("synthetic_training_data"),
            weights=info.metadata.get("weights"),
            input=info.metadata.get("input"),
            metrics={k: v for k, v in evaluation.items() if k != "abstention"},
            abstention=AbstentionPolicy(threshold=threshold, source=source, validation=evaluation.get("abstention")),
            card=info.card or "No model card is available for this version.",
            card_data=info.metadata.get("card"),
            lineage=_lineage(info.metadata),
        )

    # HEAD wherever GET answers: load balancers and uptime monitors probe with it.
    for path, endpoint in (("/", demo_page), ("/healthz", healthz), ("/readyz", readyz),
                           ("/metrics", prometheus_metrics), ("/v1/model", model_description)):  # fmt: skip
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    return app


def _lineage(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The served version's provenance, flattened from its published metadata (None before 2026-12 exports)."""
    keys = ("registry_version", "run_id", "checkpoint_sha256")
    found = {k: metadata[k] for k in keys if k in metadata} | dict(metadata.get("lineage") or {})
    return found or None


_ERROR_RESPONSES = {
    400: "the image is corrupt or otherwise unusable",
    413: "the upload or the image's pixel count is over the limit",
    415: "the file is not a JPEG, PNG or WebP image",
    422: "consent missing, a field is invalid, or no face in a close-up (mode=closeup)",
    429: "too many requests from this client, or its share of image slots is full; see Retry-After",
    503: "the model is not available, or the gateway is at capacity (Retry-After says when to retry)",
    504: "the model did not answer in time",
}


_BASE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _response_headers(route_template: str) -> dict[str, str]:
    """Headers for every answer; the demo page and its assets also get a strict Content-Security-Policy."""
    if route_template in ("/", "/static"):
        return _BASE_HEADERS | DEMO_HEADERS
    return _BASE_HEADERS | REDOC_HEADERS if route_template == "/redoc" else _BASE_HEADERS

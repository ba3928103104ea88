"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import GatewayError
from gateway.routes import add_head_routes
from gateway.schemas import Health, ModelRef, Readiness
from gateway.state import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: StateDep) -> Any:
    """Readiness: Triton answers and the model is ready."""
    triton, metrics = state["triton"], state["metrics"]
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


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(state: StateDep) -> Response:
    return Response(generate_latest(state["metrics"].registry), media_type=CONTENT_TYPE_LATEST)


add_head_routes(router)

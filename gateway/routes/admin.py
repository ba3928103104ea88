"""Admin routes: anything that changes server state other than feedback needs the admin bearer token."""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from gateway.catalog import CatalogError, load_catalog
from gateway.errors import ForbiddenError, UnauthorizedError, UnprocessableError
from gateway.routes import add_head_routes
from gateway.state import StateDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class InvalidCatalogError(UnprocessableError):
    status, title = 422, "Invalid catalog"


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Check `Authorization: Bearer <EMOTORCH_ADMIN_TOKEN>` in constant time."""
    token = state["settings"].admin_token
    if token is None:
        raise ForbiddenError("admin routes are disabled: set EMOTORCH_ADMIN_TOKEN to enable them")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("send 'Authorization: Bearer <admin token>'", {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise ForbiddenError("the admin token is not valid")


AdminDep = Annotated[None, Depends(require_admin)]


@router.post("/catalog/reload", responses={401: {}, 403: {}, 422: {"description": "the new catalog is invalid"}})
async def reload_catalog(request: Request, state: StateDep, _: AdminDep) -> dict[str, Any]:
    """Re-read the catalog file; a bad file is refused (naming the row) and the old catalog stays."""
    try:
        catalog = await run_in_threadpool(load_catalog, state["settings"].catalog_path)
    except CatalogError as e:
        raise InvalidCatalogError(str(e)) from e
    request.state.catalog.current = catalog
    return {"reloaded": True, "items": len(catalog.items)}


@router.post("/model/refresh", responses={401: {}, 403: {}, 503: {}})
async def refresh_model(state: StateDep, _: AdminDep) -> dict[str, Any]:
    """Re-read the served model's description (labels, metadata) from Triton now."""
    info = await state["triton"].model_info(refresh=True)
    return {"name": info.name, "version": info.version, "labels": list(info.labels)}


@router.post("/learned-state/rebuild", responses={401: {}, 403: {}})
async def rebuild_learned_state(state: StateDep, _: AdminDep) -> dict[str, Any]:
    """Rebuild this process's learned state from the whole evidence log now (requests keep being served)."""
    learned = state["store"].learned
    started = time.perf_counter()
    await run_in_threadpool(learned.rebuild)
    return {"rebuilt": True, "seconds": round(time.perf_counter() - started, 3), "rows": learned.last_id}


add_head_routes(router)

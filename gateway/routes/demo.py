"""The demo page and its assets (every one served from gateway/static/, no CDN), with their headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from gateway.routes import add_head_routes

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
# The demo page may only talk to this origin and only use the camera here.
DEMO_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    """The demo page: consent, camera or upload, emotion bars, recommendations with feedback buttons."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


add_head_routes(router)


def mount_static(app: FastAPI) -> None:
    """The page's scripts, styles and images under /static."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

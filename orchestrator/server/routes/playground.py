"""The web playground: ``/`` serves the page, ``/playground/*`` its script and style.

Static files shipped inside the package (``orchestrator/server/static``), no build
step. They hold no data and are served without a key; the page asks for one when
the API needs it and talks to the public API only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "router", "static_files"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["playground"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def static_files() -> StaticFiles:
    """The app mounts this at ``/playground``."""
    return StaticFiles(directory=STATIC_DIR)

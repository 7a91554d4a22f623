"""Operations: ``/healthz`` (the process answers), ``/readyz`` (the store answers), ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from orchestrator import __version__
from orchestrator.errors import StoreUnavailable

from .._metrics import CONTENT_TYPE
from .._state import ServerState, get_state

__all__ = ["router"]

logger = logging.getLogger("orchestrator.server")

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Open without a key, so the instance id (host name, process id) stays in the log."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Readiness: the store answers and the workers run")
async def readyz(state: ServerState = Depends(get_state)) -> JSONResponse:
    """503 while the store is down, the workers are gone, or the server starts or stops.

    The route is open without a key, so it names no path, URL or error text of the
    store (those go to the log)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(state.store.ping), timeout=5)
    except (StoreUnavailable, asyncio.TimeoutError) as exc:
        logger.warning("readiness check: the store does not answer: %s", exc or "timeout")
        return JSONResponse({"status": "unavailable", "reason": "the artifact store does not answer"}, 503)
    if state.runs.closing or not state.ready.is_set():
        return JSONResponse({"status": "starting" if not state.runs.closing else "stopping"}, 503)
    if not state.runs.workers_alive:
        logger.error("readiness check: the run workers have stopped")
        return JSONResponse({"status": "unavailable", "reason": "the run workers have stopped"}, 503)
    return JSONResponse({"status": "ready", "running": state.runs.running, "queued": state.runs.queued})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: ServerState = Depends(get_state)) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)

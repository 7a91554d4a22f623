"""HTTP errors: the project's error tree mapped to status codes, one JSON shape.

Every error body is OpenAI-shaped, so chat clients show it as they would an
OpenAI error::

    {"error": {"type": "ArtifactDecodeError", "message": "...", "code": 422, ...context}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import (
    ArtifactDecodeError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ConfigError,
    DownloadError,
    LLMError,
    ModelError,
    OrchestratorError,
    ParamError,
    PlanError,
    StoreUnavailable,
    ToolInputError,
    ToolNotFound,
    WorkflowError,
    WorkflowInputError,
    WorkflowValidationError,
)

__all__ = ["ApiError", "error_body", "install_error_handlers", "status_for"]

logger = logging.getLogger("orchestrator.server")

_STATUS: list[tuple[type[OrchestratorError], int]] = [
    (ArtifactNotFound, 404),
    (ArtifactTooLarge, 413),
    (ArtifactDecodeError, 422),
    (StoreUnavailable, 503),
    (ToolNotFound, 404),
    (ToolInputError, 422),
    (WorkflowValidationError, 422),
    (WorkflowInputError, 422),
    (WorkflowError, 422),
    (DownloadError, 422),
    (PlanError, 422),
    (ParamError, 422),
    (ConfigError, 400),
    (LLMError, 502),
    (ModelError, 500),
]


def status_for(exc: OrchestratorError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


class ApiError(Exception):
    """An HTTP error raised by a route: status, message, optional headers and context."""

    def __init__(self, status: int, message: str, *, type: str = "ApiError", headers: dict[str, str] | None = None,  # noqa: A002
                 **context: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.headers = headers or {}
        self.context = context


def error_body(status: int, message: str, type_: str, **context: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "code": status, **context}}


def install_error_handlers(app: FastAPI) -> None:
    """Translate errors raised anywhere in a route into the one JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.type, **exc.context), exc.status, headers=exc.headers)

    @app.exception_handler(OrchestratorError)
    async def _ours(request: Request, exc: OrchestratorError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            logger.warning("%s %s failed: %s", request.method, request.url.path, exc)
        doc = exc.to_dict()
        doc.pop("type", None)
        doc.pop("message", None)
        if isinstance(exc, WorkflowValidationError):
            doc["problems"] = exc.problems
        return JSONResponse(error_body(status, exc.message, type(exc).__name__, **doc), status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse(
            error_body(422, "invalid request: " + "; ".join(problems), "RequestValidationError", problems=problems), 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail), "HTTPException"), exc.status_code, headers=getattr(exc, "headers", None)
        )

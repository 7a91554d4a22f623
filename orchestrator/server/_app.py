"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from orchestrator import __version__
from orchestrator.artifacts import ArtifactStore, open_store
from orchestrator.errors import ConfigError
from orchestrator.registry import ToolRegistry, default_registry
from orchestrator.runs import AgentBackend
from orchestrator.settings import Settings, get_settings

from ._errors import install_error_handlers
from ._metrics import Metrics
from ._middleware import AuthMiddleware, BodyLimitMiddleware
from ._runs import RunManager
from ._signing import signer_for
from ._state import ServerState, WorkflowCache
from .routes import artifacts, audio, catalog, chat, embeddings, images, ops, playground, runs
from .settings import ServerSettings, api_key_problem

__all__ = ["create_app"]

logger = logging.getLogger("orchestrator.server")

_MULTIPART_MARGIN = 1 << 20
_UPLOAD_PATHS = ("/v1/artifacts", "/v1/images/edits", "/v1/audio/transcriptions", "/v1/audio/translations")


def _warm_up(core: Settings) -> None:
    """Load the model runtime (torch) and the profile in the background, so the first run
    does not pay for it; the tool registry is loaded too."""
    try:
        from orchestrator import runtime

        runtime.get_model_manager()
        runtime.get_profile(core.profile)
    except Exception as exc:  # noqa: BLE001 - a run will report the real problem
        logger.info("runtime warm-up skipped: %s", exc)


def _load_tools(entry: str, registry: ToolRegistry) -> None:
    """Import ``module`` (its ``@tool`` functions register) or call ``module:function``
    (it registers tools itself, or returns them to be registered)."""
    module_name, _, attr = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"tool module {module_name!r} cannot be imported: {exc}", param="tool_modules") from exc
    if attr:
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ConfigError(f"{entry!r}: {attr!r} is not a function of {module_name}", param="tool_modules")
        for t in fn() or ():
            registry.register(t)


def create_app(
    settings: ServerSettings | Settings | None = None,
    store: ArtifactStore | None = None,
    agent: Any = None,
    *,
    core_settings: Settings | None = None,
    registry: ToolRegistry | None = None,
) -> FastAPI:
    """Build the REST server.

    ``settings`` are the server's (:class:`ServerSettings`; a core
    :class:`~orchestrator.settings.Settings` is accepted too and then used as
    ``core_settings``). ``store`` defaults to the one the core settings name (Redis
    or the embedded directory); ``agent`` to an :class:`orchestrator.agent.Agent`
    built on first use from ``llm`` and ``profile``.

    >>> import uvicorn                                               # doctest: +SKIP
    >>> uvicorn.run(create_app(), host="127.0.0.1", port=8000)       # doctest: +SKIP
    """
    # 1. Settings, store, registry
    if isinstance(settings, Settings):
        core_settings, settings = settings, None
    server_settings = settings or ServerSettings()
    key_problem = api_key_problem(server_settings.api_keys)
    if key_problem:
        raise ConfigError(key_problem, param="api_keys")
    core = core_settings or get_settings()
    owns_store = store is None
    the_store = store or open_store(core)
    the_registry = registry or default_registry
    for entry in server_settings.tool_modules:
        _load_tools(entry, the_registry)

    # 2. Shared state
    metrics = Metrics()
    state = ServerState(
        settings=server_settings,
        core=core,
        store=the_store,
        registry=the_registry,
        metrics=metrics,
        runs=RunManager(the_store, server_settings, metrics=metrics, inline_seconds=core.inline_tool_seconds),
        agent=AgentBackend(agent, store=the_store, core_settings=core, registry=registry),
        workflows=WorkflowCache(the_registry, core),
        owns_store=owns_store,
        signer=signer_for(server_settings.api_keys, server_settings.url_signing_key,
                          server_settings.signed_url_ttl_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # store calls run in threads (asyncio.to_thread); the default pool (cores + 4) is too
        # small for hundreds of concurrent runs and event streams waiting on Redis or the disk
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=max(32, 4 * server_settings.max_concurrent_runs),
                               thread_name_prefix="orch-io"))
        await state.runs.start()
        warm = asyncio.create_task(asyncio.to_thread(_warm_up, core))
        state.ready.set()
        logger.info("orchestrator server ready (store %r, instance %s)", the_store, state.runs.instance_id)
        try:
            yield
        finally:
            warm.cancel()
            state.ready.clear()
            await state.runs.stop()
            if state.owns_store:
                the_store.close()

    # 3. The app and its routes
    app = FastAPI(
        title="Orchestrator",
        version=__version__,
        description="Any-to-any orchestration: runs (prompt, prebuilt graph or workflow JSON) with live events, "
                    "artifacts with HTTP Range, an OpenAI-compatible chat endpoint, the tool catalog.",
        lifespan=lifespan,
    )
    app.state.orchestrator = state
    install_error_handlers(app)
    for module in (runs, artifacts, chat, images, audio, embeddings, catalog, ops, playground):
        app.include_router(module.router)
    app.mount("/playground", playground.static_files(), name="playground")

    # 4. Middleware, innermost first: body limits, then keys, then CORS (outermost, so preflights pass)
    def limit_for(method: str, path: str) -> int:
        if path.rstrip("/") in _UPLOAD_PATHS:
            return server_settings.max_upload_bytes + _MULTIPART_MARGIN
        return server_settings.max_body_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    if server_settings.api_keys:
        app.add_middleware(AuthMiddleware, keys=server_settings.api_keys, signer=state.signer)
    if server_settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=server_settings.cors_origins, allow_methods=["*"],
            allow_headers=["*"], expose_headers=["X-Run-Id", "Content-Range", "Accept-Ranges", "ETag", "Retry-After"],
        )
    return app

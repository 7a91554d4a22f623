"""``orchestrator serve``: the REST server (runs, live events, artifacts, OpenAI-compatible chat).

>>> from orchestrator.server import create_app, ServerSettings
>>> app = create_app(ServerSettings(max_concurrent_runs=2))     # doctest: +SKIP

See docs/server.md for the API. The web stack (FastAPI, uvicorn) is the ``serve``
extra; names are imported lazily so the CLI can share the light helpers without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .settings import ServerSettings, is_loopback

if TYPE_CHECKING:
    from ._app import create_app
    from orchestrator.runs import Outcome
    from ._runs import QueueFull, RunJob, RunManager

__all__ = ["Outcome", "QueueFull", "RunJob", "RunManager", "ServerSettings", "create_app", "is_loopback", "serve"]

_LAZY = {
    "create_app": "._app",
    "Outcome": "orchestrator.runs",
    "QueueFull": "._runs",
    "RunJob": "._runs",
    "RunManager": "._runs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


def serve(app: object = None, *, settings: ServerSettings | None = None, log_level: str = "info",
          app_factory: Callable[[], object] | None = None) -> None:
    """Run the server with uvicorn (blocking). Refuses a non-loopback host without API keys.

    With ``settings.workers > 1`` each worker process builds its own app with
    ``app_factory`` (default: :func:`create_app` with ``settings``); an ``app`` object
    cannot be shared between processes.
    """
    import uvicorn

    from orchestrator.errors import ConfigError

    from ._app import create_app

    s = settings or ServerSettings()
    if not s.api_keys and not s.allow_unauthenticated and not is_loopback(s.host):
        raise ConfigError(
            f"refusing to listen on {s.host} without API keys; set ORCHESTRATOR_API_KEYS, "
            "or ORCHESTRATOR_ALLOW_UNAUTHENTICATED=1 if something in front of the server authenticates",
            param="host",
        )
    from ._http import protocol_with_head_limits

    config = {"host": s.host, "port": s.port, "log_level": log_level, "timeout_graceful_shutdown": 5,
              "access_log": False, "http": protocol_with_head_limits(seconds=s.header_timeout_seconds,
                                                                     max_bytes=s.max_header_bytes)}
    factory = app_factory or (lambda: create_app(s))
    if s.workers == 1:
        uvicorn.run(app or factory(), **config)
        return
    if app is not None:
        raise ConfigError(f"workers={s.workers}: each worker process builds its own app; pass app_factory, "
                          "not an app", param="workers")
    from ._workers import run_workers

    status = run_workers(factory, config, s.workers)
    if status:
        raise SystemExit(status)

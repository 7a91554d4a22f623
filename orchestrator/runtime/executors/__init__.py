"""Executors: where the engine's node calls run.

The engine hands each node attempt (its tool, params, input refs and seed) to an executor:

- :class:`LocalExecutor` - in this process (asyncio plus threads); the default.
- :class:`RayExecutor` - on Ray Serve deployments, one per group of tools in a deployment
  config (``serve.yaml`` here, or ``ORCHESTRATOR_RAY_CONFIG``). Replicas run the same engine
  code path and model manager against the same Redis store; only refs cross.

Chosen by ``ORCHESTRATOR_EXECUTOR=local|ray`` (``--executor`` on ``orchestrator run`` and
``orchestrator serve``) or per run::

    >>> from orchestrator.runtime.executors import get_executor
    >>> get_executor(name="local").name
    'local'
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from orchestrator.artifacts import ArtifactStore
from orchestrator.errors import ConfigError

from ._config import AppArgs, BatchSpec, DeployConfig, GroupSpec, default_config_path, load_config
from ._ray import RayExecutor
from ._wire import Refs

__all__ = [
    "AppArgs",
    "BatchSpec",
    "DeployConfig",
    "GroupSpec",
    "LocalExecutor",
    "NodeExecutor",
    "RayExecutor",
    "build_app",
    "default_config_path",
    "get_executor",
    "load_config",
]

if TYPE_CHECKING:
    from orchestrator.workflow._engine import _RunContext
    from orchestrator.workflow._validate import ResolvedNode



@runtime_checkable
class NodeExecutor(Protocol):
    """Runs one node attempt and returns its stored outputs (refs by port).

    ``call`` gets the engine's resolved node, its input refs, the effective seed, the input
    artifact ids and the run context (store, ``emit`` for progress events, cancellation).
    It raises what the tool raised, ``asyncio.TimeoutError`` past ``node.timeout`` and
    ``asyncio.CancelledError`` when the run is cancelled; the engine retries other errors
    under the node's retry policy.
    """

    name: str

    def check_store(self, store: ArtifactStore) -> None:
        """Raise ConfigError when this executor cannot use ``store``."""
        ...

    async def call(self, node: ResolvedNode, refs: dict[str, Refs], seed: int | None, input_ids: dict[str, Any],
                   rc: _RunContext, *, cache_key: str | None = None) -> dict[str, Refs]:
        """Run one attempt; on success store the node-cache entry under ``cache_key`` (if given)."""
        ...


class LocalExecutor:
    """In-process execution: today's engine path (async tools on the loop, blocking ones in threads)."""

    name = "local"

    def check_store(self, store: ArtifactStore) -> None:
        return None

    async def call(self, node: ResolvedNode, refs: dict[str, Refs], seed: int | None, input_ids: dict[str, Any],
                   rc: _RunContext, *, cache_key: str | None = None) -> dict[str, Refs]:
        from orchestrator.workflow._engine import _call_tool

        return await _call_tool(node, refs, seed, input_ids, rc, cache_key=cache_key)


_SHARED: dict[tuple[Any, ...], RayExecutor] = {}
_SHARED_LOCK = threading.Lock()


def get_executor(settings: Any = None, *, name: str | None = None) -> NodeExecutor:
    """The executor ``name`` (default: the ``executor`` setting). Ray executors are shared per
    process and per (address, config, cpus), and start on first use."""
    from orchestrator.settings import get_settings

    settings = settings or get_settings()
    name = name or settings.executor
    if name == "local":
        return LocalExecutor()
    if name != "ray":
        raise ConfigError(f"unknown executor {name!r}: choose 'local' or 'ray'")
    key = (settings.ray_address, str(settings.ray_config or default_config_path()), settings.ray_num_cpus,
           settings.ray_shared_data_dir)
    with _SHARED_LOCK:
        executor = _SHARED.get(key)
        if executor is None:
            executor = _SHARED[key] = RayExecutor(settings)
    return executor


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``import_path`` of the deployment config)."""
    from ._replica import build_app as build

    return build(args)

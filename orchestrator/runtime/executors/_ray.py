"""Driver side of the Ray executor: node calls become calls on Ray Serve deployment handles."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.artifacts import ArtifactStore, LocalArtifactStore
from orchestrator.errors import BackendUnavailable, ConfigError, ExecutorError, ExecutorUnavailable

from ._config import DeployConfig, load_config
from ._wire import NodeCall, Refs, StoreSpec

if TYPE_CHECKING:
    from orchestrator.workflow._engine import _RunContext
    from orchestrator.workflow._validate import ResolvedNode

__all__ = ["RayExecutor"]

logger = logging.getLogger("orchestrator.executors.ray")



class RayExecutor:
    """Runs node calls on the Ray Serve deployments of a config file.

    Ray starts (or is joined) on first use or :meth:`start`: ``address`` unset starts a local
    Ray (``num_cpus`` of this machine), ``"auto"`` or ``host:port`` / ``ray://…`` joins a
    cluster. The application is deployed unless the cluster already runs it (``serve deploy``).
    Only refs and params cross; replicas read and write the same Redis store::

        >>> ex = RayExecutor(settings, num_cpus=2).start()            # doctest: +SKIP
        >>> compiled.run({"prompt": "a fox"}, executor=ex).executor     # doctest: +SKIP
        'ray'
    """

    name = "ray"

    def __init__(
        self,
        settings: Any = None,
        *,
        config: str | Path | DeployConfig | None = None,
        address: str | None = None,
        num_cpus: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        from orchestrator.settings import get_settings

        self.settings = settings or get_settings()
        self.config = config if isinstance(config, DeployConfig) else load_config(config or self.settings.ray_config)
        self.address = address if address is not None else self.settings.ray_address
        self.num_cpus = num_cpus if num_cpus is not None else self.settings.ray_num_cpus
        self.runtime_env = runtime_env
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._owns_ray = False
        self._deployed = False
        self._checked_dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, config={str(self.config.path)!r})"

    @property
    def started(self) -> bool:
        return bool(self._handles)

    # -------------------------------------------------- lifecycle
    def start(self, *, redeploy: bool = False) -> RayExecutor:
        """Connect to (or start) Ray and make sure the deployments run (``redeploy``: apply the
        config even when the application already runs). Blocking; idempotent."""
        with self._lock:
            if self._handles and not redeploy:
                return self
            ray, serve = _import_ray()
            if not ray.is_initialized():
                self._init_ray(ray)
            app = self.config.app_name
            try:
                serve.start(proxy_location="Disabled")
                if redeploy or app not in serve.status().applications:
                    self._deploy(serve)
                self._handles = {g.name: serve.get_deployment_handle(g.name, app_name=app)
                                 for g in self.config.args.groups}
            except ExecutorUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - Serve's many failure types, one message
                raise ExecutorUnavailable(f"Ray Serve could not start the deployments of {self.config.path}: "
                                          f"{type(exc).__name__}: {exc}") from exc
        return self

    def _init_ray(self, ray: Any) -> None:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.WARNING}
        runtime_env = dict(self.runtime_env or {})
        if not self.address:
            from .._manager import _cpu_count

            # Ray sets OMP_NUM_THREADS=1 in a worker whose actor holds no whole CPU: a local replica would run
            # torch on one thread, slower, and (oneDNN on some CPUs) with other bytes for a seed than here
            env_vars = dict(runtime_env.get("env_vars") or {})
            env_vars.setdefault("OMP_NUM_THREADS", str(_cpu_count()))
            runtime_env["env_vars"] = env_vars
        if runtime_env:
            options["runtime_env"] = runtime_env
        where = self.address or "a new local Ray"
        started = time.perf_counter()
        try:
            if self.address:
                _check_reachable(self.address)
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=self.num_cpus, **options)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError … from Ray
            raise ExecutorUnavailable(
                f"cannot reach the Ray cluster at {where}: {type(exc).__name__}: {exc}. Check "
                "ORCHESTRATOR_RAY_ADDRESS ('auto', host:port or ray://host:10001; unset starts a local Ray)"
            ) from exc
        self._owns_ray = not self.address
        logger.info("ray ready (%s) in %.1fs", where, time.perf_counter() - started)

    def _deploy(self, serve: Any) -> None:
        from ._replica import build_app

        app = build_app(self.config.args.model_dump(mode="json"))
        error: list[BaseException] = []

        def deploy() -> None:
            try:
                serve.run(app, name=self.config.app_name, route_prefix=None)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                error.append(exc)

        thread = threading.Thread(target=deploy, name="orch-serve-run", daemon=True)
        thread.start()
        thread.join(self.settings.ray_start_timeout_seconds)
        if thread.is_alive():
            raise ExecutorUnavailable(
                f"the deployments of {self.config.path} were not ready after {self.settings.ray_start_timeout_seconds}s; "
                "do their ray_actor_options (num_cpus, num_gpus) fit the cluster's resources?"
            )
        if error:
            raise error[0]
        self._deployed = True

    def shutdown(self) -> None:
        """Delete what this executor deployed, and stop the Ray it started."""
        with self._lock:
            if not self._handles and not self._owns_ray:
                return
            ray, serve = _import_ray()
            self._handles = {}
            if self._deployed and ray.is_initialized():
                try:
                    serve.delete(self.config.app_name)
                except Exception as exc:  # noqa: BLE001 - shutting down anyway
                    logger.warning("serve.delete failed: %s", exc)
                self._deployed = False
            if self._owns_ray:
                serve.shutdown()
                ray.shutdown()
                self._owns_ray = False

    # -------------------------------------------------- the executor protocol
    def check_store(self, store: ArtifactStore) -> None:
        """Refuse a store the replicas cannot reach: the embedded directory store, unless
        ``ray_shared_data_dir`` declares it shared (then a replica must see a token file)."""
        if not isinstance(store, LocalArtifactStore):
            StoreSpec.of(store)  # raises for stores that cannot be described to a replica
            return
        root = str(store.root.absolute())
        if not self.settings.ray_shared_data_dir:
            raise ConfigError(
                f"the Ray executor needs the shared Redis store: replicas read and write artifacts there, and the "
                f"embedded directory store ({root}) is local to this machine. Set ORCHESTRATOR_REDIS_URL "
                f"(e.g. redis://127.0.0.1:6379/0), or ORCHESTRATOR_RAY_SHARED_DATA_DIR=true if {root} is on a "
                "filesystem that every Ray node mounts at the same path"
            )
        if root not in self._checked_dirs:
            self._check_shared_dir(store.root)
            self._checked_dirs.add(root)

    def _check_shared_dir(self, root: Path) -> None:
        self.start()
        token = secrets.token_hex(16)
        probe = root / "tmp" / f"ray-probe-{token}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
        try:
            for name, handle in self._handles.items():
                if not handle.check_path.remote(str(probe.absolute()), token).result(timeout_s=60):
                    raise ConfigError(f"ORCHESTRATOR_RAY_SHARED_DATA_DIR is set, but a replica of {name!r} does not "
                                      f"see {root} (a token file written here is missing there); use Redis")
        finally:
            probe.unlink(missing_ok=True)

    def group_for(self, tool: str) -> str | None:
        """The deployment that serves ``tool`` (None: it runs in-process)."""
        group = self.config.args.group_for(tool)
        return group.name if group is not None else None

    async def call(self, node: ResolvedNode, refs: dict[str, Refs], seed: int | None, input_ids: dict[str, Any],
                   rc: _RunContext, *, cache_key: str | None = None) -> dict[str, Refs]:
        """Run one node attempt on its group's deployment; progress reaches ``rc.emit`` as it comes."""
        from orchestrator.workflow import events as ev
        from orchestrator.workflow._engine import _cache_store, _call_tool, _flat

        group = self.group_for(node.tool.name)
        if group is None:
            return await _call_tool(node, refs, seed, input_ids, rc, cache_key=cache_key)
        if not self._handles:
            await asyncio.to_thread(self.start)
        model_id = _model_id(node, rc)
        request = NodeCall(
            run_id=rc.run_id, node=node.id, tool=node.tool.name, params=node.params.model_dump(mode="json"),
            inputs=refs, seed=seed, input_ids=input_ids, store=StoreSpec.of(rc.store), profile=rc.profile,
            settings=_for_replicas(rc.settings), timeout=node.timeout,
        )
        stream = self._handles[group].options(stream=True, multiplexed_model_id=model_id).run.remote(request)

        async def consume() -> dict[str, Refs]:
            async for kind, payload in stream:
                if kind == "progress":
                    rc.emit(ev.NodeProgress(run_id=rc.run_id, node=node.id, **payload))
                elif kind == "result":
                    return payload  # type: ignore[no-any-return]
                elif kind == "error":
                    raise payload
            raise ExecutorError(f"the {group!r} replica ended the call without a result", node=node.id)

        task = asyncio.ensure_future(consume())
        cancel_wait = asyncio.ensure_future(rc.cancelled.wait())
        try:
            done, _ = await asyncio.wait({task, cancel_wait}, timeout=node.timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel_wait.cancel()
        if task not in done:  # run cancelled or node timed out: cancel the remote call too
            stream.cancel()
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a cancelled stream may raise
            if cancel_wait in done:
                raise asyncio.CancelledError
            raise asyncio.TimeoutError
        try:
            stored = task.result()
        except _ray_errors() as exc:
            raise ExecutorError(f"the {group!r} deployment lost the call ({type(exc).__name__}): {_first_line(exc)}",
                                node=node.id) from exc
        rc.store.pin(rc.run_id, _flat(stored.values()))
        if cache_key is not None:
            await asyncio.to_thread(_cache_store, rc.store, cache_key, stored)
        return stored

    async def stats(self, group: str) -> dict[str, Any]:
        """One replica's counters in ``group``: ``calls``, ``pipeline_calls``, ``batches``,
        ``batched_calls``, ``largest_batch``."""
        if not self._handles:
            await asyncio.to_thread(self.start)
        return await self._handles[group].stats.remote()  # type: ignore[no-any-return]


def _for_replicas(settings: Any) -> Any:
    """The caller's settings without what a tool never needs and should not travel (the LLM key)."""
    if getattr(settings, "llm_api_key", None) is None:
        return settings
    return settings.model_copy(update={"llm_api_key": None})


def _model_id(node: ResolvedNode, rc: _RunContext) -> str:
    """The model a node will load (its ``model`` param, else the profile's choice): Serve routes
    the call to a replica that holds it. Empty for tools without a model."""
    from orchestrator.workflow._engine import _resolved_model

    choice = _resolved_model(node, rc)  # also settles rc.profile, which the replica gets
    explicit = getattr(node.params, "model", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    return str(choice.get("model") or "") if isinstance(choice, dict) else ""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` (or ``ray://host:port``) nobody listens on: Ray itself retries
    connecting for minutes. ``auto`` is left to Ray, which fails at once when no cluster runs here."""
    target = address.removeprefix("ray://")
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {target} ({exc})") from exc


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise BackendUnavailable("the Ray executor needs the 'ray' extra: pip install 'any2any-orchestrator[ray]'") from exc
    return ray, serve


def _ray_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions
    from ray.serve import exceptions as serve_errors

    return (ray.exceptions.RayError, serve_errors.RayServeException)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

"""Replica side: the Ray Serve deployment that runs node calls for one group of tools.

A replica runs a node exactly as the engine does in-process (the engine's own call path:
decode inputs, call the tool in a thread, store outputs with provenance), against the
caller's store, and streams ``("progress", …)`` items then one ``("result", refs)`` or
``("error", exception)``. Text-to-image calls of concurrent runs share one pipeline call
through ``@serve.batch``; ``@serve.multiplexed`` makes Serve route a node to a replica that
already holds its model.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ray import serve

from orchestrator.errors import ToolInputError

from ._config import AppArgs, GroupSpec
from ._wire import NodeCall, StoreCache, portable_error

if TYPE_CHECKING:
    from orchestrator.workflow._engine import _RunContext
    from orchestrator.workflow._validate import ResolvedNode

__all__ = ["ToolReplica", "build_app"]

logger = logging.getLogger("orchestrator.executors.replica")

BATCHED_TOOLS = frozenset({"image.generate"})
"""Tools whose calls from different runs can share one forward pass."""

Item = tuple[str, Any]

REPLICA_THREADS = 8
"""Threads a replica runs blocking calls on (node calls and batched generation)."""


class _ModelHold:
    """What ``@serve.multiplexed`` keeps per model id; dropping it evicts the model here too."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.released = False

    def __del__(self) -> None:  # Serve calls it when its LRU drops the model
        if self.released:
            return
        self.released = True
        from orchestrator.runtime import get_model_manager

        try:
            get_model_manager().evict(self.model_id)
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass


class ToolReplica:
    """Runs node calls for the tools of one group (see :class:`GroupSpec`)."""

    def __init__(self, group: dict[str, Any], imports: list[str] | None = None) -> None:
        self.group = GroupSpec.model_validate(group)
        for entry in imports or []:
            _import_tools(entry)
        ctx = serve.get_replica_context()
        self.replica = f"{ctx.deployment}#{ctx.replica_tag}"
        self.pid = os.getpid()
        self._stores = StoreCache()
        self._threads = ThreadPoolExecutor(REPLICA_THREADS, thread_name_prefix="orch-replica")
        self._counts = {"calls": 0, "pipeline_calls": 0, "batches": 0, "batched_calls": 0, "largest_batch": 0}
        if self.group.batch is not None:
            self._batch.set_max_batch_size(self.group.batch.max_batch_size)
            self._batch.set_batch_wait_timeout_s(self.group.batch.batch_wait_timeout_s)

    # -------------------------------------------------- the one entry point
    async def run(self, call: NodeCall) -> AsyncIterator[Item]:
        """Stream one node call: progress items, then its result or its error."""
        self._counts["calls"] += 1
        model_id = serve.get_multiplexed_model_id()
        if model_id:
            await self.hold_model(model_id)
        if self.group.batch is not None and call.tool in BATCHED_TOOLS:
            async for item in self._batch(call):
                yield item
            return
        async for item in self._single(call):
            yield item

    async def hold_model(self, model_id: str) -> _ModelHold | None:
        """Routing only: :func:`build_app` replaces it per group with a ``@serve.multiplexed`` method."""
        return None

    async def stats(self) -> dict[str, Any]:
        """Counters of this replica (tests and the bench read them)."""
        return {"replica": self.replica, "pid": self.pid, **self._counts}

    async def check_path(self, path: str, token: str) -> bool:
        """Whether this replica sees ``path`` holding ``token`` (a shared data directory)."""
        try:
            return open(path).read() == token  # noqa: PTH123, SIM115 - one small read
        except OSError:
            return False

    # -------------------------------------------------- one call, as the engine runs it
    def _context(self, call: NodeCall, emit: Callable[[Any], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> _RunContext:
        """A run context like the caller's, on this replica: its store, no cache (the caller
        looked it up), no pins (the caller pins what comes back), this replica in provenance."""
        from orchestrator.workflow._engine import _RunContext

        return _RunContext(
            run_id=call.run_id, store=self._stores.get(call.store), cache=False, seed=call.seed,
            emit=emit or (lambda _e: None), loop=loop, pool_size=REPLICA_THREADS, cancel=threading.Event(),
            models=None, profile=call.profile, settings=call.settings, results={}, finished=True,
            provenance={"replica": self.replica},
        )

    def _node(self, call: NodeCall) -> ResolvedNode:
        from orchestrator.registry import default_registry
        from orchestrator.workflow._validate import ResolvedNode

        tool = default_registry.get(call.tool)
        return ResolvedNode(id=call.node, tool=tool, params=tool.validate_params(call.params), bindings={},
                            seed=call.seed, timeout=call.timeout)

    async def _single(self, call: NodeCall) -> AsyncIterator[Item]:
        from orchestrator.workflow._engine import _call_tool

        queue: asyncio.Queue[Item] = asyncio.Queue()
        put = _threadsafe_put(queue)
        rc = self._context(call, lambda e: put(("progress", {"step": e.step, "total": e.total, "message": e.message})),
                           asyncio.get_running_loop())
        try:
            node = self._node(call)
        except Exception as exc:  # noqa: BLE001 - unknown tool, bad params: the caller's error
            yield ("error", portable_error(exc))
            return
        task = asyncio.ensure_future(_call_tool(node, call.inputs, call.seed, call.input_ids, rc))
        try:
            async for item in _drain(queue, task):
                yield item
        except asyncio.CancelledError:  # the caller cancelled: stop the tool cooperatively
            rc.cancel.set()
            rc.on_cancel()  # sets the call's cancel flag (the tool sees ctx.cancelled) and stops waiting for it
            raise
        exc = task.exception()
        yield ("error", portable_error(exc)) if exc is not None else ("result", task.result())

    # -------------------------------------------------- batching across runs
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batch(self, calls: list[NodeCall]) -> AsyncIterator[list[Any]]:
        """Calls that share params and profile go through one pipeline call; each gets its own
        seeds (image k of a call seeded s uses s + k, as alone) and its own provenance."""
        self._counts["batches"] += 1
        self._counts["batched_calls"] += len(calls)
        self._counts["largest_batch"] = max(self._counts["largest_batch"], len(calls))
        groups: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            key = json.dumps([call.params, getattr(call.profile, "name", call.profile)], sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
        done: set[int] = set()
        for members in groups.values():
            queue: asyncio.Queue[Item] = asyncio.Queue()
            put = _threadsafe_put(queue)
            work = asyncio.get_running_loop().run_in_executor(
                self._threads, self._generate, [calls[i] for i in members],
                lambda step, total: put(("progress", {"step": step, "total": total, "message": None})),
            )
            async for item in _drain(queue, work):
                yield [item if i in members else ("wait", None) for i in range(len(calls))]
            results = dict(zip(members, work.result(), strict=True))
            yield [results[i] if i in results else StopIteration if i in done else ("wait", None)
                   for i in range(len(calls))]
            done.update(members)

    def _generate(self, calls: list[NodeCall], progress: Callable[[int, int], None]) -> list[Item]:
        """One ``generate_images`` call for ``calls`` (same params); per-call results or errors."""
        from decoders._common import first_and_all, prompts_of
        from decoders.image_diffusers import T2I_TASK, generate_images
        from orchestrator.workflow._engine import _store_outputs

        out: dict[int, Item] = {}
        prompts: list[str] = []
        seeds: list[int] = []
        spans: dict[int, tuple[int, int]] = {}
        nodes = {}
        for i, call in enumerate(calls):
            try:
                nodes[i] = node = self._node(call)
                text = self._stores.get(call.store).load(call.inputs["text"])
                mine = prompts_of(text, call.tool)
                if call.seed is None:
                    raise ToolInputError("a batched call needs a seed", tool=call.tool)
            except Exception as exc:  # noqa: BLE001 - this call fails, the others go on
                out[i] = ("error", portable_error(exc))
                continue
            n = len(mine) * node.params.count
            spans[i] = (len(seeds), len(seeds) + n)
            prompts.extend(mine)
            seeds.extend(call.seed + k for k in range(n))
        if spans:
            first = calls[next(iter(spans))]
            try:
                batch = generate_images(prompts, nodes[next(iter(spans))].params, seed=seeds[0], generator_seeds=seeds,
                                        profile=first.profile, progress=progress)
                self._counts["pipeline_calls"] += 1
            except Exception as exc:  # noqa: BLE001 - every call of the pipeline call fails alike
                batch, error = None, portable_error(exc)
            for i, (start, end) in spans.items():
                if batch is None:
                    out[i] = ("error", error)
                    continue
                call = calls[i]
                extra = {"model": batch.model, "task": T2I_TASK, "seed": call.seed, "settings": dict(batch.settings),
                         "replica": self.replica}
                outputs = nodes[i].tool._outputs(first_and_all(batch.images[start:end], "image", "images"))
                try:
                    rc = self._context(call)
                    out[i] = ("result", _store_outputs(nodes[i], outputs, call.seed, call.input_ids, rc, extra))
                except Exception as exc:  # noqa: BLE001
                    out[i] = ("error", portable_error(exc))
        return [out[i] for i in range(len(calls))]


def _import_tools(entry: str) -> None:
    """``module`` (imported for its registrations) or ``module:registry`` (a ToolRegistry whose
    tools join this process's default registry)."""
    from orchestrator.registry import default_registry

    module_name, _, attr = entry.partition(":")
    module = importlib.import_module(module_name)
    if attr:
        for extra in getattr(module, attr):
            if extra.name not in default_registry:
                default_registry.register(extra)


def _threadsafe_put(queue: asyncio.Queue[Item]) -> Callable[[Item], None]:
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def put(item: Item) -> None:
        if threading.get_ident() == loop_thread:
            queue.put_nowait(item)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return put


async def _drain(queue: asyncio.Queue[Item], work: asyncio.Future[Any]) -> AsyncIterator[Item]:
    """Yield queued items until ``work`` is done, then the rest of the queue."""
    while True:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield getter.result()
            continue
        getter.cancel()
        break
    while not queue.empty():
        yield queue.get_nowait()


def _replica_class(models_per_replica: int) -> type[ToolReplica]:
    """ToolReplica with its model multiplexing sized for the group."""

    class GroupReplica(ToolReplica):
        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def hold_model(self, model_id: str) -> _ModelHold:
            return _ModelHold(model_id)

    GroupReplica.__name__ = GroupReplica.__qualname__ = "ToolReplica"
    return GroupReplica


def build_app(args: dict[str, Any]) -> Any:
    """The Serve application of a deployment config's ``args``: one deployment per group.

    The ingress is a small router that only exists because an application needs one; the
    engine calls the group deployments through their handles.
    """
    parsed = AppArgs.model_validate(args)
    handles = {
        g.name: serve.deployment(_replica_class(g.models_per_replica)).options(**g.deployment_options()).bind(
            g.model_dump(mode="json"), parsed.imports
        )
        for g in parsed.groups
    }
    return serve.deployment(_Ingress).options(name="ingress", num_replicas=1,
                                              ray_actor_options={"num_cpus": 0}).bind(**handles)


class _Ingress:
    """The application's entry: lists the groups (``orchestrator deploy`` prints them)."""

    def __init__(self, **groups: Any) -> None:
        self.groups = sorted(groups)

    async def __call__(self, *_: Any) -> dict[str, Any]:
        return {"groups": self.groups}

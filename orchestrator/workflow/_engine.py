"""The engine: a validated plan compiled to a LangGraph ``StateGraph`` and run.

The graph has one LangGraph node per workflow node; a node with several
upstream nodes waits for all of them (``add_edge([a, b], c)``). The state holds
``ArtifactRef``s only. Each node loads its inputs from the store, runs its tool
(async tools on the loop, blocking ones in a bounded thread pool unless
their calls have proven quicker than the hand-off to a thread), stores its
outputs and emits events. A failure is written into the state, not raised, so
independent branches finish and dependents are skipped with a reason.

A blocking :meth:`CompiledWorkflow.run` whose nodes all call blocking tools (no timeout,
no retry delay, in-process), proven quick or, with no cancel flag, never side by side with
another node while slow, takes LangGraph's sync path instead:
no event loop, each node calls its tool on the thread LangGraph runs it on (parallel
branches on LangGraph's threads), the same node code driven by :func:`run_inline`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import inspect
import json
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph._internal import _runnable as _lg_runnable
from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END, START, StateGraph
from langgraph.pregel._write import ChannelWrite

from orchestrator.artifacts import ArtifactRef, ArtifactStore, Modality, open_store
from orchestrator.errors import (
    ArtifactError,
    ArtifactNotFound,
    OrchestratorError,
    ToolError,
    WorkflowError,
    WorkflowInputError,
)
from orchestrator.registry import ToolRegistry, default_registry
from orchestrator.tool import ToolContext

from . import events as ev
from ._builder import Workflow
from ._loop import (CancelFlag, loop_running, quick_calls, retire_pool, run_in_helper, run_in_pool, run_inline,
                    run_sync, watch_cancel)
from ._validate import Plan, ResolvedNode, resolve

__all__ = ["CompiledWorkflow", "NodeResult", "RunResult"]

logger = logging.getLogger("orchestrator.workflow")
CACHE_NAMESPACE = "nodecache"
POOL_FACTOR = 4
"""The shared pool for blocking tools has this many threads per ``max_workers`` (runs share it)."""

Refs = ArtifactRef | list[ArtifactRef]
T = TypeVar("T")


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}

class GraphState(TypedDict, total=False):
    """LangGraph state: artifact refs and node statuses, never payloads."""

    inputs: dict[str, ArtifactRef | list[ArtifactRef]]
    refs: Annotated[dict[str, dict[str, ArtifactRef | list[ArtifactRef]]], _merge]
    status: Annotated[dict[str, str], _merge]
    errors: Annotated[dict[str, str], _merge]

@dataclass
class NodeResult:
    """What became of one node."""

    status: str  # succeeded | cached | failed | skipped | cancelled
    outputs: dict[str, Refs] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    @property
    def cached(self) -> bool:
        return self.status == "cached"

@dataclass
class RunResult:
    """The outcome of a run: outputs as refs, and why missing ones are missing."""

    run_id: str
    status: str  # succeeded | partial | failed | cancelled
    outputs: dict[str, Refs]
    errors: dict[str, str]
    nodes: dict[str, NodeResult]
    seconds: float
    store: ArtifactStore
    events: list[Any] = field(default_factory=list)
    executor: str = "local"
    """Where the node calls ran: ``local`` (in-process) or ``ray`` (Ray Serve deployments)."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def load(self, name: str) -> Any:
        """The decoded object of output ``name`` (a list for a ``many`` output)."""
        ref = self._ref(name)
        return [self.store.load(r) for r in ref] if isinstance(ref, list) else self.store.load(ref)

    def save(self, name: str, path: str | Path) -> Path | list[Path]:
        """Write output ``name``'s canonical bytes to ``path`` (a directory gets ``<name><ext>``;
        a ``many`` output writes ``<name>-<i><ext>`` files into the directory ``path``)."""
        ref = self._ref(name)
        path = Path(path)
        if isinstance(ref, list):
            path.mkdir(parents=True, exist_ok=True)
            return [self._write(r, path / f"{name}-{i}{r.extension}") for i, r in enumerate(ref)]
        if path.is_dir():
            path = path / f"{name}{ref.extension}"
        return self._write(ref, path)

    def _write(self, ref: ArtifactRef, path: Path) -> Path:
        path.write_bytes(self.store.get_bytes(ref))
        return path

    def _ref(self, name: str) -> Refs:
        if name not in self.outputs:
            why = self.errors.get(name, "no such output")
            raise WorkflowError(f"output {name!r} does not exist: {why}", output=name)
        return self.outputs[name]

@dataclass
class _RunContext:
    run_id: str
    store: ArtifactStore
    cache: bool
    seed: int | None
    emit: Callable[[Any], None]
    loop: asyncio.AbstractEventLoop | None
    pool_size: int
    """Threads of the shared pool for blocking tools (see :func:`tool_pool`)."""
    cancel: threading.Event
    models: Any
    profile: Any
    settings: Any
    results: dict[str, NodeResult]
    slots: asyncio.Semaphore | None = None
    """Blocking calls of this run at once (``max_workers``); the pool is shared by runs."""
    finished: bool = False
    """Set when the run has returned; a blocking tool that outlived its timeout stores its
    outputs without pinning them to a run that is over."""
    abandoned: set[ThreadPoolExecutor] = field(default_factory=set)
    """Pools where a blocking call was left running (timeout or cancel): retired at the end."""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on the loop when ``cancel`` is set, so nodes can await it."""
    llm: Any = None
    """The LLM client the run's text tools use (``ToolContext.llm``); None: the one the settings name."""
    node_executor: Any = None
    """Runs each node call (orchestrator.runtime.executors); ``None``: in-process."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Extra provenance for every output (a Ray replica adds ``replica``)."""
    inflight: dict[asyncio.Future[Any], threading.Event] = field(default_factory=dict)
    """Tool calls running now, with the flag that asks each to stop."""
    prefetched: dict[str, tuple[str, dict[str, Refs] | None]] = field(default_factory=dict)
    """Node id -> (cache key, cached outputs or ``None`` for a miss), looked up before the graph
    started (see ``_cached_nodes``)."""
    defer: bool = False
    """Store node outputs write-behind (``ArtifactStore.put(defer=True)``): the run flushes them
    before it returns, before an ``on_event`` callback or an ``astream`` consumer sees an event,
    and the store before any other call (a cache record, a read). Off where nothing would flush:
    a graph embedded in another, or node calls made by a remote executor."""
    sync: bool = False
    """The run takes LangGraph's sync path (no loop): every call blocks the thread its node runs on,
    and a tool told to stop sees the run's ``cancel`` flag itself."""

    def on_cancel(self) -> None:
        """On the loop, once ``cancel`` is set: stop waiting for the calls in flight."""
        self.cancelled.set()
        for call, stop in list(self.inflight.items()):
            stop.set()
            call.cancel()


class _NodeAction:
    """One workflow node as a LangGraph node: an async callable that runs the node."""

    __slots__ = ("__name__", "compiled", "node")

    def __init__(self, compiled: CompiledWorkflow, node: ResolvedNode) -> None:
        self.compiled, self.node = compiled, node
        self.__name__ = f"node_{node.id}"

    async def __call__(self, state, config):  # type: ignore[no-untyped-def]  # every node has this signature
        return await self.compiled._call_node(self.node, state, config)


class _BlockingNodeAction:
    """The same node on LangGraph's sync path (``invoke``): inline in a run of ours that took that
    path, else on a loop (a graph embedded in someone else's, invoked blocking). An object, not a
    function: LangGraph reads the bytecode of every node function it is given."""

    __slots__ = ("action",)

    def __init__(self, action: _NodeAction) -> None:
        self.action = action

    def __call__(self, state, config):  # type: ignore[no-untyped-def]  # the signature of _NodeAction.__call__
        node, compiled = self.action.node, self.action.compiled
        rc: _RunContext | None = (config or {}).get("configurable", {}).get("orchestrator_run")
        if rc is not None and rc.sync:
            return run_inline(_execute_node(node, state, rc))
        return run_in_helper(lambda: compiled._call_node(node, state, config))  # LangGraph's threads come and go


async def _node_signature(state, config):  # type: ignore[no-untyped-def]  # the signature of _NodeAction.__call__
    raise NotImplementedError


_NODE_TEMPLATE: RunnableCallable | None = None


def _node_runnable(action: _NodeAction, name: str) -> RunnableCallable:
    """``action`` wrapped as LangGraph wraps an async node function, without its per-node cost.

    LangGraph inspects the signature (and type hints) of every node function it is given; all
    our nodes share one signature, so it is inspected once per process (a template) and each
    node gets a copy of the template that calls its own action.
    """
    global _NODE_TEMPLATE
    if _NODE_TEMPLATE is None:
        _NODE_TEMPLATE = RunnableCallable(None, _node_signature, trace=False)
    runnable = RunnableCallable.__new__(RunnableCallable)
    runnable.__dict__.update(_NODE_TEMPLATE.__dict__)
    runnable.func, runnable.afunc, runnable.name = _BlockingNodeAction(action), action, name
    return runnable


class _SignatureMemo:
    """``inspect`` as LangGraph's runnable module sees it while one of our graphs compiles.

    LangGraph makes a ``ChannelWrite`` for every node and every edge, and each one inspects the
    signature of its bound ``_write`` method: the same answer every time, and about a third of
    compiling a long chain. This works it out once; every other call goes to :mod:`inspect`.
    """

    Parameter = inspect.Parameter  # read on every node call: no detour through __getattr__

    def __init__(self, funcs: tuple[Any, ...]) -> None:
        self._funcs = funcs
        self._sigs: dict[Any, inspect.Signature] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    def signature(self, obj: Any, *args: Any, **kwargs: Any) -> inspect.Signature:
        func = getattr(obj, "__func__", None)  # a bound method: its signature does not depend on the instance
        if func is None or args or kwargs or func not in self._funcs:
            return inspect.signature(obj, *args, **kwargs)
        sig = self._sigs.get(func)
        if sig is None:
            sig = self._sigs[func] = inspect.signature(obj)
        return sig


_SIGNATURES = _SignatureMemo((ChannelWrite._write,))
_signature_lock = threading.Lock()
_signature_users = 0


@contextlib.contextmanager
def _write_signature_memoized() -> Iterator[None]:
    """LangGraph's runnable module sees :data:`_SIGNATURES` as ``inspect`` while the block runs, in
    every thread (counted across threads; left alone if something else replaced its ``inspect``,
    before or meanwhile)."""
    global _signature_users
    with _signature_lock:
        ours = getattr(_lg_runnable, "inspect", None) in (inspect, _SIGNATURES)
        if ours:
            _signature_users += 1
            _lg_runnable.inspect = _SIGNATURES  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if ours:
            with _signature_lock:
                _signature_users -= 1
                if _signature_users == 0 and getattr(_lg_runnable, "inspect", None) is _SIGNATURES:
                    _lg_runnable.inspect = inspect  # type: ignore[attr-defined]


class _EventFeed:
    """A run's events for :meth:`CompiledWorkflow.astream`, in seq order, woken without polling."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.store: ArtifactStore | None = None
        """The run's store (set when the run starts): its deferred writes are flushed before events go out."""
        self.inline_seconds = 0.0
        self._loop = loop
        self._ready = asyncio.Event()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False

    def pending(self) -> bool:
        return bool(self.items)

    async def stored(self) -> None:
        """Flush the run's deferred writes (the events about to go out may name them)."""
        if self.store is not None and self.store.pending_writes:
            await quick_calls.call(self.store, self.inline_seconds, self.store.flush)

    def next(self) -> Any:
        return self.items.popleft()

    async def wait(self) -> None:
        await self._ready.wait()
        self._ready.clear()

    def wake(self, from_thread: bool = False) -> None:
        if not from_thread:
            self._ready.set()
            return
        with self._wake_lock:  # one wake-up per burst of events from threads
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        with self._wake_lock:
            self._wake_scheduled = False
        self._ready.set()


class CompiledWorkflow:
    """A validated workflow, ready to run; ``graph`` is the compiled LangGraph graph."""

    def __init__(self, workflow: Workflow, *, registry: ToolRegistry | None = None, settings: Any = None) -> None:
        from orchestrator.settings import get_settings

        self.workflow = workflow
        self.registry = registry or default_registry
        self.settings = settings or get_settings()
        with _gc_paused():  # compiling makes only long-lived objects: collecting meanwhile made it O(N^2)
            self.plan: Plan = resolve(workflow, self.registry, settings=self.settings)
            self.graph = self._build_graph()
        self._inline_tools = _inline_tools(self.plan)
        self._embedded: ArtifactStore | None = None  # see _default_context
        self._store: ArtifactStore | None = None  # the configured store, opened on first use

    @property
    def name(self) -> str:
        return self.plan.name

    def __repr__(self) -> str:
        return f"CompiledWorkflow({self.name!r}, nodes={self.plan.order})"

    # -------------------------------------------------- graph
    def _build_graph(self) -> Any:
        builder = StateGraph(GraphState)
        for node_id in self.plan.order:
            builder.add_node(node_id, _node_runnable(_NodeAction(self, self.plan.nodes[node_id]), node_id))
        downstream = {d for n in self.plan.nodes.values() for d in n.deps}
        for node_id, node in self.plan.nodes.items():
            deps = sorted(node.deps)
            if not deps:
                builder.add_edge(START, node_id)
            elif len(deps) == 1:
                builder.add_edge(deps[0], node_id)
            else:
                builder.add_edge(deps, node_id)
            if node_id not in downstream:
                builder.add_edge(node_id, END)
        with _write_signature_memoized():
            return builder.compile(name=self.name)

    async def _call_node(self, node: ResolvedNode, state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        rc: _RunContext | None = (config or {}).get("configurable", {}).get("orchestrator_run")
        if rc is None:  # embedded in someone else's LangGraph graph: defaults
            rc = _default_context(self)
        return await _execute_node(node, state, rc)

    def langgraph_config(self, *, store: ArtifactStore | None = None, cache: bool = True,
                         seed: int | None = None) -> dict[str, Any]:
        """A LangGraph config for running :attr:`graph` embedded in another graph.

        Without it the embedded graph uses the configured store, cache on, no seed.
        Its state keys are ``inputs`` (name -> ArtifactRef), ``refs``, ``status``, ``errors``.
        """
        rc = _default_context(self)
        rc.store, rc.cache, rc.seed = store or rc.store, cache, seed
        return {"configurable": {"orchestrator_run": rc}, "recursion_limit": len(self.plan.nodes) + 10}

    # -------------------------------------------------- running
    def run(self, inputs: dict[str, Any] | None = None, **options: Any) -> RunResult:
        """Run to completion (blocking). Options as for :meth:`arun`.

        When every node calls a blocking tool (no timeout, no retry delay, in-process) and those
        tools have proven quick (see ``inline_tool_seconds``), or no ``cancel`` flag is given and the
        slower ones never run beside another node, the run takes LangGraph's sync path: no event
        loop, as cheap per node as a plain ``StateGraph.invoke``, a model call made on this thread.
        """
        path = self._sync_path(options)
        if path is None:
            return run_sync(lambda: self._run(inputs, **options))
        # quick nodes: what a run makes lives until it ends, so collecting meanwhile only rescans it
        with _gc_paused() if path == "quick" else contextlib.nullcontext():
            return run_inline(self._run(inputs, sync=True, **options))

    def _sync_path(self, options: dict[str, Any]) -> Literal["quick", "blocking"] | None:
        """Which sync path a blocking run with ``options`` takes (see :meth:`run`), if any.

        ``"quick"``: every tool has proven quick. ``"blocking"``: no ``cancel`` flag (a flag set from
        another thread must end the run at once, which only a loop can do while a tool still blocks)
        and no slow node runs beside another (LangGraph's sync path waits for its branches' threads
        before Ctrl-C gets through). None: the loop.
        """
        if self._inline_tools is None or loop_running():
            return None
        if (options.get("executor") or getattr(self.settings, "executor", "local")) != "local":
            return None
        limit = self.settings.inline_tool_seconds
        if all(quick_calls.is_quick(t, limit) for t in self._inline_tools):
            return "quick"
        if options.get("cancel") is not None:
            return None
        alone = all(n.alone or quick_calls.is_quick(n.tool, limit) for n in self.plan.nodes.values())
        return "blocking" if alone else None

    async def arun(self, inputs: dict[str, Any] | None = None, **options: Any) -> RunResult:
        """Run to completion; see :meth:`astream` for the options."""
        return await self._run(inputs, **options)

    async def astream(self, inputs: dict[str, Any] | None = None, **options: Any) -> AsyncIterator[Any]:
        """Run and yield typed events as they happen (see :mod:`orchestrator.workflow.events`).

        Options: ``store`` (default: the configured store), ``cache`` (default True),
        ``seed`` (run seed; seeded tools derive a per-node seed from it), ``run_id``,
        ``max_workers`` (blocking tools of this run at once), ``cancel`` (a
        ``threading.Event`` that cancels the run; a :class:`CancelFlag` wakes the run
        at once, a plain event is noticed within ``CANCEL_POLL_SECONDS``), ``on_event``
        (a callback for every event), ``profile`` (a name or Profile for model-backed
        tools), ``models`` (a ModelManager; default: the process-wide one, created
        on first use), ``llm`` (the LLM client that text tools such as ``summarization``
        reach through ``ctx.llm``) and ``executor`` (``"local"``, ``"ray"`` or a
        NodeExecutor; default: the ``executor`` setting).
        """
        feed = _EventFeed(asyncio.get_running_loop())
        task = asyncio.ensure_future(self._run(inputs, feed=feed, **options))
        task.add_done_callback(lambda _: feed.wake())
        try:
            while True:
                if feed.pending():
                    ready = len(feed.items)  # events that come during the flush wait for the next one
                    await feed.stored()
                    for _ in range(ready):
                        yield feed.next()
                    continue
                if task.done():
                    break
                await feed.wait()
            task.result()  # bad inputs raise here, as before any event
            while feed.pending():
                yield feed.next()
        finally:
            if not task.done():  # the consumer stopped early: cancel the run and let it clean up
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def stream(self, inputs: dict[str, Any] | None = None, **options: Any) -> Iterator[Any]:
        """The run's events, for blocking code. The run completes first, then the events are
        yielded in order; use :meth:`astream` to follow a run live."""
        yield from self.run(inputs, **options).events

    async def _run(
        self,
        inputs: dict[str, Any] | None,
        *,
        store: ArtifactStore | None = None,
        cache: bool = True,
        seed: int | None = None,
        run_id: str | None = None,
        max_workers: int | None = None,
        cancel: threading.Event | None = None,
        on_event: Callable[[Any], None] | None = None,
        profile: Any = None,
        models: Any = None,
        llm: Any = None,
        executor: Any = None,
        feed: _EventFeed | None = None,
        sync: bool = False,
    ) -> RunResult:
        store = store or self._default_store()
        if feed is not None:
            feed.store, feed.inline_seconds = store, self.settings.inline_tool_seconds
        node_executor = _node_executor(executor, self.settings)
        if node_executor is not None:  # e.g. Ray refuses a store its replicas cannot reach
            await asyncio.to_thread(node_executor.check_store, store)
        run_id = run_id or uuid.uuid4().hex
        started = time.perf_counter()
        log: list[Any] = []
        seq_lock = threading.Lock()
        loop = None if sync else asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def emit(event: Any) -> None:
            with seq_lock:  # numbered and logged in one step: the log is in seq order
                event.seq = len(log) + 1
                log.append(event)
                if feed is not None:
                    feed.items.append(event)
            if on_event is not None:
                store.flush()  # the callback may hand the event's refs on: they are stored first
                on_event(event)
            if feed is not None:
                feed.wake(threading.get_ident() != loop_thread)

        if on_event is not None:  # events from several threads (progress, branches): one at a time, in order
            deliver_lock, numbered = threading.RLock(), emit

            def emit(event: Any) -> None:  # noqa: F811 - the same, delivered under one lock
                with deliver_lock:
                    numbered(event)

        try:  # inputs are stored (write-behind, as node outputs), or looked up, pinned to the run
            refs = self._coerce_inputs(inputs or {}, store, pin=run_id, defer=node_executor is None)
        except BaseException:
            try:
                store.unpin(run_id)
            except OrchestratorError as exc:  # the input error is the one to report
                logger.warning("run %s: releasing its inputs failed too: %s", run_id, exc)
            raise
        prof = _resolve_profile(profile)
        workers = max_workers or self.settings.max_workers
        rc = _RunContext(
            run_id=run_id, store=store, cache=cache, seed=seed, emit=emit, loop=loop,
            pool_size=max(workers, self.settings.max_workers) * POOL_FACTOR,
            cancel=cancel if cancel is not None else CancelFlag(), models=models, profile=prof,
            settings=self.settings, results={}, slots=None if sync else asyncio.Semaphore(workers),
            llm=llm, node_executor=node_executor, defer=node_executor is None, sync=sync,
        )
        emit(ev.RunStarted(run_id=run_id, workflow=self.name, nodes=list(self.plan.order),
                           executor=_executor_name(node_executor)))
        config: dict[str, Any] = {"configurable": {"orchestrator_run": rc},
                                  "recursion_limit": len(self.plan.nodes) + 10}
        if sync:  # nodes check the cancel flag themselves; parallel branches on this many threads
            config["max_concurrency"] = workers
            stop_watching: Callable[[], None] = lambda: None  # noqa: E731
        else:
            stop_watching = watch_cancel(rc.cancel, loop, rc.on_cancel)
        error: BaseException | None = None
        try:
            if cache and not rc.cancel.is_set():
                rc.prefetched = await _off_loop(rc, _cached_nodes, self.plan, refs, rc)
            hits = {node_id: found[1] for node_id, found in rc.prefetched.items() if found[1] is not None}
            if len(hits) == len(self.plan.nodes):  # an unchanged rerun: no graph to run
                for node_id in self.plan.order:
                    rc.results[node_id] = NodeResult(status="cached", outputs=hits[node_id])
                    emit(ev.NodeCached(run_id=run_id, node=node_id, outputs=hits[node_id]))
            elif sync:
                try:
                    self.graph.invoke({"inputs": refs}, config)
                except BaseException:  # Ctrl-C in the caller's thread: the branches on LangGraph's threads stop
                    rc.cancel.set()
                    raise
            else:
                await self.graph.ainvoke({"inputs": refs}, config)
        except asyncio.CancelledError:
            rc.cancel.set()  # the caller cancelled us (Ctrl-C, a closed stream): nodes still running stop
            rc.on_cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - reported as run_failed
            error = exc
        finally:
            stop_watching()
            rc.finished = True
            for pool in rc.abandoned:  # a blocking call outlived its node: keep its thread from later runs
                retire_pool(pool)
            try:
                store.unpin(run_id)  # stores what the run deferred first (Redis: in the same round trip)
            except OrchestratorError as exc:  # its outputs may not be stored: the run failed
                if error is not None:
                    logger.warning("run %s: its outputs were not all stored either: %s", run_id, exc)
                error = error or exc
        result = self._finish(rc, started, error)
        emit(_final_event(result))
        result.events = log
        return result

    def _default_store(self) -> ArtifactStore:
        """The configured store, opened once per compiled workflow (not once per run)."""
        with _EMBEDDED_LOCK:
            if self._store is None:
                self._store = open_store(self.settings)
            return self._store

    def _finish(self, rc: _RunContext, started: float, error: BaseException | None) -> RunResult:
        outputs: dict[str, Refs] = {}
        errors: dict[str, str] = {}
        for name, src in self.plan.outputs.items():
            assert src.node is not None  # validation refuses pass-through outputs
            res = rc.results.get(src.node)
            port = self.plan.nodes[src.node].tool.spec.output(src.name)
            if res is not None and src.name in res.outputs:
                outputs[name] = res.outputs[src.name]
            elif res is not None and res.status in ("succeeded", "cached") and port is not None and port.optional:
                continue  # an optional port the tool left empty (e.g. `images` when one image was made)
            elif res is not None:
                errors[name] = f"node {src.node!r} {res.status}: {res.error or 'no output ' + src.name}"
            else:
                errors[name] = f"node {src.node!r} did not run"
        for node_id, res in rc.results.items():
            if res.status == "failed":
                errors.setdefault(node_id, res.error or "failed")
        if error is not None:
            errors["<run>"] = f"{type(error).__name__}: {error}"
        if rc.cancel.is_set() and len(outputs) < len(self.plan.outputs):
            status = "cancelled"
        elif error is not None or not outputs:
            status = "failed"
        elif errors or any(r.status == "failed" for r in rc.results.values()):
            status = "partial"
        else:
            status = "succeeded"
        return RunResult(
            run_id=rc.run_id, status=status, outputs=outputs, errors=errors, nodes=dict(rc.results),
            seconds=time.perf_counter() - started, store=rc.store, executor=_executor_name(rc.node_executor),
        )

    # -------------------------------------------------- inputs
    def _coerce_inputs(self, inputs: dict[str, Any], store: ArtifactStore, pin: str | None = None,
                       defer: bool = False) -> dict[str, Any]:
        """The run's inputs as stored refs; raises :class:`WorkflowInputError` naming every problem."""
        problems = []
        unknown = sorted(set(inputs) - set(self.plan.inputs))
        if unknown:
            problems.append(f"unknown input(s) {unknown}; the workflow takes {sorted(self.plan.inputs)}")
        refs: dict[str, Any] = {}
        for name, decl in self.plan.inputs.items():
            if name not in inputs or inputs[name] is None:
                if not decl.optional:
                    problems.append(f"input {name!r} ({decl.modality.value}) is missing")
                continue
            try:
                refs[name] = coerce_input(inputs[name], decl.modality, store, pin=pin, defer=defer)
            except (ArtifactError, WorkflowInputError) as exc:
                problems.append(f"input {name!r}: {exc}")
        if problems:
            raise WorkflowInputError("; ".join(problems), workflow=self.name)
        return refs

def coerce_input(value: Any, modality: Modality, store: ArtifactStore, *, pin: str | None = None,
                 defer: bool = False) -> ArtifactRef:
    """Turn a Python object, a file path or a ref/id into a stored ref of ``modality``
    (what it stores, or the ref or id it looks up, is pinned to the run ``pin``; ``defer``:
    stored write-behind, see ``ArtifactStore.put``)."""
    if _is_ref(value):
        ref = store.stat(value) if pin is None else store.stat_many([value], pin=pin)[0]  # one round trip
        if ref is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=str(value)[:80])
    elif isinstance(value, Path) or (isinstance(value, str) and modality is not Modality.TEXT):
        path = Path(value)
        if not path.is_file():
            raise WorkflowInputError(f"{str(value)[:200]!r} is not a file, an artifact id, or a {modality.value} object")
        ref = store.put(path.read_bytes(), modality=modality, pin=pin, defer=defer)
    elif isinstance(value, (bytes, bytearray)):
        ref = store.put(bytes(value), modality=modality, pin=pin, defer=defer)
    else:
        ref = store.put(value, modality=modality, pin=pin, defer=defer)
    if ref.modality is not modality:
        raise WorkflowInputError(f"expected {modality.value}, got a {ref.modality.value} artifact ({ref.id[:19]}…)")
    return ref

def _is_ref(value: Any) -> bool:
    return isinstance(value, ArtifactRef) or (isinstance(value, str) and value.startswith("sha256:"))


def _final_event(result: RunResult) -> Any:
    if result.status in ("succeeded", "partial"):
        return ev.RunFinished(
            run_id=result.run_id, status=result.status, outputs=result.outputs, errors=result.errors, seconds=result.seconds
        )
    return ev.RunFailed(
        run_id=result.run_id, status="cancelled" if result.status == "cancelled" else "failed",
        error={"message": "; ".join(f"{k}: {v}" for k, v in result.errors.items()) or result.status},
        errors=result.errors, seconds=result.seconds,
    )

def _node_executor(executor: Any, settings: Any) -> Any:
    """The run's NodeExecutor: ``None`` (in-process, nothing imported) unless one is named."""
    if executor is not None and not isinstance(executor, str):
        return executor
    name = executor or getattr(settings, "executor", "local")
    if name == "local":
        return None
    from orchestrator.runtime.executors import get_executor

    return get_executor(settings, name=name)


def _executor_name(node_executor: Any) -> str:
    return getattr(node_executor, "name", "local") if node_executor is not None else "local"


def _resolve_profile(profile: Any) -> Any:
    """A profile given by name becomes a Profile; ``None`` is resolved on first need (model-backed
    nodes), so runs of plain tools never import the model runtime or torch."""
    if isinstance(profile, str):
        from orchestrator.runtime import get_profile

        return get_profile(profile)
    return profile


def _default_context(compiled: CompiledWorkflow) -> _RunContext:
    """The context of a graph embedded in someone else's LangGraph graph (no run of ours):
    the configured store and the shared pool for blocking tools."""
    with _EMBEDDED_LOCK:
        shared = compiled._embedded
        if shared is None:
            shared = compiled._embedded = compiled._default_store()
    return _RunContext(
        run_id=uuid.uuid4().hex, store=shared, cache=True, seed=None, emit=lambda e: None,
        loop=None, pool_size=compiled.settings.max_workers * POOL_FACTOR, cancel=threading.Event(),
        models=None, profile=None,
        settings=compiled.settings, results={},
    )


_EMBEDDED_LOCK = threading.RLock()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a burst of allocations that all stay alive; counted across
    threads, so it comes back on when the last pause ends, and only if it was on before the first."""
    global _gc_pauses, _gc_was_on
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_on = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_on:
                gc.enable()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_on = True

# ------------------------------------------------------------------ one node

def _effective_seed(node: ResolvedNode, run_seed: int | None) -> tuple[int | None, bool]:
    """(seed to use, whether it is fixed). Unseeded tools get ``None``."""
    if not node.tool.spec.seeded:
        return None, True
    param_seed = getattr(node.params, "seed", None)
    if node.seed is not None:
        return node.seed, True
    if param_seed is not None:
        return int(param_seed), True
    if run_seed is not None:
        digest = hashlib.sha256(f"{run_seed}:{node.id}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF, True
    return random.SystemRandom().randrange(2**31), False

def cache_key(node: ResolvedNode, seed: int | None, input_ids: dict[str, Any], model: Any = None) -> str:
    """Content address of a node's result: tool, version, params, seed, input artifact ids and,
    for model-backed tools, the profile's resolved model choice."""
    doc = {
        "tool": node.tool.name,
        "version": node.tool.spec.version,
        "params": node.params_json,
        "seed": seed,
        "inputs": input_ids,
        "model": model,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

def _bound_inputs(node: ResolvedNode, inputs: dict[str, Any], upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each bound input port's value (a list for a ``many`` port) from the run's inputs and the
    upstream nodes' outputs (refs, or ids when only ids are known)."""
    values: dict[str, Any] = {}
    for port_name, many, sources in node.input_ports:
        found: list[Any] = []
        for s in sources:
            if s.node is None and s.name in inputs:
                value = inputs[s.name]
            elif s.node is not None and s.name in upstream.get(s.node, {}):
                value = upstream[s.node][s.name]
            else:
                continue
            found.extend(value if isinstance(value, list) else [value])
        if many:
            values[port_name] = found
        elif found:
            values[port_name] = found[0]
    return values


def _node_cache_key(node: ResolvedNode, input_ids: dict[str, Any], rc: _RunContext) -> tuple[int | None, str | None]:
    """(the node's seed, its cache key); the key is ``None`` when its result is not cached."""
    seed, fixed = _effective_seed(node, rc.seed)
    cacheable = rc.cache and node.tool.spec.cacheable and fixed
    return seed, cache_key(node, seed, input_ids, _resolved_model(node, rc)) if cacheable else None


_DONE = frozenset({"succeeded", "cached"})


async def _execute_node(node: ResolvedNode, state: GraphState, rc: _RunContext) -> dict[str, Any]:
    statuses = state.get("status", {})
    errs = state.get("errors", {})

    def finish(status: str, outputs: dict[str, Refs] | None = None, error: str | None = None,
               seconds: float = 0.0) -> dict[str, Any]:
        rc.results[node.id] = NodeResult(status=status, outputs=outputs or {}, error=error, seconds=seconds)
        update: dict[str, Any] = {"status": {node.id: status}, "refs": {node.id: outputs or {}}}
        if error:
            update["errors"] = {node.id: error}
        return update

    # 1. upstream failures and cancellation skip the node
    bad = [d for d in node.deps if statuses.get(d) not in _DONE]
    if bad:
        bad.sort()
        reason = f"upstream node {bad[0]!r} {statuses.get(bad[0], 'did not run')}" + (
            f": {errs[bad[0]]}" if bad[0] in errs else ""
        )
        rc.emit(ev.NodeSkipped(run_id=rc.run_id, node=node.id, reason=reason))
        return finish("skipped", error=reason)
    if rc.cancel.is_set():
        rc.emit(ev.NodeSkipped(run_id=rc.run_id, node=node.id, reason="run cancelled"))
        return finish("cancelled", error="run cancelled")

    # 2. resolve input refs
    refs = _bound_inputs(node, state.get("inputs", {}), state.get("refs", {}))
    input_ids = {k: [r.id for r in v] if isinstance(v, list) else v.id for k, v in refs.items()}
    seed, key = _node_cache_key(node, input_ids, rc)

    # 3. cache lookup (the run may have found it before the graph started)
    if key is not None:
        found = rc.prefetched.pop(node.id, None)
        if found is not None and found[0] == key:
            hit = found[1]
        else:  # not looked up yet
            hit = await _off_loop(rc, _cache_lookup, rc.store, key, rc.run_id)
        if hit is not None:
            rc.emit(ev.NodeCached(run_id=rc.run_id, node=node.id, outputs=hit))
            return finish("cached", hit)

    # 4. run with retries and timeout
    attempts = node.retries + 1
    started = time.perf_counter()
    last_error: BaseException | None = None
    for attempt in range(1, attempts + 1):
        if rc.cancel.is_set():
            break
        rc.emit(ev.NodeStarted(run_id=rc.run_id, node=node.id, tool=node.tool.name, attempt=attempt))
        try:
            if rc.node_executor is not None:
                stored = await rc.node_executor.call(node, refs, seed, input_ids, rc, cache_key=key)
            else:
                stored = await _call_tool(node, refs, seed, input_ids, rc, cache_key=key)
        except asyncio.CancelledError:
            rc.emit(ev.NodeFailed(run_id=rc.run_id, node=node.id, error={"type": "RunCancelled", "message": "cancelled"}))
            update = finish("cancelled", error="run cancelled")
            if not rc.sync and _task_cancelled():
                raise  # the run itself is being cancelled (Ctrl-C, a consumer gone), not just this call
            return update
        except Exception as exc:  # noqa: BLE001 - isolated: only dependents fail
            last_error = exc
            logger.info("node %s attempt %d/%d failed: %s", node.id, attempt, attempts, exc)
            if attempt < attempts and node.retry_delay:
                await asyncio.sleep(node.retry_delay * 2 ** (attempt - 1))  # never on the sync path
            continue
        seconds = time.perf_counter() - started
        rc.emit(ev.NodeFinished(run_id=rc.run_id, node=node.id, outputs=stored, seconds=seconds))
        return finish("succeeded", stored, seconds=seconds)

    if last_error is None:
        rc.emit(ev.NodeSkipped(run_id=rc.run_id, node=node.id, reason="run cancelled"))
        return finish("cancelled", error="run cancelled")
    info = _error_info(last_error, node)
    rc.emit(ev.NodeFailed(run_id=rc.run_id, node=node.id, error=info, attempts=attempts))
    return finish("failed", error=info["message"], seconds=time.perf_counter() - started)


def _task_cancelled() -> bool:
    """Whether the running task has been asked to stop (``Task.cancel``), as opposed to an awaited
    call of it being cancelled (the run's cancel flag cancels the calls in flight)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _resolved_model(node: ResolvedNode, rc: _RunContext) -> Any:
    """What a model-backed tool (one with a ``model`` param left to the profile) will load,
    so switching profiles never returns another model's cached result."""
    if "model" not in type(node.params).model_fields or node.model is not None:
        return None
    try:
        if rc.profile is None:  # once per run; the tools then get the same profile through ctx.profile
            from orchestrator.runtime import get_profile

            rc.profile = get_profile(settings=rc.settings)
        choice = rc.profile.resolve(node.tool.spec.task, tool=node.tool.name)
    except Exception:  # noqa: BLE001 - no profile entry: the tool decides, keyed by profile name
        return {"profile": getattr(rc.profile, "name", None) or getattr(rc.settings, "profile", None)}
    return choice.model_dump(mode="json")


def _error_info(exc: BaseException, node: ResolvedNode) -> dict[str, Any]:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return {"type": "NodeTimeout", "message": f"timed out after {node.timeout}s", "node": node.id}
    if isinstance(exc, OrchestratorError):
        return {**exc.to_dict(), "node": node.id}
    return {"type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}", "node": node.id}

async def _call_tool(
    node: ResolvedNode, refs: dict[str, Any], seed: int | None, input_ids: dict[str, Any], rc: _RunContext,
    *, cache_key: str | None = None,
) -> dict[str, Refs]:
    """Load inputs, run the tool, store its outputs (and the cache entry under ``cache_key``).
    A blocking tool makes one trip to the thread pool for all of it; an async tool runs on
    the loop between two."""
    store = rc.store

    def on_progress(step: int, total: int, message: str | None) -> None:
        rc.emit(ev.NodeProgress(run_id=rc.run_id, node=node.id, step=step, total=total, message=message))

    # set on run cancel or timeout: cooperative tools stop early (on the sync path: the run's flag)
    attempt_cancel = rc.cancel if rc.sync else threading.Event()
    ctx = ToolContext(
        node=node.id, seed=seed, models=rc.models, profile=rc.profile, settings=rc.settings, store=store,
        on_progress=on_progress, cancel_event=attempt_cancel, llm=rc.llm,
        provenance=dict(rc.provenance),
    )
    t = node.tool

    def store_all(outputs: dict[str, Any]) -> dict[str, Refs]:
        stored = _store_outputs(node, outputs, seed, input_ids, rc, ctx.provenance)
        if cache_key is not None and not attempt_cancel.is_set():  # a timed-out call caches nothing
            _cache_store(store, cache_key, stored)
        return stored

    if t.is_async:

        async def call_async() -> dict[str, Refs]:
            decoded = await asyncio.to_thread(_load_inputs, store, refs) if refs else {}
            outputs = t._outputs(await t.fn(**t._kwargs(decoded, node.params, ctx)))
            return await asyncio.to_thread(store_all, outputs)

        call: asyncio.Future[dict[str, Refs]] = asyncio.ensure_future(call_async())
    else:

        def call_blocking() -> dict[str, Refs]:
            began = time.perf_counter()
            kwargs = t._kwargs(_load_inputs(store, refs), node.params, ctx)
            stored = store_all(t._outputs(t.fn(**kwargs)))
            quick_calls.record(t, time.perf_counter() - began)
            return stored

        if rc.sync:  # no loop to keep free: the call blocks the thread this node runs on
            stored = call_blocking()
            if attempt_cancel.is_set():  # the run was cancelled meanwhile: the outputs belong to no node
                raise asyncio.CancelledError
            return stored
        if node.alone and node.timeout is None and quick_calls.is_quick(t, rc.settings.inline_tool_seconds):
            try:
                return call_blocking()  # quicker than the hand-offs to a thread and back
            except RuntimeError as exc:
                if "event loop" not in str(exc):
                    raise
                # asyncio.run() and the like refuse to run inside our loop: this tool needs a
                # thread; the call is made again there, as it always was before it proved quick
                quick_calls.pool_only(t)
        if rc.slots is not None:
            await rc.slots.acquire()
        try:
            call, pool = run_in_pool(rc.pool_size, call_blocking)
        except BaseException:
            if rc.slots is not None:
                rc.slots.release()
            raise
        if rc.slots is not None:
            call.add_done_callback(lambda _: rc.slots.release())  # type: ignore[union-attr]
    rc.inflight[call] = attempt_cancel
    try:
        if rc.cancelled.is_set():
            rc.on_cancel()
        return await (call if node.timeout is None else asyncio.wait_for(call, node.timeout))
    except (asyncio.CancelledError, asyncio.TimeoutError):
        # a blocking tool cannot be killed: it sees ctx.cancelled, and whatever it returns
        # after this is stored but belongs to no node
        attempt_cancel.set()
        call.cancel()
        if not t.is_async:
            rc.abandoned.add(pool)
        raise
    finally:
        rc.inflight.pop(call, None)


async def _off_loop(rc: _RunContext, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a blocking store call: right here on the sync path, else on the loop when the
    store's calls are quick (see :data:`quick_calls`), else in a thread."""
    if rc.sync:
        return fn(*args)
    return await quick_calls.call(rc.store, rc.settings.inline_tool_seconds, fn, *args)


def _inline_tools(plan: Plan) -> list[Any] | None:
    """The tools of a plan that may take LangGraph's sync path (each once), once they prove quick;
    ``None`` when a node cannot: an async tool, a timeout, or a retry delay (waits only a loop can cut short)."""
    tools: dict[int, Any] = {}
    for node in plan.nodes.values():
        if node.tool.is_async or node.timeout is not None or (node.retries and node.retry_delay):
            return None
        tools[id(node.tool)] = node.tool
    return list(tools.values())


def _load_inputs(store: ArtifactStore, refs: dict[str, Any]) -> dict[str, Any]:
    return {port: [store.load(r) for r in v] if isinstance(v, list) else store.load(v) for port, v in refs.items()}


def _store_outputs(
    node: ResolvedNode, outputs: dict[str, Any], seed: int | None, input_ids: dict[str, Any], rc: _RunContext,
    extra: dict[str, Any] | None = None,
) -> dict[str, Refs]:
    """Store each output (a list of artifacts for ``many`` ports) with the node's provenance."""
    # a plain dict: the store validates it as a Provenance with the rest of each artifact's metadata
    # (a tool's own notes may set the model and seed it used, not what ran it)
    provenance = {"model": node.model, "seed": seed, **(extra or {}), "tool": node.tool.name,
                  "tool_version": node.tool.spec.version, "node": node.id, "params": node.params_json,
                  "inputs": input_ids}

    put_ids: set[str] = set()
    returned: list[ArtifactRef] = []  # refs the tool returned as they were

    def put(port_name: str, value: Any, modality: Modality) -> ArtifactRef:
        if isinstance(value, ArtifactRef):
            ref = value
            returned.append(ref)
        else:
            try:
                ref = rc.store.put(value, modality=modality, provenance=provenance, pin=pin, defer=defer)
                put_ids.add(ref.id)
            except ArtifactError as exc:
                raise ToolError(f"output {port_name!r} could not be stored: {exc}", tool=node.tool.name) from exc
        if ref.modality is not modality:
            raise ToolError(f"output {port_name!r} is {ref.modality.value}, declared {modality.value}", tool=node.tool.name)
        return ref

    pin = None if rc.finished else rc.run_id  # a call that outlived its run pins nothing
    defer = rc.defer and pin is not None
    stored: dict[str, Refs] = {}
    ports = node.output_ports
    for port_name, value in outputs.items():
        port = ports[port_name]
        if port.many:
            if not isinstance(value, (list, tuple)):
                raise ToolError(f"output {port_name!r} is a 'many' port: return a list", tool=node.tool.name)
            stored[port_name] = [put(port_name, v, port.modality) for v in value]
        else:
            stored[port_name] = put(port_name, value, port.modality)
    passed_through = [r for r in returned if r.id not in put_ids]
    if passed_through and not rc.finished:
        rc.store.pin(rc.run_id, passed_through)
    return stored


def _flat(values: Any) -> list[ArtifactRef]:
    out: list[ArtifactRef] = []
    for v in values:
        out.extend(v if isinstance(v, list) else [v])
    return out


def _cache_lookup(store: ArtifactStore, key: str, run_id: str) -> dict[str, Refs] | None:
    """The outputs cached under ``key``, pinned to the run; ``None`` when any is gone."""
    return _cache_lookups(store, [key], run_id)[0]


def _cache_lookups(store: ArtifactStore, keys: list[str], run_id: str) -> list[dict[str, Refs] | None]:
    """The outputs cached under each key (one store call), pinned to the run; ``None`` where any
    output is gone. Its wall time less its CPU time goes to :data:`quick_calls` under the store
    (quick: looked up on the loop)."""
    with quick_calls.timing_waits(store):
        found = store.get_record_refs_many(CACHE_NAMESPACE, keys, pin=run_id)
    memo = _memo_for(store)
    outputs: list[dict[str, Refs] | None] = []
    for key, entry in zip(keys, found, strict=True):
        if entry is None or any(ref is None for ref in entry[1].values()):  # an output expired or was deleted
            outputs.append(None)
            continue
        memo.put(key, entry[0])
        outputs.append(_outputs_of(*entry))
    return outputs


def _cache_store(store: ArtifactStore, key: str, stored: dict[str, Refs]) -> None:
    record = _record_of(stored)
    store.put_record(CACHE_NAMESPACE, key, record)
    _memo_for(store).put(key, record)


def _record_of(outputs: dict[str, Refs]) -> dict[str, Any]:
    """A node-cache record: each output port's artifact id (a list of ids for a ``many`` port)."""
    return {k: [x.id for x in r] if isinstance(r, list) else r.id for k, r in outputs.items()}


def _outputs_of(record: dict[str, Any], refs: dict[str, ArtifactRef | None]) -> dict[str, Refs]:
    return {port: [refs[i] for i in v] if isinstance(v, list) else refs[v] for port, v in record.items()}  # type: ignore[misc]


def _ids_of(record: dict[str, Any]) -> list[str]:
    return [i for v in record.values() for i in (v if isinstance(v, list) else [v])]


class _CacheMemo:
    """Node-cache records this process has read or written in one store (least recently used
    dropped past ``entries``). A record is only a hint: its artifacts are checked, and pinned,
    in the store before it is used, and a record whose artifacts are gone is forgotten."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._records: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                self._records.move_to_end(key)
            return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        if self.entries <= 0:
            return
        with self._lock:
            self._records[key] = record
            self._records.move_to_end(key)
            while len(self._records) > self.entries:
                self._records.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)


_memos: weakref.WeakKeyDictionary[ArtifactStore, _CacheMemo] = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def _memo_for(store: ArtifactStore, settings: Any = None) -> _CacheMemo:
    """The store's memo, made on first use with ``node_cache_memo_entries`` of ``settings``
    (default: the process's settings)."""
    with _memos_lock:
        memo = _memos.get(store)
        if memo is None:
            if settings is None:
                from orchestrator.settings import get_settings

                settings = get_settings()
            memo = _memos[store] = _CacheMemo(settings.node_cache_memo_entries)
        return memo


def _cached_nodes(plan: Plan, inputs: dict[str, ArtifactRef], rc: _RunContext
                  ) -> dict[str, tuple[str, dict[str, Refs] | None]]:
    """The nodes whose results the node cache holds, found before the graph starts: node id ->
    (cache key, outputs pinned to the run, or ``None`` for a node looked up and not found).

    The plan is walked in dependency order; a node is looked at once every upstream node was
    found cached (only then is its cache key known). Records in the store's memo need no read:
    their artifacts are checked and pinned together in one call at the end. The others are read
    in one call for each run of nodes that do not depend on one another (all the branches of a
    fan-out at once). A node whose artifacts are gone, and everything downstream of it, is left
    to the graph.
    """
    memo = _memo_for(rc.store, rc.settings)
    records: dict[str, dict[str, Any]] = {}  # node -> its cache record (port -> id or ids)
    keys: dict[str, str] = {}  # in dependency order
    read: dict[str, dict[str, Refs]] = {}  # outputs of the records read from the store (checked and pinned)
    missed: dict[str, str] = {}  # node -> its key, looked up in the store and not found
    unread: dict[str, str] = {}  # node -> its key, to read from the store with the others in one call

    def read_unread() -> None:
        for (node_id, key), hit in zip(unread.items(), _cache_lookups(rc.store, list(unread.values()), rc.run_id),
                                       strict=True):
            if hit is None:
                missed[node_id] = key
            else:
                read[node_id], records[node_id], keys[node_id] = hit, _record_of(hit), key
        unread.clear()

    input_ids = {name: ref.id for name, ref in inputs.items()}
    for node_id in plan.order:
        node = plan.nodes[node_id]
        if unread and not node.deps.isdisjoint(unread):
            read_unread()
        if not node.deps <= records.keys():
            continue
        _, key = _node_cache_key(node, _bound_inputs(node, input_ids, records), rc)
        if key is None:
            continue
        record = memo.get(key)
        if record is None:
            unread[node_id] = key
        else:
            keys[node_id], records[node_id] = key, record
    if unread:
        read_unread()
    ids = sorted({i for node_id in keys.keys() - read.keys() for i in _ids_of(records[node_id])})
    stored = dict(zip(ids, rc.store.stat_many(ids, pin=rc.run_id), strict=True)) if ids else {}
    found: dict[str, tuple[str, dict[str, Refs] | None]] = {}
    for node_id, key in keys.items():  # in dependency order
        if not plan.nodes[node_id].deps <= found.keys():
            continue  # upstream is gone: its key may change
        if node_id in read:
            found[node_id] = (key, read[node_id])
        elif all(stored.get(i) is not None for i in _ids_of(records[node_id])):
            found[node_id] = (key, _outputs_of(records[node_id], stored))
        else:  # expired or deleted: forget the record, the node runs
            memo.discard(key)
    for node_id, key in missed.items():
        if plan.nodes[node_id].deps <= found.keys():
            found[node_id] = (key, None)
    return found

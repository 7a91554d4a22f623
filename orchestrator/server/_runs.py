"""The run manager: a bounded queue of runs, workers, persisted state and event logs.

Runs are jobs. ``submit`` records a run (``queued``) and queues it; a fixed pool of
worker tasks executes runs (``running``) and appends every event to the store's
event log ``run:<id>`` in order; the final state (outputs, errors, answer, node
results) is written as the record ``runs/<id>``. Both live in the store's backend
(Redis, or the embedded directory), so:

* events are written by one log writer per process (group commit): runs go on while
  their events are stored, and every event emitted meanwhile, by any run, goes in the
  next round, one thread hop for all of them instead of one per event or per run (a
  round may linger ``event_linger_seconds`` for the events that follow close behind); a
  run's running record goes with its first batch (or alone once the run is
  ``running_record_delay_seconds`` old), and its terminal event with its final record. Only
  a run still unfinished ``running_record_delay_seconds`` after it was submitted is marked
  active (``runs_active``, what the sweep below looks for), so a light run makes three record
  writes, not five. The writes go on the event loop while they are quick, else to a thread
  (:meth:`RunManager._store_call`). Followers see an event once it is stored, so nobody sees an
  event the log could lose;

* any server process sharing the backend answers ``GET /v1/runs/{id}`` and streams
  the events for runs another process executes (blocking reads of the log, on a
  bounded pool of their own, ``event_follow_threads``), which is what lets several
  worker processes serve one port (``serve --workers``, :mod:`._workers`); followers
  in the run's own process read its events from memory as they are appended;
* a restarted server still answers for finished runs, and reports runs that were in
  flight as ``interrupted``: each server holds a lease record refreshed every
  ``lease_seconds / 3``; a queued or running run whose owner's lease is gone is
  marked interrupted (a ``run_failed`` event with ``status: "interrupted"`` is
  appended, so event streams end too) when it is read, and by the sweep of the runs marked
  active. A server shutting down cleanly marks its own unfinished runs at once;
* a cancel sent to another process reaches the run's owner at once: it is recorded
  (``runs_cancel/<id>``, which the owner's heartbeat also checks, every
  ``lease_seconds / 3``) and appended to the owner's control log ``server:<instance>``,
  on which the owner blocks (one thread) like a follower on a run's log.

Capacity: ``max_concurrent_runs`` run at once and ``max_queued_runs`` more may wait;
beyond that :class:`QueueFull` (HTTP 429) says when to retry.

Execution and the record are the run service's (:mod:`orchestrator.runs`): a run's
executor yields its steps, :func:`~orchestrator.runs.execute` folds each event into the
typed :class:`~orchestrator.runs.RunRecord` and hands it here to be logged, and
:meth:`~orchestrator.runs.RunRecord.finish` writes the outcome in; this module adds the
queue, the leases, persistence and the fan-out to followers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.artifacts import ArtifactRef, ArtifactStore
from orchestrator.errors import OrchestratorError
from orchestrator.runs import ACTIVE, TERMINAL, Outcome, RunKind, RunRecord, Step, execute
from orchestrator.settings import get_settings
from orchestrator.workflow import CancelFlag
from orchestrator.workflow import quick_calls

from ._metrics import Metrics
from .settings import ServerSettings

__all__ = ["ACTIVE", "TERMINAL", "Outcome", "QueueFull", "RunJob", "RunManager", "event_stream"]

logger = logging.getLogger("orchestrator.server.runs")
_T = TypeVar("_T")

RUNS_NS = "runs"
ACTIVE_NS = "runs_active"
CANCEL_NS = "runs_cancel"
SERVERS_NS = "servers"


def event_stream(run_id: str) -> str:
    """The store's event-log name of a run."""
    return f"run:{run_id}"


def control_stream(instance_id: str) -> str:
    """The store's event-log name of a server process's control messages (cancels from other processes)."""
    return f"server:{instance_id}"


def new_run_id() -> str:
    """Time-ordered id: 12 hex digits of milliseconds, then 12 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class QueueFull(OrchestratorError):
    """The run queue is full; ``retry_after`` is a suggested wait in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


Executor = Callable[["RunJob"], AsyncIterator[Step]]
"""Executes one run: yields its events (typed models or JSON) and, last, an :class:`Outcome`."""


class _Signal:
    """Wakes everyone waiting for a run's next event (in this process)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.users = 0

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


@dataclass
class _Quiet:
    """How long a follower stays quiet before it yields ``None`` (a keep-alive): ``seconds``, which may
    start shorter (``first_idle``), is ``idle`` once it has yielded anything."""

    idle: float
    seconds: float

    def spoke(self) -> None:
        self.seconds = self.idle


@dataclass
class _Batch:
    """What the log writer stores of one run in one round (see :meth:`RunManager._store_batch`)."""

    run_id: str
    events: list[dict[str, Any]]
    record: dict[str, Any] | None
    final: bool
    mark: bool = False
    """Store its mark in ``runs_active`` first."""
    marked: bool = False
    """It was marked before: the final write drops the mark."""
    expire: bool = False
    """Not marked: its running record and its log get ``run_ttl_seconds`` of life, so a server that dies
    before marking it leaves nothing for ever (the sweep only sees marked runs)."""


@dataclass
class RunJob:
    """A run owned by this process: its record, what to execute, and its cancel switch."""

    id: str
    record: RunRecord
    executor: Executor
    spec: dict[str, Any] = field(default_factory=dict)
    cancel: CancelFlag = field(default_factory=CancelFlag)
    """Set to cancel; wakes the workflow engine's loop at once (no polling)."""
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    node_tools: dict[str, str] = field(default_factory=dict)
    terminal_event: bool = False
    finalizing: bool = False
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """The events appended to the run's log so far, ``(seq, event)`` in order: this process's
    followers read them here instead of from the store."""
    unlogged: list[dict[str, Any]] = field(default_factory=list)
    """Events emitted but not stored yet, in order (the writer's next batch)."""
    record_dirty: bool = False
    """The record changed in a way other processes should see (it started): the writer stores it first."""
    mark_due: bool = False
    log_expires: bool = False
    """Its log was given ``run_ttl_seconds`` of life while it was not marked active."""
    """Unfinished ``running_record_delay_seconds`` after it was submitted: marked active, its record stored at once."""
    marked: bool = False
    """Its mark in ``runs_active`` is stored (so the final write drops it)."""
    stored: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while nothing of the run waits for the log writer (cleared when something does)."""
    holding: bool = False
    """The last unstored event is the run's terminal one: it waits for the final record (one store call)."""
    log_error: OrchestratorError | None = None
    """Why the last batch could not be stored (raised to the run at its next event)."""

    @property
    def status(self) -> str:
        return self.record.status


class RunManager:
    """Queue, workers, persistence and event fan-out for runs.

    >>> manager = RunManager(store, ServerSettings())          # doctest: +SKIP
    >>> await manager.start()                                  # doctest: +SKIP
    >>> job = await manager.submit("graph", executor, request={"graph": "x"})  # doctest: +SKIP
    >>> job.record.status                                      # doctest: +SKIP
    'queued'
    """

    STORE_PROBE_EVERY = 32
    """While the store writes go to threads, every this-many-th is made on the loop to time it again."""

    def __init__(self, store: ArtifactStore, settings: ServerSettings, *, metrics: Metrics | None = None,
                 inline_seconds: float | None = None) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._inline_seconds = get_settings().inline_tool_seconds if inline_seconds is None else inline_seconds
        """A run's store writes (its record at submit, the log writer's rounds) go on the event loop while they
        take less than this on average (the engine's ``inline_tool_seconds``), else to a thread."""
        self._pooled_calls = 0
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._jobs: dict[str, RunJob] = {}
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._signals: dict[str, _Signal] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._background: asyncio.Task[None] | None = None
        self._control: asyncio.Task[None] | None = None
        self._control_thread: ThreadPoolExecutor | None = None
        self._closing = False
        self._ewma_seconds: float | None = None
        self._started = False
        self._unsaved: dict[str, tuple[RunRecord, list[dict[str, Any]]]] = {}
        """Finished runs whose final state (record, and the events not appended yet) the store
        refused; answered from here and saved again by the heartbeat."""
        self._followers: ThreadPoolExecutor | None = None
        """Blocking event-log reads for runs of other processes (bounded; not the default pool)."""
        self._to_write: dict[str, RunJob] = {}
        """Runs with events (or a record) to store, in the order they asked: the log writer's next round."""
        self._log_writer: asyncio.Task[None] | None = None
        self._write_now = asyncio.Event()
        """Ends the log writer's linger at once (a first batch, a run's end, a full batch)."""
        self._finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """The final records of the last ``finished_runs_cached`` runs this process ran (a final
        record never changes), so the end of an event stream or a status check needs no store read."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._closing = False
        await asyncio.to_thread(self._write_lease)
        await self.sweep()
        self._workers = [asyncio.create_task(self._worker(i), name=f"run-worker-{i}")
                         for i in range(self.settings.max_concurrent_runs)]
        self._background = asyncio.create_task(self._heartbeat(), name="run-heartbeat")
        self._control_thread = ThreadPoolExecutor(1, thread_name_prefix="orch-control")
        self._control = asyncio.create_task(self._listen_control(), name="run-control")
        logger.info("run manager %s started: %d workers, %d queue slots", self.instance_id,
                    self.settings.max_concurrent_runs, self.settings.max_queued_runs)

    async def stop(self) -> None:
        """Stop workers; unfinished runs of this process are marked interrupted."""
        if not self._started:
            return
        self._closing = True
        self._started = False
        running = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        tasks = [*self._workers, *running, *(t for t in (self._background, self._control) if t is not None)]
        for task in tasks:  # a cancelled run task records itself as interrupted
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for job in list(self._jobs.values()):
            if job.status in ACTIVE:
                await self._finalize(job, Outcome("interrupted", error={
                    "type": "RunInterrupted", "message": "the server shut down before the run finished"}))
        for signal in self._signals.values():
            signal.fire()
        for pool in (self._followers, self._control_thread):  # blocked reads end by their own timeout
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._followers = self._control_thread = None
        with contextlib.suppress(OrchestratorError):
            await asyncio.to_thread(self._save_unsaved)
        with contextlib.suppress(OrchestratorError):
            await asyncio.to_thread(self.store.delete_record, SERVERS_NS, self.instance_id)

    @property
    def closing(self) -> bool:
        return self._closing

    # ------------------------------------------------------------------ capacity
    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def retry_after(self) -> int:
        per_run = self._ewma_seconds or 1.0
        waves = (self.queued + 1) / self.settings.max_concurrent_runs
        return max(1, min(300, math.ceil(per_run * waves)))

    def ensure_capacity(self) -> None:
        """Raise :class:`QueueFull` if a run submitted now would be refused (check before costly work)."""
        if self._closing or not self._started:
            raise QueueFull("the server is shutting down", retry_after=5)
        if self.running + self.queued >= self.settings.max_concurrent_runs + self.settings.max_queued_runs:
            self.metrics.runs_rejected.inc()
            raise QueueFull(
                f"the run queue is full ({self.queued} waiting, {self.running} running); retry later",
                retry_after=self.retry_after(),
            )

    # ------------------------------------------------------------------ submit
    async def submit(
        self,
        kind: RunKind,
        executor: Executor,
        *,
        request: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        prepare: Callable[[], dict[str, Any]] | None = None,
    ) -> RunJob:
        """Record and queue a run; raises :class:`QueueFull` when at capacity.

        ``prepare``: blocking work done in a thread just before the record is stored (storing the
        request's inputs); it returns more inputs to record, and what it raises refuses the run."""
        self.ensure_capacity()
        run_id = new_run_id()
        self._queued.add(run_id)  # reserve the slot before the first await: concurrent submits see it
        request = request or {}
        record = RunRecord(id=run_id, kind=kind, request=request, options=options or {},
                           inputs={k: _ref_json(v) for k, v in (inputs or {}).items()}, owner=self.instance_id,
                           executor=str(request.get("executor") or "local"))
        job = RunJob(id=run_id, record=record, executor=executor, spec=spec or {},
                     node_tools=dict((spec or {}).get("node_tools") or {}))
        self._jobs[run_id] = job
        try:
            if prepare is not None:  # decoding uploads, fetching links: never on the loop
                extra = await asyncio.to_thread(prepare)
                record.inputs.update({k: _ref_json(v) for k, v in extra.items()})
            await self._store_call(self._persist_new, record)
        except BaseException:
            self._jobs.pop(run_id, None)
            self._queued.discard(run_id)
            raise
        self.metrics.runs_submitted.labels(kind).inc()
        self._update_gauges()
        self._queue.put_nowait(run_id)
        asyncio.get_running_loop().call_later(self.settings.running_record_delay_seconds, self._due, job)
        return job

    def _persist_new(self, record: RunRecord) -> None:
        # with a life, so that a run whose server dies before it is marked active is not kept for ever
        self.store.put_record(RUNS_NS, record.id, record.to_json(), ttl=self.settings.run_ttl_seconds)

    def _due(self, job: RunJob) -> None:
        """The run is not over ``running_record_delay_seconds`` after it was submitted: mark it active, and
        store its running record now if no events took it yet."""
        if job.finalizing or job.status in TERMINAL:
            return
        job.mark_due = True
        self._write_soon(job, now=True)

    # ------------------------------------------------------------------ workers
    async def _worker(self, index: int) -> None:
        while True:
            run_id = await self._queue.get()
            job = self._jobs.get(run_id)
            if job is None or job.status != "queued" or job.cancel.is_set():
                continue  # gone, started elsewhere, or cancelled while queued (being finalized)
            job.task = asyncio.create_task(self._run(job), name=f"run-{run_id}")
            try:
                await asyncio.shield(job.task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._closing or (current is not None and current.cancelling()):
                    raise  # the worker itself is being stopped
            except Exception:  # noqa: BLE001 - one run's failure (a store fault …) must not end the worker
                logger.exception("run %s failed outside its own error handling", run_id)
                self._forget(job)

    @property
    def workers_alive(self) -> bool:
        """Whether every worker task is still running (``/readyz`` says 503 otherwise)."""
        return bool(self._workers) and not any(w.done() for w in self._workers)

    async def _run(self, job: RunJob) -> None:
        job.record.start()
        self._queued.discard(job.id)
        self._running.add(job.id)
        self.metrics.queue_wait_seconds.observe(max(0.0, (job.record.started_at or 0.0) - job.record.created_at))
        self._update_gauges()
        # the running record goes with the run's first events (or alone, once the run is marked active)
        job.record_dirty = True
        if job.mark_due:
            self._write_soon(job, now=True)
        try:
            outcome = await execute(job.record, job.executor(job), emit=lambda doc: self._log(job, doc),
                                    node_tools=job.node_tools)
        except asyncio.CancelledError:
            outcome = Outcome("cancelled" if job.cancel.is_set() and not self._closing else "interrupted",
                              error={"type": "RunCancelled", "message": "the run was cancelled"})
            if self._closing:
                outcome.error = {"type": "RunInterrupted", "message": "the server shut down before the run finished"}
        if job.cancel.is_set() and outcome.status == "failed" and not self._closing:
            outcome.status = "cancelled"
        await self._finalize(job, outcome)

    # ------------------------------------------------------------------ events
    async def _log(self, job: RunJob, doc: dict[str, Any]) -> None:
        """Queue one event (already folded into the record) for the run's log; the log writer appends it
        in order and wakes the followers. Raises the store's error if the last batch failed; waits
        while ``event_batch_max`` events are unstored (the store sets the pace)."""
        if job.log_error is not None:
            raise job.log_error
        terminal = self._observe(job, doc)
        job.unlogged.append(doc)
        job.holding = terminal and not job.spec.get("final_event")
        if job.holding:
            return  # the run's last event: stored with the final record, in one store call
        full = len(job.unlogged) >= self.settings.event_batch_max
        self._write_soon(job, now=full)
        if full:
            await job.stored.wait()
            if job.log_error is not None:
                raise job.log_error

    def _write_soon(self, job: RunJob, *, now: bool = False) -> None:
        """Queue the run for the log writer's next round (started if it is not running); ``now``, or a
        record to store, ends the writer's linger."""
        self._to_write[job.id] = job
        job.stored.clear()
        if now or job.record_dirty or job.finalizing:
            self._write_now.set()
        if self._log_writer is None or self._log_writer.done():
            self._log_writer = asyncio.create_task(self._write_logs(), name="run-log-writer")

    async def _write_logs(self) -> None:
        """The process's log writer (group commit): each round stores what every queued run has
        waiting, in one thread hand-off, while the runs go on; what they emit meanwhile goes in
        the next round. A round with no record to store first lingers ``event_linger_seconds``
        (ended at once by a run's first batch, its end or a full batch), so events that follow
        close behind, and other runs' events, go in the same round. A run's first batch carries
        its running record; once a run has ended, its next batch is its last, with its final record."""
        linger = self.settings.event_linger_seconds
        while self._to_write:
            if linger > 0 and not self._write_now.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(linger):  # no task per wait, unlike wait_for
                        await self._write_now.wait()
            self._write_now.clear()
            jobs = list(self._to_write.values())
            self._to_write.clear()
            work: list[tuple[RunJob, _Batch]] = []
            for job in jobs:
                final = job.finalizing
                batch = _Batch(job.id, job.unlogged[:-1] if job.holding and not final else list(job.unlogged),
                               job.record.to_json() if job.record_dirty or final else None, final,
                               mark=job.mark_due and not job.marked and not final, marked=job.marked)
                if not final and not job.marked and not batch.mark and not job.log_expires and batch.events:
                    batch.expire = job.log_expires = True
                job.record_dirty = False
                if batch.events or batch.record is not None or batch.mark:
                    work.append((job, batch))
                elif job.id not in self._to_write:
                    job.stored.set()
            if not work:
                continue
            try:
                results = await self._store_call(self._store_batches, [b for _, b in work])
            except Exception as exc:  # noqa: BLE001 - the writer serves every run: one failure must not end it
                logger.exception("the run log writer failed")
                failed = OrchestratorError(f"storing run events failed: {exc}")
                results = [([], False, failed)] * len(work)
            for (job, batch), (done, marked, error) in zip(work, results, strict=True):
                job.marked = job.marked or marked
                self._stored(job, done, error, batch.record, batch.final)

    def _stored(self, job: RunJob, done: list[tuple[int, dict[str, Any]]], error: OrchestratorError | None,
                record: dict[str, Any] | None, final: bool) -> None:
        """Note what a round stored of one run: its log in memory, followers woken, the error if any."""
        del job.unlogged[:len(done)]
        if done:
            job.events.extend(done)
            job.record.last_event_id = done[-1][0]
            signal = self._signals.get(job.id)
            if signal is not None:
                signal.fire()
        if error is not None:
            job.record_dirty = job.record_dirty or (record is not None and not final)
            job.log_error = error
        else:
            job.log_error = None
            if final and record is not None:
                self._remember(record)
        if job.id not in self._to_write:
            job.stored.set()

    async def _store_call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, blocking store work, on the loop while these calls wait briefly (two thread hand-offs
        cost more than a round trip to Redis, and their own CPU work holds the interpreter wherever they run),
        else in a thread (:class:`~orchestrator.workflow.QuickCalls`, keyed by this manager). Only calls made
        on the loop are timed: one in a thread also waits for a busy loop to let go of the interpreter, which
        would make a quick store look slow for good. So while they go to threads (as they all do at first),
        every ``STORE_PROBE_EVERY``-th is made on the loop and timed."""
        if not quick_calls.is_quick(self, self._inline_seconds):
            self._pooled_calls += 1
            if self._inline_seconds <= 0 or self._pooled_calls < self.STORE_PROBE_EVERY:
                return await asyncio.to_thread(fn, *args)
            self._pooled_calls = 0
        with quick_calls.timing_waits(self):
            return fn(*args)

    def _store_batches(self, work: list[_Batch]
                       ) -> list[tuple[list[tuple[int, dict[str, Any]]], bool, OrchestratorError | None]]:
        """:meth:`_store_batch` for each run of a round, in order (one thread hand-off for all)."""
        return [self._store_batch(batch) for batch in work]

    def _store_batch(self, batch: _Batch) -> tuple[list[tuple[int, dict[str, Any]]], bool, OrchestratorError | None]:
        """A run's part of a round: its active mark, its record (running), its events (one store call), or
        with ``final`` the final record after them. Returns the events stored, whether the mark was, and
        the error that stopped it, if any."""
        run_id, record = batch.run_id, batch.record
        done: list[tuple[int, dict[str, Any]]] = []
        marked = False
        try:
            if batch.mark:
                self.store.put_record(ACTIVE_NS, run_id, {"owner": self.instance_id, "since": time.time()})
                marked = True
            if record is not None and not batch.final:  # unmarked: it expires unless the final write comes
                self.store.put_record(RUNS_NS, run_id, record,
                                      ttl=None if batch.mark or batch.marked else self.settings.run_ttl_seconds)
            if batch.events:  # one store call for the batch
                done.extend(zip(self.store.append_events(event_stream(run_id), batch.events), batch.events,
                                strict=True))
                if batch.expire:
                    self.store.expire_events(event_stream(run_id), self.settings.run_ttl_seconds)
            if batch.final and record is not None:
                if done:
                    record["last_event_id"] = done[-1][0]
                self._persist_final(record, marked=batch.marked)
        except OrchestratorError as exc:
            return done, marked, exc
        except Exception as exc:  # noqa: BLE001 - this run's failure, not the round's: others keep what they stored
            logger.exception("storing the events of run %s failed", run_id)
            return done, marked, OrchestratorError(f"storing run events failed: {exc}")
        return done, marked, None

    def _observe(self, job: RunJob, doc: dict[str, Any]) -> bool:
        """Note the run's terminal event (returns whether ``doc`` is one) and feed the metrics."""
        kind = doc.get("type")
        if kind in ("run_finished", "run_failed") and doc.get("status") in TERMINAL and doc.get("run_id") == job.id:
            job.terminal_event = True
            return True
        node = doc.get("node")
        if not node or kind not in ("node_finished", "node_cached", "node_failed"):
            return False
        tool = job.node_tools.get(str(node), "?")
        if kind == "node_finished":
            self.metrics.node_seconds.labels(tool).observe(float(doc.get("seconds") or 0.0))
        elif kind == "node_cached":
            self.metrics.node_cache_hits.labels(tool).inc()
        elif kind == "node_failed":
            self.metrics.node_failures.labels(tool).inc()
        return False

    async def _finalize(self, job: RunJob, outcome: Outcome) -> None:
        if job.status in TERMINAL or job.finalizing:
            return
        job.finalizing = True
        now = time.time()
        seconds = now - (job.record.started_at or now)
        final: dict[str, Any] | None = None
        if job.spec.get("final_event") or not job.terminal_event:
            final = {"run_id": job.id, "status": outcome.status, "errors": outcome.errors, "seconds": seconds}
            if outcome.status in ("succeeded", "partial"):
                final.update(type="run_finished",
                             outputs={k: v.model_dump(mode="json") for k, v in outcome.outputs.items()})
            else:
                final.update(type="run_failed", error=outcome.error or {"message": outcome.status})
            if outcome.answer is not None:
                final["answer"] = outcome.answer
            job.record.fold(final)
            self._observe(job, final)
            job.unlogged.append(final)
        rec = job.record
        rec.finish(outcome, now)
        # after the batch in flight (if any), the rest with the final record: the run's last round
        self._write_soon(job, now=True)
        await job.stored.wait()
        if job.log_error is not None:
            logger.error("could not store the final state of run %s (will retry): %s", job.id, job.log_error)
            self._unsaved[job.id] = (rec, list(job.unlogged))
        if rec.started_at is not None:
            seconds = now - rec.started_at
            self.metrics.run_seconds.labels(rec.kind).observe(seconds)
            self._ewma_seconds = seconds if self._ewma_seconds is None else 0.8 * self._ewma_seconds + 0.2 * seconds
        self.metrics.runs_finished.labels(rec.kind, outcome.status).inc()
        self._forget(job)

    def _forget(self, job: RunJob) -> None:
        """Release a finished run's slot and wake whoever waits for it."""
        job.done.set()
        signal = self._signals.get(job.id)
        if signal is not None:
            signal.fire()
            if signal.users <= 0:  # followers that left while the run was live
                self._signals.pop(job.id, None)
        self._jobs.pop(job.id, None)
        self._queued.discard(job.id)
        self._running.discard(job.id)
        self._update_gauges()

    def _save_unsaved(self) -> None:
        """Store the final state of runs that finished while the store was failing."""
        for run_id, (record, events) in list(self._unsaved.items()):
            while events:  # in order; each one stored is dropped, so a retry never repeats it
                record.last_event_id = self.store.append_event(event_stream(run_id), events[0])
                del events[0]
            doc = record.to_json()
            self._persist_final(doc)
            self._remember(doc)
            del self._unsaved[run_id]
            logger.info("stored the final state of run %s", run_id)

    def _persist_final(self, record: dict[str, Any], *, marked: bool = True) -> None:
        """Store a finished run's record (JSON) for ``run_ttl_seconds``, with its log, and drop its marks
        (``marked``: it may be marked active; a run that was never marked needs no delete)."""
        run_id = record["id"]
        self.store.put_record(RUNS_NS, run_id, record, ttl=self.settings.run_ttl_seconds)
        self.store.expire_events(event_stream(run_id), self.settings.run_ttl_seconds)
        if marked:
            self.store.delete_record(ACTIVE_NS, run_id)
        if record.get("cancel_requested") or record.get("owner") != self.instance_id:
            # another process may have asked to cancel it (an unseen request expires by itself)
            self.store.delete_record(CANCEL_NS, run_id)

    def _remember(self, record: dict[str, Any]) -> None:
        """Keep a finished run's final record (as stored) at hand (the last ``finished_runs_cached``)."""
        self._finished[record["id"]] = record
        while len(self._finished) > self.settings.finished_runs_cached:
            self._finished.popitem(last=False)

    def _update_gauges(self) -> None:
        self.metrics.runs_running.set(self.running)
        self.metrics.queue_depth.set(self.queued)

    # ------------------------------------------------------------------ queries
    def local(self, run_id: str) -> RunJob | None:
        return self._jobs.get(run_id)

    async def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's record: live for runs of this process, else from the store
        (an unfinished run whose server is gone is reported, and recorded, as interrupted)."""
        if run_id in self._finished:  # a final record, as stored
            return dict(self._finished[run_id])
        job = self._jobs.get(run_id)
        if job is not None:
            return job.record.to_json()
        if run_id in self._unsaved:
            return self._unsaved[run_id][0].to_json()
        record = await asyncio.to_thread(self.store.get_record, RUNS_NS, run_id)
        if record is None or record.get("status") not in ACTIVE:
            return record
        if record.get("owner") != self.instance_id and not await self._owner_alive(record.get("owner")):
            return await self._mark_interrupted(record)
        return record

    async def list(self, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        ids = await asyncio.to_thread(self.store.list_records, RUNS_NS)
        out: list[dict[str, Any]] = []
        for run_id in sorted(ids, reverse=True):
            record = await self.get(run_id)
            if record is not None and (status is None or record.get("status") == status):
                out.append(record)
            if len(out) >= limit:
                break
        return out

    async def _owner_alive(self, owner: str | None) -> bool:
        if not owner:
            return False
        if owner == self.instance_id:
            return True
        return await asyncio.to_thread(self.store.get_record, SERVERS_NS, owner) is not None

    async def _mark_interrupted(self, doc: dict[str, Any]) -> dict[str, Any]:
        record = RunRecord.model_validate(doc)
        run_id = record.id
        now = time.time()
        error = {"type": "RunInterrupted",
                 "message": "the server running this run stopped before it finished; submit it again"}

        def write() -> dict[str, Any]:
            record.nodes = {}
            for _, event in self.store.read_events(event_stream(run_id)):
                record.fold(event)
            errors = {**record.errors, "<run>": error["message"]}
            record.last_event_id = self.store.append_event(event_stream(run_id), {
                "type": "run_failed", "run_id": run_id, "status": "interrupted", "error": error,
                "errors": errors, "seconds": now - (record.started_at or now),
            })
            record.finish(Outcome("interrupted", errors=errors, error=error), now)
            doc = record.to_json()
            self._persist_final(doc)
            return doc

        result = await asyncio.to_thread(write)
        self.metrics.runs_finished.labels(record.kind, "interrupted").inc()
        logger.warning("run %s of server %s was interrupted", run_id, record.owner)
        return result

    async def sweep(self) -> int:
        """Mark unfinished runs of servers whose lease expired as interrupted; returns how many."""
        try:
            ids = await asyncio.to_thread(self.store.list_records, ACTIVE_NS)
        except OrchestratorError as exc:
            logger.warning("sweep skipped: %s", exc)
            return 0
        alive: dict[str, bool] = {}
        count = 0
        for run_id in ids:
            if run_id in self._jobs:
                continue
            record = await asyncio.to_thread(self.store.get_record, RUNS_NS, run_id)
            if record is None or record.get("status") not in ACTIVE:
                await asyncio.to_thread(self.store.delete_record, ACTIVE_NS, run_id)
                continue
            owner = record.get("owner")
            if owner not in alive:
                alive[owner] = owner != self.instance_id and await self._owner_alive(owner)
            if not alive[owner]:
                await self._mark_interrupted(record)
                count += 1
        return count

    # ------------------------------------------------------------------ cancel
    async def cancel(self, run_id: str, *, wait: float = 2.0) -> dict[str, Any] | None:
        """Cancel a queued or running run; returns its record (None: unknown run)."""
        job = self._jobs.get(run_id)
        if job is None:
            record = await self.get(run_id)
            if record is None or record.get("status") in TERMINAL:
                return record
            record["cancel_requested"] = True
            await asyncio.to_thread(self._request_cancel, run_id, str(record.get("owner") or ""))
            return record
        job.record.cancel_requested = True
        job.cancel.set()
        if job.status == "queued":
            await self._finalize(job, Outcome("cancelled", error={"type": "RunCancelled",
                                                                  "message": "cancelled before it started"}))
            return job.record.to_json()
        if job.task is not None:
            task = job.task
            grace = self.settings.cancel_grace_seconds if job.spec.get("honours_cancel", True) else 0.0
            asyncio.get_running_loop().call_later(grace, lambda: task.done() or task.cancel())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.done.wait(), timeout=wait)
        return job.record.to_json()

    def _request_cancel(self, run_id: str, owner: str) -> None:
        """Ask the owner (another process) to cancel a run: recorded, then pushed to its control log."""
        self.store.put_record(CANCEL_NS, run_id, {"at": time.time()}, ttl=self.settings.run_ttl_seconds)
        if owner:
            self.store.append_event(control_stream(owner), {"type": "cancel", "run_id": run_id, "by": self.instance_id})
            self.store.expire_events(control_stream(owner), self._control_ttl)

    @property
    def _control_ttl(self) -> float:
        """A control log outlives its owner's lease a little (the owner's heartbeat extends it)."""
        return 4 * self.settings.lease_seconds

    async def _listen_control(self) -> None:
        """Block on this process's control log and act on each message (a cancel of one of its runs)."""
        loop = asyncio.get_running_loop()
        stream = control_stream(self.instance_id)
        last = 0
        while True:
            try:
                items = await loop.run_in_executor(self._control_thread, self.store.wait_events, stream, last,
                                                   self.settings.event_wait_seconds)
            except Exception as exc:  # noqa: BLE001 - the heartbeat's check of runs_cancel still sees cancels
                logger.warning("control log unavailable: %s", exc)
                await asyncio.sleep(self.settings.event_poll_seconds)
                continue
            for seq, doc in items:
                last = seq
                run_id = str(doc.get("run_id"))
                job = self._jobs.get(run_id)
                if doc.get("type") == "cancel" and job is not None and not job.cancel.is_set():
                    logger.info("run %s cancelled by server %s", run_id, doc.get("by"))
                    await self.cancel(run_id, wait=0)

    # ------------------------------------------------------------------ following
    async def follow(self, run_id: str, after: int = 0, *, idle: float = 15.0
                     ) -> AsyncIterator[tuple[int | None, dict[str, Any]] | None]:
        """Yield ``(seq, event)`` after ``after`` until the run has ended and its log is drained.

        Runs of this process wake followers at once; for runs of other processes a blocking
        read of the log (``store.wait_events``, on a pool of ``event_follow_threads``) returns
        each event as it is appended. ``None`` is yielded after ``idle`` quiet seconds (a
        chance to send a keep-alive). When the store fails, the last item is
        ``(None, {"type": "error", "run_id", "error": {"type", "message"}, "last_event_id"})``
        (not a log event: reconnect after ``last_event_id`` to resume). Check that the run exists first.
        """
        async with contextlib.aclosing(self.follow_batches(run_id, after, idle=idle)) as batches:
            async for batch in batches:
                if batch is None:
                    yield None
                    continue
                for item in batch:
                    yield item

    async def follow_batches(self, run_id: str, after: int = 0, *, idle: float = 15.0, first_idle: float | None = None
                             ) -> AsyncIterator[list[tuple[int | None, dict[str, Any]]] | None]:
        """:meth:`follow`, the events that arrive together as one list (an event stream sends them in one write).
        ``first_idle``: the first ``None`` comes after this many quiet seconds instead of ``idle``."""
        signal = self._signals.setdefault(run_id, _Signal())
        signal.users += 1
        last = after
        quiet = _Quiet(idle, idle if first_idle is None else min(first_idle, idle))
        try:
            async with contextlib.aclosing(self._follow(run_id, signal, quiet, after)) as batches:
                async for batch in batches:
                    if batch is not None:
                        last = batch[-1][0]
                    yield batch  # type: ignore[misc]
        except OrchestratorError as exc:  # the store failed: end cleanly, saying where to resume
            logger.warning("event stream of run %s stopped: %s", run_id, exc)
            yield [(None, {"type": "error", "run_id": run_id, "last_event_id": last,
                           "error": {"type": type(exc).__name__,
                                     "message": "the store is unavailable; reconnect to resume"}})]
        finally:
            signal.users -= 1
            if signal.users <= 0 and run_id not in self._jobs:
                self._signals.pop(run_id, None)

    async def _follow(self, run_id: str, signal: _Signal, quiet: _Quiet, after: int
                      ) -> AsyncIterator[list[tuple[int, dict[str, Any]]] | None]:
        job = self._jobs.get(run_id)
        batches = self._follow_local(job, signal, quiet, after) if job is not None else \
            self._follow_remote(run_id, quiet, after)
        async with contextlib.aclosing(batches) as events:
            async for batch in events:
                yield batch

    async def _follow_local(self, job: RunJob, signal: _Signal, quiet: _Quiet, after: int
                            ) -> AsyncIterator[list[tuple[int, dict[str, Any]]] | None]:
        """A run of this process: its events from memory as they are stored (each batch wakes
        the followers); the stream ends when the run has ended and every event was yielded."""
        last = after
        quiet_since = time.monotonic()
        while True:
            wake = signal.event
            start = bisect.bisect_right(job.events, last, key=lambda item: item[0])
            if start < len(job.events):
                batch = job.events[start:]
                last = batch[-1][0]
                yield batch
                quiet.spoke()
                quiet_since = time.monotonic()
                continue
            if job.done.is_set() or self._closing or job.id in self._finished:
                return  # ended: every event is stored (the final record went last), so the end goes now
            if time.monotonic() - quiet_since >= quiet.seconds:
                quiet_since = time.monotonic()
                yield None
                quiet.spoke()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(quiet.seconds):  # no task per wait, unlike wait_for
                    await wake.wait()

    async def _follow_remote(self, run_id: str, quiet: _Quiet, after: int
                             ) -> AsyncIterator[list[tuple[int, dict[str, Any]]] | None]:
        """A run of another process (or one already finished): blocking reads of its log; once a
        terminal event was seen, the record says when the owner has finished writing."""
        last = after
        quiet_since = time.monotonic()
        ended = False  # a terminal event was seen: only the record is left to check
        settle = self.settings.event_settle_seconds
        while True:
            if ended:
                items = await asyncio.to_thread(self.store.read_events, event_stream(run_id), last)
            else:  # block on its log instead of polling
                items = await self._wait_events(run_id, last, min(quiet.seconds, self.settings.event_wait_seconds))
            if items:
                last = items[-1][0]
                ended = ended or any(doc.get("type") in ("run_finished", "run_failed") and doc.get("status") in TERMINAL
                                     for _, doc in items)
                yield items
                quiet.spoke()
                quiet_since = time.monotonic()
                continue
            record = await self.get(run_id)
            if record is None or record.get("status") in TERMINAL:
                tail = await asyncio.to_thread(self.store.read_events, event_stream(run_id), last)
                if tail:
                    yield tail
                return
            if self._closing:
                return
            if time.monotonic() - quiet_since >= quiet.seconds:
                quiet_since = time.monotonic()
                yield None
                quiet.spoke()
            if ended:  # its owner writes the final record right after the final event: re-check soon
                await asyncio.sleep(settle)
                settle = min(2 * settle, self.settings.event_poll_seconds)

    async def _wait_events(self, run_id: str, after: int, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Events of ``run_id`` after ``after``, blocking up to ``timeout`` on the followers' pool."""
        if self._followers is None:
            self._followers = ThreadPoolExecutor(self.settings.event_follow_threads, thread_name_prefix="orch-follow")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._followers, self.store.wait_events, event_stream(run_id), after, timeout)

    async def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any] | None:
        """Wait until a run ends; returns its record."""
        job = self._jobs.get(run_id)
        if job is not None:
            await asyncio.wait_for(job.done.wait(), timeout=timeout)
            return job.record.to_json()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = await self.get(run_id)
            if record is None or record.get("status") in TERMINAL:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise asyncio.TimeoutError
            await asyncio.sleep(self.settings.event_poll_seconds)

    # ------------------------------------------------------------------ background
    def _write_lease(self) -> None:
        self.store.put_record(SERVERS_NS, self.instance_id, {"pid": os.getpid(), "host": socket.gethostname(),
                                                            "at": time.time()},
                              ttl=max(1, math.ceil(self.settings.lease_seconds)))
        self.store.expire_events(control_stream(self.instance_id), self._control_ttl)

    async def _heartbeat(self) -> None:
        interval = max(0.2, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._write_lease)
                if self._unsaved:
                    await asyncio.to_thread(self._save_unsaved)
                for job in list(self._jobs.values()):
                    if job.status == "running" and not job.cancel.is_set():
                        if await asyncio.to_thread(self.store.get_record, CANCEL_NS, job.id) is not None:
                            logger.info("run %s cancelled by another server", job.id)
                            await self.cancel(job.id, wait=0)
                await self.sweep()
            except OrchestratorError as exc:
                logger.warning("heartbeat failed: %s", exc)
            except Exception:  # noqa: BLE001 - keep the heartbeat alive
                logger.exception("heartbeat crashed")


def _ref_json(value: Any) -> Any:
    if isinstance(value, ArtifactRef):
        return value.model_dump(mode="json")
    return value

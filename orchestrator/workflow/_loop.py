"""What runs share: event loops for blocking callers, tool threads, the cancel bridge.

A run used to make its own event loop, thread pool and a task polling the cancel
flag. These live once per process (loops once per calling thread) instead:

- :func:`run_sync` runs a coroutine from blocking code on the calling thread's own
  loop, kept between runs (so the loop's default executor and its threads are reused).
- :func:`run_inline` runs a coroutine that never waits (a run on LangGraph's sync path)
  with no loop at all.
- :func:`tool_pool` is the pool of threads for blocking tools, one per size. A run
  that leaves a call behind (a timed-out tool cannot be killed) retires the pool,
  so a stuck tool never takes a thread from later runs.
- :class:`CancelFlag` is a ``threading.Event`` that tells the loops waiting on it the
  moment it is set. A plain ``threading.Event`` still works: one shared watcher
  thread checks those (every ``CANCEL_POLL_SECONDS``), never the runs' loops.
- :class:`QuickCalls` remembers how long each blocking tool's calls take, so calls
  that are quicker than the two thread hand-offs around them run on the loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = [
    "CancelFlag", "QuickCalls", "loop_running", "quick_calls", "retire_pool", "run_in_helper", "run_in_pool",
    "run_inline", "run_sync", "tool_pool", "watch_cancel",
]

T = TypeVar("T")
CANCEL_POLL_SECONDS = 0.02


# ------------------------------------------------------------------ loops for blocking callers
class _ThreadRunner(threading.local):
    runner: asyncio.Runner | None = None


_runners = _ThreadRunner()
_nested_pool: ThreadPoolExecutor | None = None
_nested_lock = threading.Lock()


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``factory()`` to completion from blocking code and return its result.

    The calling thread keeps one loop for all its runs. Called from inside a running
    loop (a notebook, an async tool), the run goes to a helper thread with its own loop.
    Ctrl-C cancels the run (its cleanup runs) and raises ``KeyboardInterrupt``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(factory)
    return run_in_helper(factory)


def run_in_helper(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``factory()`` on one of a few long-lived helper threads, each keeping its own loop (for
    callers on threads that come and go, which would each leave a loop behind)."""
    global _nested_pool
    with _nested_lock:
        if _nested_pool is None:
            _nested_pool = ThreadPoolExecutor(32, thread_name_prefix="orch-run")
    return _nested_pool.submit(_run_here, factory).result()


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on this thread without an event loop.

    For coroutines that never wait on the loop (every await in them finishes at once): a run
    whose nodes all block the thread they run on. One that would wait raises RuntimeError.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a coroutine run inline waited on an event loop")


def loop_running() -> bool:
    """Whether this thread is running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_here(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    runner = _runners.runner
    if runner is None:
        runner = _runners.runner = asyncio.Runner()
    box: list[T] = []

    async def main() -> None:  # returns None: asyncio.Runner would repr the result restoring Ctrl-C
        box.append(await factory())

    runner.run(main())
    return box[0]


# ------------------------------------------------------------------ threads for blocking tools
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def tool_pool(size: int) -> ThreadPoolExecutor:
    """The shared pool of ``size`` threads for blocking tool calls."""
    with _pools_lock:
        pool = _pools.get(size)
        if pool is None:
            pool = _pools[size] = ThreadPoolExecutor(size, thread_name_prefix=f"orch-tools{size}")
        return pool


def run_in_pool(size: int, fn: Callable[[], T]) -> tuple[asyncio.Future[T], ThreadPoolExecutor]:
    """Run ``fn`` in the shared pool of ``size`` threads; the awaitable and the pool it went to."""
    loop = asyncio.get_running_loop()
    while True:
        pool = tool_pool(size)
        try:
            return loop.run_in_executor(pool, fn), pool
        except RuntimeError:  # retired by another run between the lookup and the submit: the next one
            if tool_pool(size) is pool:  # not retired: a real refusal (the interpreter is exiting)
                raise


def retire_pool(pool: ThreadPoolExecutor) -> None:
    """Stop handing out ``pool`` (a call it runs outlived its run); its threads end when their work does."""
    with _pools_lock:
        for size, p in list(_pools.items()):
            if p is pool:
                del _pools[size]
    pool.shutdown(wait=False)


class QuickCalls:
    """The typical wall time of each blocking tool's calls (a moving average, per process).

    Handing a call to a pool thread and its result back costs two thread wake-ups:
    tens of microseconds on an idle machine, milliseconds on a busy one. A tool whose
    calls (loading inputs and storing outputs included) have taken less than the
    ``inline_tool_seconds`` setting on average (an exponential moving average, each call
    weighing ``QUICK_WEIGHT``), over at least ``QUICK_MIN_CALLS`` calls, runs on the
    event loop instead. One call twice as slow as the limit is enough to send a tool
    that turned slow back to the pool.

    A store is timed the same way, by what a thread would spare the loop: a call's wall
    time less the CPU time of the thread that made it (:meth:`timing_waits`). A
    store call's own work (packing, parsing, JSON) holds the interpreter, so in a thread it
    keeps the loop waiting all the same, and costs the two hand-offs on top; only its waits
    (a round trip to a remote server, a slow disk) leave the loop free to do something else.
    Tools are timed by wall time alone: a model call computes outside the interpreter.
    """

    QUICK_MIN_CALLS = 3
    QUICK_WEIGHT = 0.5

    def __init__(self) -> None:
        self._times: weakref.WeakKeyDictionary[Any, tuple[int, float]] = weakref.WeakKeyDictionary()
        self._pool_only: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def is_quick(self, tool: Any, limit: float) -> bool:
        """Whether ``tool``'s calls have taken less than ``limit`` seconds (``limit`` 0: never)."""
        seen = self._times.get(tool)
        return (limit > 0 and seen is not None and seen[0] >= self.QUICK_MIN_CALLS and seen[1] < limit
                and tool not in self._pool_only)

    async def call(self, key: Any, limit: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop when ``key`` is quick (see :meth:`is_quick`), else in a thread."""
        if self.is_quick(key, limit):
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def pool_only(self, tool: Any) -> None:
        """Never run ``tool`` on the loop again (it starts an event loop of its own, say)."""
        with self._lock:
            self._pool_only.add(tool)

    def record(self, tool: Any, seconds: float) -> None:
        """Note the wall time of one call (from any thread)."""
        with self._lock:
            calls, avg = self._times.get(tool, (0, seconds))
            self._times[tool] = (calls + 1, avg + self.QUICK_WEIGHT * (seconds - avg))

    @contextlib.contextmanager
    def timing_waits(self, key: Any) -> Iterator[None]:
        """Record the block under ``key`` by what it waited for: its wall time less this thread's
        CPU time over it (a store call; see the class docstring)."""
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.record(key, max(0.0, time.perf_counter() - began - (time.thread_time() - cpu)))


quick_calls = QuickCalls()
"""The process-wide call times of blocking tools (runs share them)."""


# ------------------------------------------------------------------ cancellation
class CancelFlag(threading.Event):
    """A ``threading.Event`` for cancelling runs that wakes their loops when set (no polling).

    >>> flag = CancelFlag()
    >>> result = compiled.run(inputs, cancel=flag)   # doctest: +SKIP
    >>> flag.set()                                   # from any thread  # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []
        self._cb_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._cb_lock:
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def add_callback(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Call ``cb`` (from the setting thread) once the flag is set; returns a remover."""
        with self._cb_lock:
            if not self.is_set():
                self._callbacks.append(cb)

                def remove() -> None:
                    with self._cb_lock:
                        if cb in self._callbacks:
                            self._callbacks.remove(cb)

                return remove
        cb()
        return lambda: None


class _Watcher:
    """One daemon thread checking the plain ``threading.Event`` flags of live runs."""

    def __init__(self) -> None:
        self._watched: dict[int, tuple[threading.Event, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._keys = itertools.count()

    def add(self, flag: threading.Event, cb: Callable[[], None]) -> Callable[[], None]:
        key = next(self._keys)
        with self._lock:
            self._watched[key] = (flag, cb)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="orch-cancel-watch", daemon=True)
                self._thread.start()
        self._wake.set()

        def remove() -> None:
            with self._lock:
                self._watched.pop(key, None)

        return remove

    def _loop(self) -> None:
        while True:
            with self._lock:
                items = list(self._watched.items())
            if not items:
                self._wake.wait()
                self._wake.clear()
                continue
            for key, (flag, cb) in items:
                if flag.is_set():
                    with self._lock:
                        found = self._watched.pop(key, None)
                    if found is not None:
                        cb()
            self._wake.wait(CANCEL_POLL_SECONDS)
            self._wake.clear()


_watcher = _Watcher()


def watch_cancel(flag: threading.Event, loop: asyncio.AbstractEventLoop, on_cancel: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_cancel`` on ``loop`` once ``flag`` is set; returns a function that stops watching."""

    def fire() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(on_cancel)

    if isinstance(flag, CancelFlag):
        return flag.add_callback(fire)
    return _watcher.add(flag, fire)

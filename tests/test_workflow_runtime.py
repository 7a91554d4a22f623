"""What runs share: loops and tool threads reused, cancellation without polling, compile
of large graphs, and the LangGraph-facing node actions."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from orchestrator import LocalArtifactStore, ToolRegistry, tool
from orchestrator.settings import Settings
from orchestrator.workflow import CancelFlag, Workflow

import workflow_tools
from workflow_tools import hold_interpreter, registry

seen: dict[str, list] = {"loops": [], "threads": []}
local_registry = ToolRegistry()


class Tag(BaseModel):
    tag: str = ""


@tool("rt.where_async", task="probe", description="Record the loop it runs on.", inputs={"text": "text"},
      outputs={"text": "text"}, params=Tag, register=False)
async def where_async(text: str, *, params: Tag) -> str:
    seen["loops"].append(id(asyncio.get_running_loop()))
    return text + params.tag


@tool("rt.where_sync", task="probe", description="Record the thread it runs on.", inputs={"text": "text"},
      outputs={"text": "text"}, params=Tag, register=False)
def where_sync(text: str, *, params: Tag) -> str:
    seen["threads"].append(threading.current_thread().name)
    return text + params.tag


for _t in (where_async, where_sync):
    local_registry.register(_t)


def _one(tool_name: str) -> Workflow:
    return Workflow("one").add_input("t", "text").add_node("n", tool_name, inputs={"text": "t"}).add_output("o", "n.text")


def test_runs_from_one_thread_share_one_event_loop(local_store):
    compiled = _one("rt.where_async").compile(registry=local_registry)
    seen["loops"].clear()
    for i in range(3):
        assert compiled.run({"t": f"x{i}"}, store=local_store, cache=False).ok
    assert len(seen["loops"]) == 3 and len(set(seen["loops"])) == 1


def test_blocking_tools_of_many_runs_reuse_a_few_threads(local_store):
    compiled = _one("rt.where_sync").compile(registry=local_registry)
    seen["threads"].clear()
    for i in range(40):
        assert compiled.run({"t": f"y{i}"}, store=local_store, cache=False).ok
    # one shared pool (4 x max_workers threads) for every run; a run used to start threads of its own
    assert len(seen["threads"]) == 40 and len(set(seen["threads"])) <= 4 * compiled.settings.max_workers


def test_run_inside_a_running_loop_still_works(local_store):
    compiled = _one("rt.where_sync").compile(registry=local_registry)

    async def main() -> str:
        return compiled.run({"t": "inside"}, store=local_store, cache=False).load("o")

    assert asyncio.run(main()) == "inside"


@pytest.mark.parametrize("flag", [CancelFlag, threading.Event])
def test_cancel_stops_a_cooperative_blocking_node(store, flag):
    wf = (Workflow("c").add_input("t", "text")
          .add_node("slow", "t.slow_sync", {"seconds": 20}, inputs={"text": "t"})
          .add_node("next", "t.upper", inputs={"text": "slow.text"})
          .add_output("o", "next.text"))
    cancel = flag()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    before = workflow_tools.calls.get("t.upper", 0)
    started = time.perf_counter()
    result = wf.compile(registry=registry).run({"t": "v"}, store=store, cache=False, cancel=cancel)
    assert time.perf_counter() - started < 3
    assert result.status == "cancelled" and result.nodes["slow"].status == "cancelled"
    assert workflow_tools.calls.get("t.upper", 0) == before


def test_cancel_flag_set_before_the_run_skips_every_node(local_store):
    cancel = CancelFlag()
    cancel.set()
    result = _one("rt.where_sync").compile(registry=local_registry).run({"t": "v"}, store=local_store, cancel=cancel)
    assert result.status == "cancelled" and result.nodes["n"].status == "cancelled"


def test_a_timed_out_blocking_call_does_not_hold_back_later_runs(local_store):
    settings = Settings(max_workers=1)  # the shared pool then has 4 threads, one call of a run at a time
    stuck = Workflow("stuck").add_input("t", "text")
    for i in range(5):  # more stuck calls than the pool has threads
        stuck.add_node(f"s{i}", "t.upper", {"delay": 4, "suffix": str(i)}, inputs={"text": "t"}, timeout=0.2)
    stuck.add_output("o", "s0.text")
    result = stuck.compile(registry=registry, settings=settings).run({"t": "a"}, store=local_store, cache=False)
    assert result.status == "failed" and "timed out" in result.errors["s0"]
    quick = _one("t.upper").compile(registry=registry, settings=settings)
    started = time.perf_counter()
    assert quick.run({"t": "b"}, store=local_store, cache=False).load("o") == "B!"
    assert time.perf_counter() - started < 1.5, "a later run waited for threads of calls that had timed out"


async def test_astream_consumer_leaving_early_cancels_the_run(local_store):
    wf = (Workflow("c").add_input("t", "text")
          .add_node("slow", "t.sleep_async", {"seconds": 10}, inputs={"text": "t"})
          .add_output("o", "slow.text"))
    compiled = wf.compile(registry=registry)
    started = time.perf_counter()
    stream = compiled.astream({"t": "v"}, store=local_store, cache=False)
    async for event in stream:
        if event.type == "node_started":
            break
    await stream.aclose()
    assert time.perf_counter() - started < 3


async def test_astream_events_arrive_live_and_in_order(local_store):
    wf = (Workflow("live").add_input("t", "text")
          .add_node("a", "t.upper", {"delay": 0.3}, inputs={"text": "t"})
          .add_node("b", "t.upper", {"delay": 1.0}, inputs={"text": "a.text"})
          .add_output("o", "b.text"))
    arrivals = []
    started = time.perf_counter()
    async for event in wf.compile(registry=registry).astream({"t": "v"}, store=local_store, cache=False):
        arrivals.append((event.seq, event.type, event.node, time.perf_counter() - started))
    assert [a[0] for a in arrivals] == list(range(1, len(arrivals) + 1))
    finished_a = next(t for _, kind, node, t in arrivals if kind == "node_finished" and node == "a")
    assert arrivals[-1][1] == "run_finished"
    assert finished_a < arrivals[-1][3] - 0.6, "node a's event came only when the run ended"


def test_compile_of_a_large_graph_orders_every_node(local_store):
    n = 3000
    wf = Workflow("big").add_input("t", "text")
    for i in reversed(range(n)):  # declared against the dependency order
        wf.add_node(f"n{i}", "t.upper", {"suffix": ""}, inputs={"text": "t" if i == 0 else f"n{i - 1}.text"})
    wf.add_output("o", f"n{n - 1}.text")
    compiled = wf.compile(registry=registry, settings=Settings(max_workflow_nodes=n))
    assert compiled.plan.order == [f"n{i}" for i in range(n)]


def test_declared_order_kept_among_independent_nodes():
    wf = (Workflow("fan").add_input("t", "text")
          .add_node("z", "t.upper", inputs={"text": "t"})
          .add_node("join", "t.join", inputs={"texts": ["z.text", "a.text"]})
          .add_node("a", "t.upper", inputs={"text": "t"})
          .add_output("o", "join.text"))
    assert wf.compile(registry=registry).plan.order == ["z", "a", "join"]


def test_a_run_keeps_going_when_another_retires_the_shared_pool(local_store):
    steady = (Workflow("steady").add_input("t", "text")
              .add_node("first", "t.upper", {"delay": 0.8}, inputs={"text": "t"})
              .add_node("second", "t.upper", inputs={"text": "first.text"})
              .add_output("o", "second.text")).compile(registry=registry)
    stuck = (Workflow("stuck").add_input("t", "text")
             .add_node("s", "t.slow_sync", {"seconds": 2}, inputs={"text": "t"}, timeout=0.2)
             .add_output("o", "s.text")).compile(registry=registry)
    results = {}
    thread = threading.Thread(target=lambda: results.update(
        steady=steady.run({"t": "go"}, store=local_store, cache=False)))
    thread.start()
    time.sleep(0.2)
    assert stuck.run({"t": "x"}, store=local_store, cache=False).status == "failed"  # its pool is retired
    thread.join(10)
    assert results["steady"].ok, results["steady"].errors  # its second node went to the new pool
    assert results["steady"].load("o") == "GO!!"


# ------------------------------------------------------------------ quick blocking tools run on the loop
class Nap(BaseModel):
    seconds: float = 0.0
    tag: str = ""


def _napper() -> tuple[ToolRegistry, list[int]]:
    """A fresh blocking tool (call times are kept per tool object) recording the thread of each call."""
    idents: list[int] = []

    @tool("rt.nap", task="probe", description="Sleep, then record the thread.", inputs={"text": "text"},
          outputs={"text": "text"}, params=Nap, register=False)
    def nap(text: str, *, params: Nap) -> str:
        time.sleep(params.seconds)
        idents.append(threading.get_ident())
        return text + params.tag

    reg = ToolRegistry()
    reg.register(nap)
    return reg, idents


def _nap(reg: ToolRegistry, settings: Settings, seconds: float, timeout: float | None = None) -> object:
    wf = Workflow("nap").add_input("t", "text").add_node("n", "rt.nap", {"seconds": seconds}, inputs={"text": "t"},
                                                        timeout=timeout)
    return wf.add_output("o", "n.text").compile(registry=reg, settings=settings)


def _on_loop(compiled: object, inputs: dict[str, str], **options: object) -> object:
    """``compiled.arun`` on a loop of this thread: the path of async callers (the agent, the server)."""
    return asyncio.run(compiled.arun(inputs, **options))  # type: ignore[attr-defined]


def test_a_quick_blocking_tool_moves_onto_the_loop_and_a_slow_one_stays_in_the_pool(store):
    settings = Settings(inline_tool_seconds=0.05)
    me = threading.get_ident()  # the loop runs on this thread
    reg, idents = _napper()
    quick = _nap(reg, settings, 0.0)
    for i in range(8):  # a slow first call (a cold store) takes a few more to average out
        assert _on_loop(quick, {"t": f"q{i}"}, store=store, cache=False).load("o") == f"q{i}"
    assert all(i != me for i in idents[:3]), "a tool never seen runs in the pool first"
    assert idents[-1] == me, "a tool proven quick should run on the loop"

    reg, idents = _napper()
    slow = _nap(reg, settings, 0.12)
    for i in range(4):
        assert _on_loop(slow, {"t": f"s{i}"}, store=store, cache=False).ok
    assert me not in idents


class _LookupNoting(LocalArtifactStore):
    """The directory store, noting the thread of each node-cache lookup, which first waits ``delay``
    seconds or computes for ``busy`` seconds."""

    delay = 0.0
    busy = 0.0

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.threads: list[int] = []

    def get_record_refs_many(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # the base's signature
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        hold_interpreter(self.busy)
        return super().get_record_refs_many(*args, **kwargs)


@pytest.mark.parametrize(("slow_by", "on_loop"), [("busy", True), ("delay", False)])
def test_cache_lookups_slow_from_their_own_work_run_on_the_loop_and_waiting_ones_in_a_thread(tmp_path, slow_by, on_loop):
    store = _LookupNoting(tmp_path)
    setattr(store, slow_by, 0.1)  # three times the limit below
    reg, _ = _napper()
    compiled = _nap(reg, Settings(inline_tool_seconds=0.03), 0.0)
    for i in range(6):
        assert _on_loop(compiled, {"t": f"{slow_by}{i}"}, store=store).ok
    assert threading.get_ident() not in store.threads[:3], "a store never timed is called in a thread first"
    assert (store.threads[-1] == threading.get_ident()) is on_loop


def test_inline_tool_seconds_zero_keeps_every_blocking_call_in_the_pool(local_store):
    reg, idents = _napper()
    compiled = _nap(reg, Settings(inline_tool_seconds=0), 0.0)
    for i in range(6):
        assert _on_loop(compiled, {"t": f"z{i}"}, store=local_store, cache=False).ok
    assert threading.get_ident() not in idents


def test_a_quick_tool_that_turns_slow_goes_back_to_the_pool(local_store):
    settings = Settings(inline_tool_seconds=0.05)
    reg, idents = _napper()
    for i in range(8):  # a slow first call takes a few more to average out
        _on_loop(_nap(reg, settings, 0.0), {"t": f"a{i}"}, store=local_store, cache=False)
    assert idents[-1] == threading.get_ident()
    _on_loop(_nap(reg, settings, 0.15), {"t": "slow"}, store=local_store, cache=False)  # on the loop, once
    _on_loop(_nap(reg, settings, 0.0), {"t": "after"}, store=local_store, cache=False)
    assert idents[-1] != threading.get_ident(), "one call three times the limit should send the tool back to the pool"


def test_a_blocking_run_of_slow_tools_one_after_another_calls_them_on_the_callers_thread(local_store):
    settings = Settings(inline_tool_seconds=0.01)
    me = threading.get_ident()
    reg, idents = _napper()
    chain = (Workflow("two-naps").add_input("t", "text")
             .add_node("a", "rt.nap", {"seconds": 0.05, "tag": "1"}, inputs={"text": "t"})
             .add_node("b", "rt.nap", {"seconds": 0.05, "tag": "2"}, inputs={"text": "a.text"})
             .add_output("o", "b.text").compile(registry=reg, settings=settings))
    assert chain.run({"t": "x"}, store=local_store, cache=False).load("o") == "x12"
    assert idents == [me, me], "no loop, no thread hand-off: nothing else could run meanwhile"
    # a cancel flag that another thread may set needs the loop (the run ends at once, the tool does not)
    assert chain.run({"t": "y"}, store=local_store, cache=False, cancel=CancelFlag()).load("o") == "y12"
    assert me not in idents[2:]


_CTRL_C_SCRIPT = """
import os, signal, sys, tempfile, threading, time
from orchestrator import LocalArtifactStore, ToolRegistry, tool
from orchestrator.workflow import CancelFlag, Workflow

@tool("x.stuck", task="probe", description="Blocks, deaf to cancel.", inputs={"text": "text"},
      outputs={"text": "text"}, register=False)
def stuck(text: str) -> str:
    time.sleep(6)
    return text

reg = ToolRegistry()
reg.register(stuck)
branches, flag = int(sys.argv[1]), sys.argv[2] == "flag"
wf = Workflow("w").add_input("t", "text")
for i in range(branches):
    wf.add_node(f"b{i}", "x.stuck", inputs={"text": "t"})
compiled = wf.add_output("o", "b0.text").compile(registry=reg)
store = LocalArtifactStore(tempfile.mkdtemp())
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
began = time.perf_counter()
try:
    result = compiled.run({"t": "a"}, store=store, cache=False, **({"cancel": CancelFlag()} if flag else {}))
    print("returned", result.status)
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - began)
"""


@pytest.mark.parametrize("branches,flag", [(1, "none"), (1, "flag"), (2, "none")])
def test_ctrl_c_stops_a_blocking_run_of_a_stuck_tool_at_once(branches: int, flag: str, tmp_path) -> None:
    """Ctrl-C raises KeyboardInterrupt out of run() without waiting for a tool that ignores it,
    whether the run took the sync path (one stuck node), the loop (a cancel flag), or has stuck branches."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script), str(branches), flag], capture_output=True, text=True,
                          timeout=60, env=env)
    words = done.stdout.split()
    assert words and words[0] == "interrupted", (done.stdout, done.stderr[-2000:])
    assert float(words[1]) < 3, "Ctrl-C waited for the stuck tool"


def test_a_node_with_a_timeout_runs_in_the_pool_even_when_its_tool_is_quick(local_store):
    settings = Settings(inline_tool_seconds=0.05)
    reg, _ = _napper()
    for i in range(5):
        _nap(reg, settings, 0.0).run({"t": f"b{i}"}, store=local_store, cache=False)
    started = time.perf_counter()
    result = _nap(reg, settings, 2.0, timeout=0.2).run({"t": "late"}, store=local_store, cache=False)
    assert result.status == "failed" and "timed out" in result.errors["n"]
    assert time.perf_counter() - started < 1.5  # on the loop it would have held the run for the full 2 s


def test_a_quick_tool_that_runs_its_own_event_loop_goes_back_to_the_pool_for_good(local_store):
    idents: list[int] = []

    @tool("rt.own_loop", task="probe", description="Run a coroutine with asyncio.run.", inputs={"text": "text"},
          outputs={"text": "text"}, register=False)
    def own_loop(text: str) -> str:
        async def echo() -> str:
            return text + "!"

        idents.append(threading.get_ident())
        coro = echo()
        try:
            return asyncio.run(coro)  # refused inside a running loop
        finally:
            coro.close()  # refused: never awaited

    reg = ToolRegistry()
    reg.register(own_loop)
    compiled = _one("rt.own_loop").compile(registry=reg, settings=Settings(inline_tool_seconds=0.5))

    async def runs() -> None:  # runs on a loop (a blocking run of quick tools has none: see below)
        for i in range(6):
            result = await compiled.arun({"t": f"o{i}"}, store=local_store, cache=False)
            assert result.ok, result.errors
            assert result.load("o") == f"o{i}!"

    asyncio.run(runs())
    tried_here = idents.count(threading.get_ident())
    assert tried_here == 1, "tried on the loop once, then kept in the pool"
    assert compiled.run({"t": "blocking"}, store=local_store, cache=False).load("o") == "blocking!"


def test_a_quick_tool_in_parallel_branches_runs_beside_its_sibling(local_store):
    settings = Settings(inline_tool_seconds=0.05)
    reg, idents = _napper()
    for i in range(5):  # proven quick where it runs alone
        _nap(reg, settings, 0.0).run({"t": f"c{i}"}, store=local_store, cache=False)
    assert idents[-1] == threading.get_ident()
    wf = (Workflow("two").add_input("t", "text")
          .add_node("l", "rt.nap", {"seconds": 0.3, "tag": "<"}, inputs={"text": "t"})
          .add_node("r", "rt.nap", {"seconds": 0.3, "tag": ">"}, inputs={"text": "t"})
          .add_output("lo", "l.text").add_output("ro", "r.text"))
    started = time.perf_counter()
    assert wf.compile(registry=reg, settings=settings).run({"t": "x"}, store=local_store, cache=False).ok
    elapsed = time.perf_counter() - started
    assert elapsed < 0.55, f"two 0.3 s branches took {elapsed:.2f}s: a branch held the loop"


def test_a_blocking_run_of_quick_tools_runs_them_on_the_calling_thread_with_no_loop(local_store):
    """Once every tool of a workflow has proven quick, run() takes LangGraph's sync path (with the
    cyclic garbage collector paused while it runs, and on again after)."""
    calls: list[tuple[int, bool]] = []
    collecting: list[bool] = []

    @tool("rt.loopless", task="probe", description="Record the thread and whether a loop runs there.",
          inputs={"text": "text"}, outputs={"text": "text"}, register=False)
    def loopless(text: str) -> str:
        try:
            asyncio.get_running_loop()
            calls.append((threading.get_ident(), True))
        except RuntimeError:
            calls.append((threading.get_ident(), False))
        collecting.append(gc.isenabled())
        return text + "."

    reg = ToolRegistry()
    reg.register(loopless)
    wf = Workflow("three").add_input("t", "text")
    for i, src in enumerate(["t", "a0.text", "a1.text"]):
        wf.add_node(f"a{i}", "rt.loopless", inputs={"text": src})
    compiled = wf.add_output("o", "a2.text").compile(registry=reg, settings=Settings(inline_tool_seconds=0.05))
    for i in range(3):
        assert compiled.run({"t": f"r{i}"}, store=local_store, cache=False).load("o") == f"r{i}..."
    assert calls[-3:] == [(threading.get_ident(), False)] * 3
    assert collecting[-3:] == [False] * 3 and gc.isenabled()


def test_on_the_sync_path_parallel_branches_deliver_events_one_at_a_time_in_order(local_store):
    """Branches run on LangGraph's threads there; on_event still sees one event at a time, in seq order."""
    @tool("rt.quick", task="probe", description="Return the text.", inputs={"text": "text"},
          outputs={"text": "text"}, register=False)
    def quick(text: str) -> str:
        return text + "."

    reg = ToolRegistry()
    reg.register(quick)
    wf = Workflow("fan").add_input("t", "text")
    for i in range(8):
        wf.add_node(f"b{i}", "rt.quick", inputs={"text": "t"}).add_output(f"o{i}", f"b{i}.text")
    compiled = wf.compile(registry=reg, settings=Settings(inline_tool_seconds=0.05, max_workers=8))
    compiled.run({"t": "warm"}, store=local_store, cache=False)  # the tool proves quick
    seen: list[int] = []
    inside = threading.Semaphore(1)

    def on_event(event) -> None:
        assert inside.acquire(blocking=False), "two events delivered at once"
        try:
            time.sleep(0.002)  # long enough for another branch's event to arrive meanwhile
            seen.append(event.seq)
        finally:
            inside.release()

    assert compiled.run({"t": "x"}, store=local_store, cache=False, on_event=on_event).ok
    assert seen == sorted(seen) and len(seen) >= 18


def test_garbage_collector_pauses_nest_across_threads():
    """It comes back on when the last of overlapping pauses ends, and stays off if it was off."""
    from orchestrator.workflow._engine import _gc_paused

    first, second = _gc_paused(), _gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second pause still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cancel_reaches_a_quick_tool_that_turned_slow_on_the_sync_path(local_store):
    """A cooperative tool sees the run's cancel flag even with no loop to pass it on."""
    class Wait(BaseModel):
        seconds: float = 0.0

    @tool("rt.waits", task="probe", description="Wait until told to stop.", inputs={"text": "text"},
          outputs={"text": "text"}, params=Wait, register=False)
    def waits(text: str, *, params: Wait, ctx) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + params.seconds
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.01)
        return text + "."

    reg = ToolRegistry()
    reg.register(waits)
    settings = Settings(inline_tool_seconds=0.05)

    def chain(seconds: float) -> object:
        wf = (Workflow("w").add_input("t", "text")
              .add_node("wait", "rt.waits", {"seconds": seconds}, inputs={"text": "t"})
              .add_node("after", "rt.waits", inputs={"text": "wait.text"}))
        return wf.add_output("o", "after.text").compile(registry=reg, settings=settings)

    for i in range(3):  # proven quick
        assert chain(0.0).run({"t": f"q{i}"}, store=local_store, cache=False).ok
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    started = time.perf_counter()
    result = chain(10.0).run({"t": "slow"}, store=local_store, cache=False, cancel=cancel)
    timer.cancel()
    assert time.perf_counter() - started < 3
    assert result.status == "cancelled"
    assert result.nodes["wait"].status == "cancelled" and result.nodes["after"].status == "skipped"


def test_alone_marks_the_nodes_no_other_node_can_run_beside():
    import random

    rng = random.Random(7)
    for _ in range(200):
        wf, n = Workflow("dag").add_input("t", "text"), rng.randint(1, 9)
        for i in range(n):
            sources = [f"n{j}.text" for j in range(i) if rng.random() < 0.4] or ["t"]
            if len(sources) == 1:
                wf.add_node(f"n{i}", "t.upper", inputs={"text": sources[0]})
            else:
                wf.add_node(f"n{i}", "t.join", inputs={"texts": sources})
        plan = wf.add_output("o", f"n{n - 1}.text").compile(registry=registry).plan
        upstream: dict[str, set[str]] = {}
        for node_id in plan.order:
            upstream[node_id] = set().union(*([upstream[d] | {d} for d in plan.nodes[node_id].deps] or [set()]))
        for node_id in plan.order:
            beside = [m for m in plan.order if m != node_id and m not in upstream[node_id]
                      and node_id not in upstream[m]]
            assert plan.nodes[node_id].alone == (not beside), (node_id, beside)

"""Workflow engine benchmarks (not tests). Prints figures and ratios from one run.

1. Per-node cost against plain LangGraph: the same shape (a chain of 20, a fan-out
   of 50 plus a join, a diamond) as a plain ``StateGraph`` whose nodes do the same
   trivial text work, side by side in one run (goal: ours/plain <= 2x, both stores).
2. A cache hit per node (a rerun of the chain with the cache on; goal <= 0.3 ms).
3. The fixed cost of a one-node run.
4. Compile time of chains of 1k / 2k / 4k nodes (goal: 4,000 nodes under 0.5 s).
5. Two independent branches vs the same work in sequence, work releasing the GIL
   (goal: parallel/sequential <= 0.6).
6. An unchanged rerun vs the first run of a workflow whose nodes take real time
   (goal: >= 20x faster).

Every figure is the median of ``--rounds`` rounds taken alternately (ours, plain,
ours, plain ...), so a noisy shared machine slows both sides alike. Figures 1 and 2
also count what one more run costs the store per node (Redis round trips, or files
the directory store wrote), which machine load does not change.

Usage: .venv/bin/python bench/bench_workflow.py [--redis URL] [--rounds 9] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import operator
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from orchestrator import LocalArtifactStore, RedisArtifactStore, ToolRegistry, tool
from orchestrator.settings import Settings
from orchestrator.workflow import Workflow

registry = ToolRegistry()


@tool("b.pass", task="bench", description="Return the text.", inputs={"text": "text"}, outputs={"text": "text"},
      register=False)
def passthrough(text: str) -> str:
    return text + "."


@tool("b.join", task="bench", description="Join texts.", inputs={"texts": {"modality": "text", "many": True}},
      outputs={"text": "text"}, register=False)
def join(texts: list[str]) -> str:
    return "+".join(texts)


class Work(BaseModel):
    mb: int = 64
    rounds: int = 4
    tag: str = ""


_BUF = os.urandom(64 << 20)


@tool("b.hash", task="bench", description="Hash a big buffer (hashlib releases the GIL).", inputs={"text": "text"},
      outputs={"text": "text"}, params=Work, register=False)
def hash_work(text: str, *, params: Work) -> str:
    h = ""
    for _ in range(params.rounds):
        h = hashlib.sha256(memoryview(_BUF)[: params.mb << 20]).hexdigest()
    return text + h[:8] + params.tag


class Sleep(BaseModel):
    seconds: float = 0.1
    tag: str = ""


@tool("b.sleep", task="bench", description="Take real time.", inputs={"text": "text"}, outputs={"text": "text"},
      params=Sleep, register=False)
def slow(text: str, *, params: Sleep) -> str:
    time.sleep(params.seconds)
    return text + params.tag


for t in (passthrough, join, hash_work, slow):
    registry.register(t)


# ------------------------------------------------------------------ shapes, ours and plain LangGraph
class PlainState(TypedDict, total=False):
    text: str
    out: Annotated[dict[str, str], lambda a, b: {**(a or {}), **(b or {})}]
    parts: Annotated[list[str], operator.add]


def _plain_node(src: str | None, name: str) -> Callable[[PlainState], dict]:
    def fn(state: PlainState) -> dict:
        text = state["text"] if src is None else state["out"][src]
        return {"out": {name: text + "."}}

    return fn


def chain(n: int) -> tuple[Workflow, object]:
    wf = Workflow("chain").add_input("text", "text")
    g = StateGraph(PlainState)
    prev, plain_prev = "text", None
    for i in range(n):
        wf.add_node(f"n{i}", "b.pass", inputs={"text": prev})
        g.add_node(f"n{i}", _plain_node(plain_prev, f"n{i}"))
        g.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
        prev, plain_prev = f"n{i}.text", f"n{i}"
    g.add_edge(f"n{n - 1}", END)
    return wf.add_output("out", prev), g.compile()


def fanout(n: int) -> tuple[Workflow, object]:
    wf = Workflow("fanout").add_input("text", "text")
    g = StateGraph(PlainState)
    for i in range(n):
        wf.add_node(f"b{i}", "b.pass", inputs={"text": "text"})
        g.add_node(f"b{i}", _plain_node(None, f"b{i}"))
        g.add_edge(START, f"b{i}")
    wf.add_node("join", "b.join", inputs={"texts": [f"b{i}.text" for i in range(n)]})

    def plain_join(state: PlainState) -> dict:
        return {"out": {"join": "+".join(state["out"][f"b{i}"] for i in range(n))}}

    g.add_node("join", plain_join)
    g.add_edge([f"b{i}" for i in range(n)], "join")
    g.add_edge("join", END)
    return wf.add_output("out", "join.text"), g.compile()


def diamond() -> tuple[Workflow, object]:
    wf = (Workflow("diamond").add_input("text", "text")
          .add_node("a", "b.pass", inputs={"text": "text"})
          .add_node("b", "b.pass", inputs={"text": "a.text"})
          .add_node("c", "b.pass", inputs={"text": "a.text"})
          .add_node("d", "b.join", inputs={"texts": ["b.text", "c.text"]})
          .add_output("out", "d.text"))
    g = StateGraph(PlainState)
    g.add_node("a", _plain_node(None, "a"))
    g.add_node("b", _plain_node("a", "b"))
    g.add_node("c", _plain_node("a", "c"))
    g.add_node("d", lambda s: {"out": {"d": s["out"]["b"] + "+" + s["out"]["c"]}})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge(["b", "c"], "d")
    g.add_edge("d", END)
    return wf, g.compile()


class StoreTrips:
    """Counts what one run costs the store, figures machine load does not change: Redis round trips
    (each command, each pipeline sent) and the commands the server ran (a script and each call it
    makes count one; from ``INFO commandstats``, so another client of the same server adds to it),
    or files the directory store created or rewrote."""

    def __init__(self, store) -> None:
        self.store, self.trips = store, 0
        if isinstance(store, RedisArtifactStore):
            command, pipeline = store.r.execute_command, store.r.pipeline

            def counted_command(*args, **kwargs):
                self.trips += 1
                return command(*args, **kwargs)

            def counted_pipeline(*args, **kwargs):
                pipe = pipeline(*args, **kwargs)
                execute = pipe.execute

                def counted_execute(*a, **k):
                    self.trips += 1
                    return execute(*a, **k)

                pipe.execute = counted_execute
                return pipe

            store.r.execute_command, store.r.pipeline = counted_command, counted_pipeline

    def _commands(self) -> int:
        stats = self.store.r.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")

    def _files(self) -> dict[str, tuple[int, int]]:
        out = {}
        for folder, _, names in os.walk(self.store.root):
            for name in names:
                st = os.stat(os.path.join(folder, name))
                out[os.path.join(folder, name)] = (st.st_ino, st.st_mtime_ns)
        return out

    def per_node(self, run: Callable[[], Any], nodes: int) -> str:
        if isinstance(self.store, RedisArtifactStore):
            commands = self._commands()
            self.trips = 0
            run()
            trips = self.trips
            commands = self._commands() - commands
            return f"{trips / nodes:.2f} Redis round trips/node, {commands / nodes:.2f} commands/node"
        before = self._files()
        run()
        after = self._files()
        written = sum(1 for path, stamp in after.items() if before.get(path) != stamp)
        return f"{written / nodes:.2f} files written/node"


def bench_shapes(store, label: str, rounds: int) -> dict[str, float]:
    ratios = {}
    for name, (wf, plain), n_nodes, reps in (
        ("chain of 20", chain(20), 20, 10),
        ("fan-out 50 + join", fanout(50), 51, 4),
        ("diamond", diamond(), 4, 50),
    ):
        compiled = wf.compile(registry=registry)
        compiled.run({"text": "warm"}, store=store, cache=False)
        plain.invoke({"text": "warm"})
        ours_t, plain_t = [], []
        for r in range(rounds):
            t0 = time.perf_counter()
            for i in range(reps):
                res = compiled.run({"text": f"{label}{r}.{i}"}, store=store, cache=False)
            ours_t.append((time.perf_counter() - t0) / reps / n_nodes)
            assert res.ok, res.errors
            t0 = time.perf_counter()
            for i in range(reps):
                plain.invoke({"text": f"{label}{r}.{i}"})
            plain_t.append((time.perf_counter() - t0) / reps / n_nodes)
        ours, ref = statistics.median(ours_t) * 1e3, statistics.median(plain_t) * 1e3
        ratios[name] = ours / ref
        cost = StoreTrips(store).per_node(lambda: compiled.run({"text": uuid.uuid4().hex}, store=store, cache=False),
                                          n_nodes)
        print(f"  [{label}] {name:18s}: ours {ours:.3f} ms/node, plain LangGraph {ref:.3f} ms/node "
              f"-> {ours / ref:.2f}x (goal <= 2); {cost}")
    return ratios


def bench_cache_hit(store, label: str, rounds: int) -> float:
    wf, _ = chain(20)
    compiled = wf.compile(registry=registry)
    text = f"hit-{uuid.uuid4().hex}"
    compiled.run({"text": text}, store=store)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = compiled.run({"text": text}, store=store)
        times.append((time.perf_counter() - t0) / 20)
        assert all(n.cached for n in r.nodes.values())
    per = statistics.median(times) * 1e3
    cost = StoreTrips(store).per_node(lambda: compiled.run({"text": text}, store=store), 20)
    print(f"  [{label}] cache hit: {per:.3f} ms/node (goal <= 0.3); {cost}")
    return per


def bench_fixed(store, label: str, rounds: int) -> float:
    wf, _ = chain(1)
    compiled = wf.compile(registry=registry)
    compiled.run({"text": "warm"}, store=store, cache=False)
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for i in range(20):
            compiled.run({"text": f"fixed{r}.{i}"}, store=store, cache=False)
        times.append((time.perf_counter() - t0) / 20)
    ms = statistics.median(times) * 1e3
    print(f"  [{label}] one-node run: {ms:.2f} ms")
    return ms


def bench_compile() -> None:
    for n in (1000, 2000, 4000):
        wf, _ = chain(n)
        t0 = time.perf_counter()
        wf.compile(registry=registry, settings=Settings(max_workflow_nodes=n))
        print(f"  compile, chain of {n}: {time.perf_counter() - t0:.3f} s" + (" (goal < 0.5)" if n == 4000 else ""))


def bench_parallel(store, tool: str = "b.hash", params: dict | None = None, label: str = "CPU work, hashlib") -> float:
    def wf(parallel: bool) -> Workflow:
        p = dict(params or {})
        w = Workflow("par").add_input("text", "text").add_node("a", tool, {**p, "tag": "a"}, inputs={"text": "text"})
        w.add_node("b", tool, {**p, "tag": "b"}, inputs={"text": "text" if parallel else "a.text"})
        return w.add_output("a", "a.text").add_output("b", "b.text")

    par, seq = wf(True).compile(registry=registry), wf(False).compile(registry=registry)
    par.run({"text": "w"}, store=store, cache=False)
    tp, ts = [], []
    for i in range(3):
        t0 = time.perf_counter()
        par.run({"text": f"p{i}"}, store=store, cache=False)
        tp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seq.run({"text": f"s{i}"}, store=store, cache=False)
        ts.append(time.perf_counter() - t0)
    ratio = statistics.median(tp) / statistics.median(ts)
    print(f"  two branches ({label}): parallel {statistics.median(tp):.3f}s vs sequential {statistics.median(ts):.3f}s "
          f"-> ratio {ratio:.2f} (goal <= 0.6)")
    return ratio


def bench_rerun(store) -> float:
    w = Workflow("slow").add_input("text", "text")
    prev = "text"
    for i in range(5):
        w.add_node(f"s{i}", "b.sleep", {"seconds": 0.1, "tag": str(i)}, inputs={"text": prev})
        prev = f"s{i}.text"
    compiled = w.add_output("out", prev).compile(registry=registry)
    text = f"rerun-{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    first = compiled.run({"text": text}, store=store)
    t_first = time.perf_counter() - t0
    reruns = []
    for _ in range(5):
        t0 = time.perf_counter()
        again = compiled.run({"text": text}, store=store)
        reruns.append(time.perf_counter() - t0)
        assert all(n.cached for n in again.nodes.values()) and again.outputs == first.outputs
    speedup = t_first / statistics.median(reruns)
    print(f"  unchanged rerun: first {t_first * 1000:.0f} ms, rerun {statistics.median(reruns) * 1000:.1f} ms "
          f"-> {speedup:.0f}x faster (goal >= 20x)")
    return speedup


def bench_stores(tmp: str, redis_url: str) -> list[tuple[str, Any]]:
    """The stores a bench compares: a directory store in ``tmp``, and Redis under a fresh prefix when it answers."""
    stores: list[tuple[str, Any]] = [("local", LocalArtifactStore(tmp))]
    try:
        r = RedisArtifactStore(redis_url, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
        r.ping()
        stores.append(("redis", r))
    except Exception as exc:  # noqa: BLE001 - the bench still runs on the local store
        print(f"(redis at {redis_url} unavailable: {exc}; local store only)")
    return stores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis", default=os.environ.get("ORCHESTRATOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="only the LangGraph comparison, cache hit and compile")
    args = ap.parse_args()
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, store in bench_stores(tmp, args.redis):
            print(f"store: {label}")
            bench_shapes(store, label, args.rounds)
            bench_cache_hit(store, label, args.rounds)
            bench_fixed(store, label, args.rounds)
            if not args.quick:
                bench_parallel(store)
                bench_parallel(store, "b.sleep", {"seconds": 0.15}, "waiting, e.g. a remote GPU call")
                bench_rerun(store)
            if isinstance(store, RedisArtifactStore):
                store.clear_prefix()
    print("compile:")
    bench_compile()


if __name__ == "__main__":
    main()

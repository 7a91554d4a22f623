"""Workflow engine benchmarks (not tests). Prints figures and ratios from one run.

1. Per-node engine overhead on a 20-node chain of trivial tools (goal: < 2 ms/node).
2. Two independent branches vs the same work in sequence, work releasing the GIL
   (goal: parallel/sequential <= 0.6): CPU work (hashlib, needs a free second core)
   and waiting work (sleep, standing for I/O or a call to a model server).
3. An unchanged rerun vs the first run of a workflow whose nodes take real time
   (goal: >= 20x faster).

Usage: .venv/bin/python bench/bench_workflow.py [--redis URL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import uuid

from pydantic import BaseModel

from orchestrator import LocalArtifactStore, RedisArtifactStore, ToolRegistry, tool
from orchestrator.workflow import Workflow

registry = ToolRegistry()


@tool("b.pass", task="bench", description="Return the text.", inputs={"text": "text"}, outputs={"text": "text"},
      register=False)
def passthrough(text: str) -> str:
    return text


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


for t in (passthrough, hash_work, slow):
    registry.register(t)


def chain(n: int) -> Workflow:
    wf = Workflow("chain").add_input("text", "text")
    prev = "text"
    for i in range(n):
        wf.add_node(f"n{i}", "b.pass", inputs={"text": prev})
        prev = f"n{i}.text"
    return wf.add_output("out", prev)


def bench_overhead(store, label: str) -> float:
    compiled = chain(20).compile(registry=registry)
    compiled.run({"text": "warm"}, store=store, cache=False)
    times = []
    for i in range(15):
        t0 = time.perf_counter()
        r = compiled.run({"text": f"x{i}"}, store=store, cache=False)
        times.append(time.perf_counter() - t0)
        assert r.ok
    per_node = statistics.median(times) / 20 * 1000
    print(f"  [{label}] 20-node chain: median run {statistics.median(times) * 1000:.1f} ms -> {per_node:.2f} ms/node (goal < 2)")
    return per_node


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis", default=os.environ.get("ORCHESTRATOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("local", LocalArtifactStore(tmp))]
        try:
            r = RedisArtifactStore(args.redis, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
            r.ping()
            stores.append(("redis", r))
        except Exception as exc:  # noqa: BLE001 - the bench still runs on the local store
            print(f"(redis at {args.redis} unavailable: {exc}; local store only)")
        for label, store in stores:
            print(f"store: {label}")
            bench_overhead(store, label)
            bench_parallel(store)
            bench_parallel(store, "b.sleep", {"seconds": 0.15}, "waiting, e.g. a remote GPU call")
            bench_rerun(store)
            if isinstance(store, RedisArtifactStore):
                store.clear_prefix()


if __name__ == "__main__":
    main()

"""Following runs another server process executes: Redis commands per run and end-to-end time (not a test).

Starts two ``orchestrator serve`` processes on one Redis key prefix. Each run is posted to
the first and its event stream (SSE) read from the second, which does not execute it, so
the second follows the run's log in Redis. Prints the median time from posting a run to
its end seen by the follower (a poller adds up to one poll interval) and, from a MONITOR
connection, the commands both servers send per run by kind (XRANGE: a read of the log;
XREAD: a blocking one; GET: a record read).

    .venv/bin/python bench/bench_follow_elsewhere.py [--runs 20] [--nodes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import Server, _follow, _redis_url, count_redis_commands  # noqa: E402


def workflow(nodes: int) -> dict[str, object]:
    """A chain of ``nodes`` light text nodes (a few events each)."""
    chain = [{"id": f"n{k}", "tool": "text.template", "params": {"template": "<{text}>"},
              "inputs": {"texts": "text" if k == 0 else f"n{k - 1}.text"}} for k in range(nodes)]
    return {"name": "follow-elsewhere", "inputs": [{"name": "text", "modality": "text"}], "nodes": chain,
            "outputs": [{"name": "out", "source": f"n{nodes - 1}.text"}]}


async def run_all(owner: str, follower: str, runs: int, nodes: int) -> list[float]:
    times = []
    async with httpx.AsyncClient(base_url=owner, timeout=60) as a, httpx.AsyncClient(base_url=follower, timeout=60) as b:
        for i in range(runs):
            started = time.perf_counter()
            r = await a.post("/v1/runs", json={"workflow": workflow(nodes), "inputs": {"text": f"request {i}"}})
            r.raise_for_status()
            status = await _follow(b, r.json()["id"])
            if status != "succeeded":
                raise RuntimeError(f"run {i}: {status}")
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=10)
    args = ap.parse_args()
    redis_url = _redis_url()
    if not redis_url:
        sys.exit("needs Redis (ORCHESTRATOR_REDIS_URL or 127.0.0.1:6379)")
    a = Server(redis_url, 4, 64)
    b = Server(redis_url, 4, 64, prefix=a.prefix)
    try:
        asyncio.run(run_all(a.url, b.url, 2, 2))  # warm up
        with count_redis_commands(redis_url, a.prefix) as all_counts:
            times = asyncio.run(run_all(a.url, b.url, args.runs, args.nodes))
    finally:
        b.close()
        a.close()
    counts = collections.Counter({k: v for k, v in all_counts.items() if not k.startswith("lua:")})
    per_run = {k: round(v / args.runs, 1) for k, v in counts.most_common()}
    print(f"{args.runs} runs of {args.nodes} light nodes posted to one server, followed on another:")
    print(f"  post -> end seen by the follower: median {statistics.median(times):.3f} s")
    print(f"  Redis commands per run (both servers): {sum(counts.values()) / args.runs:.1f}; {per_run}")


if __name__ == "__main__":
    main()

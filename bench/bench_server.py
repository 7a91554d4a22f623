"""Server throughput: 200 concurrent light runs through REST and through the OpenAI endpoint.

Starts ``orchestrator serve`` (Redis-backed when Redis answers, and the embedded
directory store) on a free loopback port, or uses ``--url``, then for each workload
fires N requests at once and measures, per request, the time from sending it to
its end:

* ``rest/workflow``: ``POST /v1/runs`` with a one-node text workflow, then its event
  stream (SSE) until the ``end`` event;
* ``rest/prompt``: the same with a text-only prompt planned by the heuristic agent;
* ``openai``: ``POST /v1/chat/completions`` (non-streaming), heuristic agent;
* ``openai/stream``: the same, streaming, until ``[DONE]``.

Prints throughput, p50/p99 latency and errors for each, and the ratios between them.

    .venv/bin/python bench/bench_server.py [--n 200] [--url http://127.0.0.1:8000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TEXT = "Summarize this text: 'The server queues runs. Workers execute them. Events stream to clients.'"
WORKFLOW = {
    "name": "bench",
    "inputs": [{"name": "text", "modality": "text"}],
    "nodes": [{"id": "wrap", "tool": "text.template", "params": {"template": "[{text}]"}, "inputs": {"texts": "text"}}],
    "outputs": [{"name": "text", "source": "wrap.text"}],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_url() -> str | None:
    url = os.environ.get("ORCHESTRATOR_REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url
    except Exception:  # noqa: BLE001
        return None


@contextlib.contextmanager
def count_redis_commands(redis_url: str, prefix: str) -> Iterator[collections.Counter[str]]:
    """Count the Redis commands that touch ``prefix`` while the block runs (MONITOR), by command
    name; commands a Lua script ran count as ``lua:NAME``."""
    import redis

    counts: collections.Counter[str] = collections.Counter()
    ready, marker = threading.Event(), f"{prefix}STOP"

    def monitor() -> None:
        with redis.Redis.from_url(redis_url).monitor() as m:
            ready.set()
            for cmd in m.listen():
                text = cmd["command"]
                if marker in text:
                    return
                if prefix in text:
                    lua = cmd.get("client_type") == "lua"
                    counts[("lua:" if lua else "") + text.split()[0].upper()] += 1

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.2)
    try:
        yield counts
    finally:
        time.sleep(1.0)  # the servers finish their bookkeeping
        redis.Redis.from_url(redis_url).get(marker)
        thread.join(5)


class Server:
    """``python -m orchestrator serve`` in a subprocess."""

    def __init__(self, redis_url: str | None, concurrency: int, queue: int, *, prefix: str | None = None,
                 workers: int = 1) -> None:
        self.port = _free_port()
        self.data_dir = tempfile.mkdtemp(prefix="orch-bench-")
        self.prefix = prefix or f"bench:{uuid.uuid4().hex[:8]}:"
        self.redis_url = redis_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
        env.update({"ORCHESTRATOR_DATA_DIR": self.data_dir, "ORCHESTRATOR_KEY_PREFIX": self.prefix,
                    "ORCHESTRATOR_MAX_CONCURRENT_RUNS": str(concurrency), "ORCHESTRATOR_MAX_QUEUED_RUNS": str(queue)})
        if redis_url:
            env["ORCHESTRATOR_REDIS_URL"] = redis_url
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", "--port", str(self.port),
                                      "--log-level", "warning", "--workers", str(workers)], cwd=ROOT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError("server did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.redis_url:
            import redis

            r = redis.Redis.from_url(self.redis_url)
            keys = list(r.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i:i + 500])


# ---------------------------------------------------------------------- one request of each kind
async def _follow(client: httpx.AsyncClient, run_id: str) -> str:
    status = "?"
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as r:
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[7:]
            elif line.startswith("data:") and event == "end":
                status = json.loads(line[5:])["status"]
    return status


async def rest_workflow(client: httpx.AsyncClient, i: int) -> bool:
    r = await client.post("/v1/runs", json={"workflow": WORKFLOW, "inputs": {"text": f"request {i}"}})
    return r.status_code == 202 and await _follow(client, r.json()["id"]) == "succeeded"


async def rest_prompt(client: httpx.AsyncClient, i: int) -> bool:
    r = await client.post("/v1/runs", json={"prompt": f"{TEXT} (#{i})"})
    return r.status_code == 202 and await _follow(client, r.json()["id"]) == "succeeded"


async def openai_plain(client: httpx.AsyncClient, i: int) -> bool:
    r = await client.post("/v1/chat/completions", json={
        "model": "orchestrator", "messages": [{"role": "user", "content": f"{TEXT} (#{i})"}]})
    return r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])


async def openai_stream(client: httpx.AsyncClient, i: int) -> bool:
    done = False
    pieces = 0
    async with client.stream("POST", "/v1/chat/completions", json={
            "model": "orchestrator", "stream": True, "messages": [{"role": "user", "content": f"{TEXT} (#{i})"}]}) as r:
        if r.status_code != 200:
            return False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                pieces += 1
    return done and pieces > 1


# ---------------------------------------------------------------------- measuring
async def measure(url: str, n: int, fn: Callable[[httpx.AsyncClient, int], Awaitable[bool]],
                  clients: int = 20) -> dict[str, float]:
    """Fire ``n`` requests at once, spread over ``clients`` HTTP clients (httpx's connection pool
    scans all its connections per request: one pool of n connections would be the bottleneck)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as warm:
        await fn(warm, -1)  # warm-up (imports, caches)
    pool = [httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=None))
            for _ in range(clients)]
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            ok = await fn(pool[i % clients], i)
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - t0)
        errors += 0 if ok else 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - started
    finally:
        for client in pool:
            await client.aclose()
    latencies.sort()
    return {
        "n": n, "errors": errors, "wall": wall, "throughput": n / wall,
        "p50": statistics.median(latencies), "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


WORKLOADS = {"rest/workflow": rest_workflow, "rest/prompt": rest_prompt, "openai": openai_plain,
             "openai/stream": openai_stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="concurrent requests per workload")
    parser.add_argument("--url", help="a running server (default: start one per store)")
    parser.add_argument("--concurrency", type=int, default=4, help="server workers (max_concurrent_runs)")
    args = parser.parse_args()

    targets: list[tuple[str, str, Server | None]] = []
    if args.url:
        targets.append(("given", args.url, None))
    else:
        redis_url = _redis_url()
        if redis_url:
            srv = Server(redis_url, args.concurrency, args.n + 16)
            targets.append(("redis", srv.url, srv))
        srv = Server(None, args.concurrency, args.n + 16)
        targets.append(("embedded", srv.url, srv))
    rows: list[tuple[str, str, dict[str, float]]] = []
    try:
        for store, url, _ in targets:
            for name, fn in WORKLOADS.items():
                result = asyncio.run(measure(url, args.n, fn))
                rows.append((store, name, result))
                print(f"{store:9s} {name:14s} n={result['n']:4.0f} errors={result['errors']:3.0f} "
                      f"throughput={result['throughput']:7.1f}/s p50={result['p50'] * 1000:7.1f} ms "
                      f"p99={result['p99'] * 1000:7.1f} ms wall={result['wall']:.2f}s", flush=True)
    finally:
        for _, _, srv in targets:
            if srv is not None:
                srv.close()
    print()
    by = {(s, n): r for s, n, r in rows}
    for store in dict.fromkeys(s for s, _, _ in rows):
        base = by[(store, "rest/workflow")]
        for name in WORKLOADS:
            r = by[(store, name)]
            print(f"{store:9s} {name:14s} throughput x{r['throughput'] / base['throughput']:.2f} vs rest/workflow, "
                  f"p50 x{r['p50'] / base['p50']:.2f}")
    if ("redis", "rest/workflow") in by and ("embedded", "rest/workflow") in by:
        for name in WORKLOADS:
            ratio = by[("redis", name)]["throughput"] / by[("embedded", name)]["throughput"]
            print(f"redis/embedded throughput ratio, {name}: {ratio:.2f}")
    total_errors = sum(r["errors"] for _, _, r in rows)
    print(f"\ntotal errors: {total_errors:.0f}")
    sys.exit(1 if total_errors else 0)


if __name__ == "__main__":
    main()

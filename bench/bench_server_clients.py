"""Light REST runs per second at 1 / 4 / 16 clients, and Redis commands per run (not a test).

Starts ``orchestrator serve`` (Redis-backed when Redis answers, as ``bench_server.py``
does) once per ``--workers`` count (server processes), then for each client count runs
a closed loop for ``--seconds``: every client posts a one-node text workflow
(``POST /v1/runs``), follows its event stream (SSE) to the end, and posts the next.
The servers take turns, ``--rounds`` times, so each sees the same machine load. Prints
runs/s per client count, the ratio 4/1 (goal: >= 300 runs/s on 2 cores, and rising
from 1 to 4 clients), the server's CPU time per run, and with several worker counts
the ratio of each to the first. With Redis, a MONITOR connection counts the commands
the server sends per run (by its key prefix), split into those a client sent and those
Lua scripts ran.

    .venv/bin/python bench/bench_server_clients.py [--seconds 10] [--clients 1 4 16] [--workers 1 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import Server, _redis_url, count_redis_commands, rest_workflow  # noqa: E402


async def closed_loop(url: str, clients: int, seconds: float) -> tuple[int, int]:
    done = failed = 0
    deadline = time.monotonic() + seconds

    async def client_loop(k: int) -> None:
        nonlocal done, failed
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            i = 0
            while time.monotonic() < deadline:
                ok = await rest_workflow(client, k * 1_000_000 + i)
                done += ok
                failed += not ok
                i += 1

    await asyncio.gather(*(client_loop(k) for k in range(clients)))
    return done, failed


def count_commands(redis_url: str, prefix: str, url: str, runs: int) -> tuple[float, float, dict[str, float]]:
    with count_redis_commands(redis_url, prefix) as counts:
        asyncio.run(closed_loop_n(url, runs))
    sent = sum(v for k, v in counts.items() if not k.startswith("lua:"))
    in_lua = sum(v for k, v in counts.items() if k.startswith("lua:"))
    return sent / runs, in_lua / runs, {k: round(v / runs, 1) for k, v in counts.most_common() if not k.startswith("lua:")}


async def closed_loop_n(url: str, runs: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for i in range(runs):
            await rest_workflow(client, i)


def server_cpu_seconds(srv: Server) -> float:
    """CPU seconds the server's processes (the parent and its workers) used so far."""
    import psutil

    proc = psutil.Process(srv.proc.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="server processes (one server per count)")
    ap.add_argument("--rounds", type=int, default=1, help="measure every (workers, clients) pair this many times")
    ap.add_argument("--concurrency", type=int, default=4, help="runs at once per process (max_concurrent_runs)")
    ap.add_argument("--local", action="store_true", help="the embedded directory store, even if Redis answers")
    args = ap.parse_args()
    import os

    redis_url = None if args.local else _redis_url()
    servers = {w: Server(redis_url, args.concurrency, 4096, workers=w) for w in dict.fromkeys(args.workers)}
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; store: "
          f"{'redis' if redis_url else 'directory'}; {args.seconds:.0f} s per measure, {args.rounds} round(s))")
    try:
        for srv in servers.values():
            asyncio.run(closed_loop(srv.url, 4, 2.0))  # warm up every worker
        done: dict[tuple[int, int], int] = {}
        cpu: dict[tuple[int, int], float] = {}
        for _ in range(args.rounds):
            for clients in args.clients:
                for workers, srv in servers.items():
                    before = server_cpu_seconds(srv)
                    ok, failed = asyncio.run(closed_loop(srv.url, clients, args.seconds))
                    cpu[(workers, clients)] = cpu.get((workers, clients), 0.0) + server_cpu_seconds(srv) - before
                    done[(workers, clients)] = done.get((workers, clients), 0) + ok
                    if failed:
                        print(f"  workers={workers} clients={clients}: {failed} failed")
        rates = {key: n / (args.seconds * args.rounds) for key, n in done.items()}
        for workers in servers:
            for clients in args.clients:
                key = (workers, clients)
                print(f"  workers={workers} {clients:3d} clients: {rates[key]:7.1f} runs/s, "
                      f"server CPU {1000 * cpu[key] / max(1, done[key]):5.2f} ms/run")
            if 1 in args.clients and 4 in args.clients:
                print(f"  workers={workers} 4 clients / 1 client: {rates[(workers, 4)] / rates[(workers, 1)]:.2f}x "
                      "(goal: > 1, and >= 300 runs/s)")
        first = next(iter(servers))
        for workers in list(servers)[1:]:
            for clients in args.clients:
                print(f"  {clients:3d} clients: workers={workers} / workers={first}: "
                      f"{rates[(workers, clients)] / rates[(first, clients)]:.2f}x runs/s")
        if redis_url:
            for workers, srv in servers.items():
                sent, in_lua, top = count_commands(redis_url, srv.prefix, srv.url, 50)
                print(f"  workers={workers}: Redis commands per run: {sent:.1f} sent by the server, "
                      f"{in_lua:.1f} more run inside scripts; {top}")
    finally:
        for srv in servers.values():
            srv.close()


if __name__ == "__main__":
    main()

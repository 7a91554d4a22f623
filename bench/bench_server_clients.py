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
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import WORKFLOW, Server, _redis_url, count_redis_commands, rest_workflow  # noqa: E402


class RawClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams: what a lean client of the API does."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def _request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str]]:
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    async def _body(self, headers: dict[str, str]) -> bytes:
        assert self.reader is not None
        if headers.get("transfer-encoding") != "chunked":
            return await self.reader.readexactly(int(headers.get("content-length", "0")))
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readuntil(b"\r\n")  # the end of the chunked body (no trailers)
        return b"".join(parts)

    async def workflow(self, i: int) -> bool:
        """Post a one-node run, follow its events to the end; True if it succeeded."""
        body = json.dumps({"workflow": WORKFLOW, "inputs": {"text": f"request {i}"}}).encode()
        status, headers = await self._request("POST", "/v1/runs", body)
        created = json.loads(await self._body(headers))
        if status != 202:
            return False
        status, headers = await self._request("GET", f"/v1/runs/{created['id']}/events")
        text = (await self._body(headers)).decode()
        end = text.rpartition("event: end\ndata: ")[2].partition("\n")[0]
        return status == 200 and bool(end) and json.loads(end)["status"] == "succeeded"


def client_factory(kind: str, url: str) -> Callable[[], Any]:
    """An async context manager giving ``run(i) -> ok`` for one client connection."""
    if kind == "raw":
        return lambda: _Raw(url)
    return lambda: _Httpx(url)


class _Raw:
    def __init__(self, url: str) -> None:
        self.client = RawClient(url)

    async def __aenter__(self) -> Callable[[int], Awaitable[bool]]:
        await self.client.__aenter__()
        return self.client.workflow

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__()


class _Httpx:
    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=60)

    async def __aenter__(self) -> Callable[[int], Awaitable[bool]]:
        await self.client.__aenter__()
        return lambda i: rest_workflow(self.client, i)

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__()


async def closed_loop(url: str, clients: int, seconds: float, kind: str = "raw") -> tuple[int, int]:
    done = failed = 0
    deadline = time.monotonic() + seconds
    make = client_factory(kind, url)

    async def client_loop(k: int) -> None:
        nonlocal done, failed
        async with make() as run:
            i = 0
            while time.monotonic() < deadline:
                ok = await run(k * 1_000_000 + i)
                done += ok
                failed += not ok
                i += 1

    await asyncio.gather(*(client_loop(k) for k in range(clients)))
    return done, failed


def wait_idle(srv: Server, *, below: float = 0.05, timeout: float = 90.0) -> None:
    """Wait until the server's processes use under ``below`` of a core (its warm-up is over)."""
    deadline = time.monotonic() + timeout
    last = server_cpu_seconds(srv)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server_cpu_seconds(srv)
        if now - last < below * 0.5:
            return
        last = now


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


def server_write_calls(srv: Server) -> int | None:
    """Write system calls the server's processes made so far (Linux ``/proc/PID/io``: socket writes, and the
    wake-ups of the event loop by threads handing results back); None where that is not available."""
    import psutil

    proc = psutil.Process(srv.proc.pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with open(f"/proc/{p.pid}/io") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("syscw"))
        except (OSError, StopIteration):
            return None
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="server processes (one server per count)")
    ap.add_argument("--rounds", type=int, default=1, help="measure every (workers, clients) pair this many times")
    ap.add_argument("--concurrency", type=int, default=4, help="runs at once per process (max_concurrent_runs)")
    ap.add_argument("--local", action="store_true", help="the embedded directory store, even if Redis answers")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="raw: keep-alive HTTP/1.1 on asyncio streams; httpx: httpx.AsyncClient")
    args = ap.parse_args()
    import os

    redis_url = None if args.local else _redis_url()
    servers = {w: Server(redis_url, args.concurrency, 4096, workers=w) for w in dict.fromkeys(args.workers)}
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; store: "
          f"{'redis' if redis_url else 'directory'}; {args.seconds:.0f} s per measure, {args.rounds} round(s))")
    try:
        for srv in servers.values():
            asyncio.run(closed_loop(srv.url, 4, 2.0, args.client))  # warm up every worker
        for srv in servers.values():
            wait_idle(srv)
        done: dict[tuple[int, int], int] = {}
        cpu: dict[tuple[int, int], float] = {}
        client_cpu: dict[tuple[int, int], float] = {}
        for _ in range(args.rounds):
            for clients in args.clients:
                for workers, srv in servers.items():
                    before, mine = server_cpu_seconds(srv), time.process_time()
                    ok, failed = asyncio.run(closed_loop(srv.url, clients, args.seconds, args.client))
                    cpu[(workers, clients)] = cpu.get((workers, clients), 0.0) + server_cpu_seconds(srv) - before
                    mine = time.process_time() - mine
                    client_cpu[(workers, clients)] = client_cpu.get((workers, clients), 0.0) + mine
                    done[(workers, clients)] = done.get((workers, clients), 0) + ok
                    if failed:
                        print(f"  workers={workers} clients={clients}: {failed} failed")
        rates = {key: n / (args.seconds * args.rounds) for key, n in done.items()}
        for workers in servers:
            for clients in args.clients:
                key = (workers, clients)
                print(f"  workers={workers} {clients:3d} clients: {rates[key]:7.1f} runs/s, "
                      f"server CPU {1000 * cpu[key] / max(1, done[key]):5.2f} ms/run, "
                      f"client ({args.client}) CPU {1000 * client_cpu[key] / max(1, done[key]):5.2f} ms/run")
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

"""This tree's server against a reference tree's, side by side: light runs/s and server CPU per run (not a test).

Starts ``orchestrator serve`` from this tree and from ``--reference`` (another checkout of
the project, e.g. ``git worktree add /tmp/ref main`` or ``git archive main | tar -x -C /tmp/ref``),
both on the same store (Redis when it answers), waits until both are idle after their
warm-up, then runs the same closed loop as ``bench_server_clients.py`` (each client posts a
one-node workflow and reads its event stream to the end) against each in turn, ``--rounds``
times, so both see the same machine load. Prints runs/s, the server's CPU time per run and (on
Linux) its write system calls per run for each, and the ratios this/reference.

    .venv/bin/python bench/bench_server_compare.py --reference /tmp/ref [--seconds 5] [--clients 1 4]
        [--workers 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_server  # noqa: E402
from bench_server import Server, _redis_url  # noqa: E402
from bench_server_clients import closed_loop, server_cpu_seconds, server_write_calls, wait_idle  # noqa: E402


def start(root: Path, redis_url: str | None, workers: int, concurrency: int) -> Server:
    """A server running ``root``'s code (its own directory first on the import path)."""
    bench_server.ROOT = root
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(root)
    try:
        return Server(redis_url, concurrency, 4096, workers=workers)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="another checkout of the project")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--workers", type=int, default=1, help="server processes of each server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="runs at once per process (max_concurrent_runs)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw")
    args = ap.parse_args()
    if not (args.reference / "orchestrator" / "__init__.py").is_file():
        ap.error(f"--reference {args.reference} is not a checkout of the project (no orchestrator/__init__.py)")

    redis_url = _redis_url()
    trees = {"this": bench_server.ROOT, "reference": args.reference.resolve()}
    servers = {name: start(root, redis_url, args.workers, args.concurrency) for name, root in trees.items()}
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; store: "
          f"{'redis' if redis_url else 'directory'}; workers={args.workers}; {args.seconds:.0f} s per measure, "
          f"{args.rounds} rounds)")
    try:
        for srv in servers.values():
            asyncio.run(closed_loop(srv.url, 4, 2.0, args.client))
        for srv in servers.values():
            wait_idle(srv)
        done: dict[tuple[str, int], int] = {}
        cpu: dict[tuple[str, int], float] = {}
        writes: dict[tuple[str, int], int] = {}
        counted = True  # write calls are countable here (Linux /proc)
        for _ in range(args.rounds):
            for clients in args.clients:
                for name, srv in servers.items():
                    before, wrote = server_cpu_seconds(srv), server_write_calls(srv)
                    ok, failed = asyncio.run(closed_loop(srv.url, clients, args.seconds, args.client))
                    cpu[(name, clients)] = cpu.get((name, clients), 0.0) + server_cpu_seconds(srv) - before
                    now = server_write_calls(srv)
                    counted = counted and wrote is not None and now is not None
                    writes[(name, clients)] = writes.get((name, clients), 0) + (now or 0) - (wrote or 0)
                    done[(name, clients)] = done.get((name, clients), 0) + ok
                    if failed:
                        print(f"  {name} clients={clients}: {failed} failed")
        for clients in args.clients:
            rate = {n: done[(n, clients)] / (args.seconds * args.rounds) for n in servers}
            per_run = {n: 1000 * cpu[(n, clients)] / max(1, done[(n, clients)]) for n in servers}
            for n in servers:
                calls = f", {writes[(n, clients)] / max(1, done[(n, clients)]):4.2f} write calls/run" if counted else ""
                print(f"  {clients:3d} clients {n:9s}: {rate[n]:7.1f} runs/s, server CPU {per_run[n]:5.2f} ms/run"
                      + calls)
            print(f"  {clients:3d} clients this/reference: {rate['this'] / rate['reference']:.2f}x runs/s, "
                  f"{per_run['this'] / per_run['reference']:.2f}x server CPU per run")
    finally:
        for srv in servers.values():
            srv.close()


if __name__ == "__main__":
    main()

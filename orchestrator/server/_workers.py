"""Several server processes on one listening socket (``orchestrator serve --workers N``).

One Python process runs its event loop on one core. With ``workers > 1`` the parent
binds the socket, then forks that many worker processes; each builds its own app (its
own run manager, store connections and threads) and accepts connections on the shared
socket. They share nothing but the store's backend, which is enough: every run is
recorded there with its owner's lease, events are appended to the run's log there, and
a process answers for runs another one executes (records, live events by blocking reads
of the log, cancellation through the store; see :mod:`orchestrator.server._runs`).

The parent only supervises: SIGTERM or SIGINT is passed on to the workers (each shuts
down gracefully, marking its unfinished runs interrupted), and if one worker exits on
its own the others are stopped too and the parent exits with its status, so a
supervisor (systemd, Kubernetes) sees the failure instead of a server running short.
Forking needs a POSIX system, and the parent must not have started threads yet.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["run_workers"]

logger = logging.getLogger("orchestrator.server.workers")


def run_workers(app_factory: Callable[[], Any], config_kwargs: dict[str, Any], workers: int) -> int:
    """Serve with ``workers`` forked processes sharing one socket; returns the exit status."""
    import uvicorn

    if not hasattr(os, "fork"):
        from orchestrator.errors import ConfigError

        raise ConfigError("workers > 1 needs os.fork (a POSIX system); use one worker here", param="workers")
    sock = uvicorn.Config(app=None, **config_kwargs).bind_socket()
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            _worker(app_factory, config_kwargs, sock)
        children.add(pid)
    logger.info("started %d worker processes: %s", workers, sorted(children))
    return _supervise(children, sock)


def _worker(app_factory: Callable[[], Any], config_kwargs: dict[str, Any], sock: socket.socket) -> None:
    import uvicorn

    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # uvicorn installs its own when it starts
        server = uvicorn.Server(uvicorn.Config(app_factory(), **config_kwargs))
        server.run(sockets=[sock])
        code = 0 if server.started else 3
    except BaseException:  # noqa: BLE001 - a worker reports its failure by its exit status
        logger.exception("server worker %d failed", os.getpid())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _supervise(children: set[int], sock: socket.socket) -> int:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                logger.error("server worker %d exited (%d); stopping the others", pid, code)
                status = code if code > 0 else 1
                stop(signal.SIGTERM, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
    return status

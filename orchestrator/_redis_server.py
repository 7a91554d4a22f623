"""A Redis to talk to: the configured one if it answers, else a private ``redis-server``.

Used by the test fixtures and the benchmarks, so a fresh machine needs nothing
running. The private server listens on a free loopback port, keeps nothing on
disk, and is stopped when the context ends. If the binary is missing, Debian's
``redis-server`` package is installed with apt-get (as root, or with
passwordless sudo).

>>> with redis_url() as url:          # doctest: +SKIP
...     redis.Redis.from_url(url).ping()
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

__all__ = ["DEFAULT_URL", "PrivateRedis", "answers", "redis_binary", "redis_url"]

logger = logging.getLogger("orchestrator.redis_server")

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def answers(url: str) -> bool:
    """Whether a Redis at ``url`` answers PING within a second or two."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return True
    except (redis.RedisError, ValueError, OSError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """Path of ``redis-server``, installing Debian's package if it is missing."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary:
        return binary
    logger.info("redis-server not found: installing it with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, capture_output=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "redis-server"], check=True, capture_output=True, env=env)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is not installed and apt-get could not install it")
    return binary


class PrivateRedis:
    """A throwaway ``redis-server`` on a free loopback port; a context manager.

    >>> with PrivateRedis() as server:   # doctest: +SKIP
    ...     server.url
    'redis://127.0.0.1:40123/0'
    """

    def __init__(self) -> None:
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: str | None = None

    def start(self, timeout: float = 10.0, *, port: int | None = None) -> str:
        """Start on ``port`` (default: a free one); a stopped server restarts empty on its old port with
        ``start(port=server.port)``."""
        self.port = port or _free_port()
        self._workdir = tempfile.mkdtemp(prefix="orch-redis-")
        self._proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"private redis-server on port {self.port} did not start")
            time.sleep(0.05)
        logger.info("started a private redis-server at %s", self.url)
        return self.url

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url(url: str | None = None) -> Iterator[str]:
    """``url`` (else ``ORCHESTRATOR_REDIS_URL``, else the default) if it answers; else a private server's."""
    url = url or os.environ.get("ORCHESTRATOR_REDIS_URL") or DEFAULT_URL
    if answers(url):
        yield url
        return
    with PrivateRedis() as server:
        yield server.url

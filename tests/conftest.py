"""Shared fixtures: real Redis (the configured one, else a private server), both stores.

If ``ORCHESTRATOR_REDIS_URL`` (or redis://127.0.0.1:6379) answers, tests use it
under a unique key prefix and delete their keys afterwards. Otherwise a private
``redis-server`` is started on a free loopback port for the session (Debian's
package is installed with apt-get if the binary is missing). Redis tests never
skip silently: if no Redis can be had, they error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.artifacts import ArtifactStore, Limits, LocalArtifactStore, RedisArtifactStore

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_binary() -> str:
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary:
        return binary
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, capture_output=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "redis-server"], check=True, capture_output=True)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is not installed and apt-get could not install it")
    return binary


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("ORCHESTRATOR_REDIS_URL") or DEFAULT_URL
    if _answers(url):
        yield url
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="orch-redis-")
    proc = subprocess.Popen(
        [_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _answers(url):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"private redis-server on port {port} did not start")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def redis_store(redis_url: str, redis_prefix: str) -> Iterator[RedisArtifactStore]:
    store = RedisArtifactStore(redis_url, prefix=redis_prefix, chunk_bytes=64 << 10, limits=Limits(max_bytes=16 << 20))
    try:
        yield store
    finally:
        store.clear_prefix()
        store.close()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts", limits=Limits(max_bytes=16 << 20))


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest) -> ArtifactStore:
    """Each test using it runs once per backend."""
    return request.getfixturevalue(f"{request.param}_store")

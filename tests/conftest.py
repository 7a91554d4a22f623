"""Shared fixtures: real Redis (the configured one, else a private server), both stores.

If ``ORCHESTRATOR_REDIS_URL`` (or redis://127.0.0.1:6379) answers, tests use it
under a unique key prefix and delete their keys afterwards. Otherwise a private
``redis-server`` is started on a free loopback port for the session (Debian's
package is installed with apt-get if the binary is missing). Redis tests never
skip silently: if no Redis can be had, they error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator._redis_server import redis_url as _redis_or_private
from orchestrator.artifacts import ArtifactStore, Limits, LocalArtifactStore, RedisArtifactStore

# The suite targets the tiny zoo unless a test names another profile (the embedded default is
# `offline`; tests/test_offline_models.py covers it).
os.environ.setdefault("ORCHESTRATOR_PROFILE", "tiny")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with _redis_or_private() as url:
        yield url


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

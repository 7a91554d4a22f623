"""`RedisArtifactStore`: artifacts, records and event logs on real Redis.

Keys, under a configurable prefix ``p``::

    p art:<hex>                 JSON: the ArtifactRef, the writer token, chunk count
    p art:<hex>:<token>:<i>     the bytes, split into chunks of ``chunk_bytes``
    p rec:<ns>:<key>            a JSON record;  p recidx:<ns>  the namespace's key set
    p ev:<stream>               an event log (a Redis list)

A writer stores its chunks under its own random token, then publishes the ref
with ``SET NX``; a losing concurrent writer of the same id drops its chunks. A
reader resolves the ref first, so it only ever reads one writer's complete
chunks, never a partial or mixed blob. TTLs are applied to every key of an
artifact in one transaction.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from redis import exceptions as rexc

from orchestrator.errors import ArtifactNotFound, StoreUnavailable

from ._ref import ArtifactRef
from .store import ArtifactStore

__all__ = ["RedisArtifactStore"]

F = TypeVar("F", bound=Callable[..., Any])
PROVISIONAL_TTL = 3600  # chunks of a writer that dies before publishing expire


def _translated(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: RedisArtifactStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError) as exc:
            raise StoreUnavailable(f"Redis at {self.url_for_humans} is unavailable: {exc}") from exc
        except rexc.RedisError as exc:
            raise StoreUnavailable(f"Redis error at {self.url_for_humans}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


class RedisArtifactStore(ArtifactStore):
    """Artifacts in Redis, split into chunks, under ``prefix``.

    >>> store = RedisArtifactStore("redis://127.0.0.1:6379/0", prefix="demo:")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "orch:",
        chunk_bytes: int = 8 << 20,
        client: redis.Redis | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if chunk_bytes <= 0 or chunk_bytes > 512 << 20:
            raise ValueError("chunk_bytes must be in (0, 512 MiB]")
        self.url = url
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        self.r = client or redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30, health_check_interval=30)

    @property
    def url_for_humans(self) -> str:
        return self.url.split("@")[-1]

    def __repr__(self) -> str:
        return f"RedisArtifactStore({self.url_for_humans!r}, prefix={self.prefix!r})"

    def _k(self, artifact_id: str) -> str:
        return f"{self.prefix}art:{artifact_id[7:]}"

    def _chunk_keys(self, artifact_id: str, token: str, n: int) -> list[str]:
        base = self._k(artifact_id)
        return [f"{base}:{token}:{i}" for i in range(n)]

    def _doc(self, artifact_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self._k(artifact_id))
        return json.loads(raw) if raw is not None else None

    # -------------------------------------------------- artifacts
    @_translated
    def _write(self, ref: ArtifactRef, data: bytes, ttl: int | None) -> ArtifactRef:
        doc = self._doc(ref.id)
        if doc is not None:
            return ArtifactRef.model_validate(doc["ref"])
        token = uuid.uuid4().hex[:12]
        view = memoryview(data)
        n = max(1, -(-len(data) // self.chunk_bytes))
        keys = self._chunk_keys(ref.id, token, n)
        pipe = self.r.pipeline(transaction=False)
        for i, key in enumerate(keys):
            pipe.set(key, view[i * self.chunk_bytes : (i + 1) * self.chunk_bytes], ex=ttl or PROVISIONAL_TTL)
        pipe.execute()
        published = self.r.set(
            self._k(ref.id), json.dumps({"ref": ref.model_dump(mode="json"), "token": token, "chunks": n}), nx=True, ex=ttl
        )
        if not published:  # another writer of the same bytes won
            self.r.delete(*keys)
            doc = self._doc(ref.id)
            return ArtifactRef.model_validate(doc["ref"]) if doc else ref
        if ttl is None:
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.persist(key)
            pipe.execute()
        return ref

    @_translated
    def _read(self, artifact_id: str) -> bytes:
        doc = self._doc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        keys = self._chunk_keys(artifact_id, doc["token"], doc["chunks"])
        if len(keys) == 1:
            parts = [self.r.get(keys[0])]
        else:
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            parts = pipe.execute()
        if any(p is None for p in parts):
            raise ArtifactNotFound("artifact was deleted or expired while reading", artifact_id=artifact_id)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @_translated
    def _read_ref(self, artifact_id: str) -> ArtifactRef | None:
        doc = self._doc(artifact_id)
        return ArtifactRef.model_validate(doc["ref"]) if doc else None

    @_translated
    def _delete(self, artifact_id: str) -> bool:
        doc = self._doc(artifact_id)
        if doc is None:
            return False
        self.r.delete(self._k(artifact_id), *self._chunk_keys(artifact_id, doc["token"], doc["chunks"]))
        return True

    @_translated
    def _expire(self, artifact_id: str, ttl: int | None) -> bool:
        doc = self._doc(artifact_id)
        if doc is None:
            return False
        keys = [self._k(artifact_id), *self._chunk_keys(artifact_id, doc["token"], doc["chunks"])]
        pipe = self.r.pipeline(transaction=True)
        for key in keys:
            pipe.persist(key) if ttl is None else pipe.expire(key, ttl)
        results = pipe.execute()
        return bool(results[0]) or ttl is None

    @_translated
    def _ids(self) -> Iterator[str]:
        plen = len(self.prefix) + 4
        for key in self.r.scan_iter(match=f"{self.prefix}art:*", count=1000):
            name = key.decode()[plen:]
            if ":" not in name:
                yield "sha256:" + name

    @_translated
    def ttl(self, artifact_id: str) -> dict[str, int]:
        """Remaining TTL of every key of an artifact (-1: none), for inspection and tests."""
        doc = self._doc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact", artifact_id=artifact_id)
        keys = [self._k(artifact_id), *self._chunk_keys(artifact_id, doc["token"], doc["chunks"])]
        return {k: self.r.ttl(k) for k in keys}

    # -------------------------------------------------- records
    @_translated
    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: int | None = None) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(f"{self.prefix}rec:{namespace}:{key}", json.dumps(value), ex=ttl)
        pipe.sadd(f"{self.prefix}recidx:{namespace}", key)
        pipe.execute()

    @_translated
    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        raw = self.r.get(f"{self.prefix}rec:{namespace}:{key}")
        return json.loads(raw) if raw is not None else None

    @_translated
    def delete_record(self, namespace: str, key: str) -> bool:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(f"{self.prefix}rec:{namespace}:{key}")
        pipe.srem(f"{self.prefix}recidx:{namespace}", key)
        return bool(pipe.execute()[0])

    @_translated
    def list_records(self, namespace: str) -> list[str]:
        keys = sorted(k.decode() for k in self.r.smembers(f"{self.prefix}recidx:{namespace}"))
        if not keys:
            return []
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.exists(f"{self.prefix}rec:{namespace}:{k}")
        return [k for k, alive in zip(keys, pipe.execute(), strict=True) if alive]

    # -------------------------------------------------- events
    @_translated
    def append_event(self, stream: str, event: dict[str, Any]) -> int:
        return int(self.r.rpush(f"{self.prefix}ev:{stream}", json.dumps(event, separators=(",", ":"))))

    @_translated
    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        raw = self.r.lrange(f"{self.prefix}ev:{stream}", after, -1)
        return [(after + i + 1, json.loads(item)) for i, item in enumerate(raw)]

    @_translated
    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        self.r.close()

    @_translated
    def clear_prefix(self) -> int:
        """Delete every key under this store's prefix (tests, resets). Returns the count."""
        n = 0
        batch = []
        for key in self.r.scan_iter(match=f"{self.prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += self.r.delete(*batch)
                batch.clear()
        if batch:
            n += self.r.delete(*batch)
        self.cache.clear()
        return n

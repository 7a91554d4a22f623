"""What crosses from the engine to a replica: refs, params and where the store is. Never bytes."""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

from orchestrator.artifacts import ArtifactRef, ArtifactStore, Limits, LocalArtifactStore, RedisArtifactStore
from orchestrator.errors import ConfigError, ExecutorError

__all__ = ["NodeCall", "Refs", "StoreCache", "StoreSpec", "portable_error"]

Refs = ArtifactRef | list[ArtifactRef]


@dataclass(frozen=True)
class StoreSpec:
    """How a replica opens the caller's store: the same Redis (URL and key prefix) or directory."""

    kind: str  # redis | local
    location: str  # the Redis URL, or the store's root directory
    prefix: str = ""
    chunk_bytes: int = 1 << 20
    limits: Limits = field(default_factory=Limits)
    default_ttl: float | None = None

    @classmethod
    def of(cls, store: ArtifactStore) -> StoreSpec:
        if isinstance(store, RedisArtifactStore):
            return cls("redis", store.url, store.prefix, store.chunk_bytes, store.limits, store.default_ttl)
        if isinstance(store, LocalArtifactStore):
            return cls("local", str(store.root.absolute()), limits=store.limits, default_ttl=store.default_ttl)
        raise ConfigError(f"the Ray executor cannot hand a {type(store).__name__} to its replicas; use the Redis store")

    def open(self) -> ArtifactStore:
        if self.kind == "redis":
            return RedisArtifactStore(self.location, prefix=self.prefix, chunk_bytes=self.chunk_bytes,
                                      limits=self.limits, default_ttl=self.default_ttl)
        return LocalArtifactStore(self.location, limits=self.limits, default_ttl=self.default_ttl)


class StoreCache:
    """One open store per spec in a replica (they share its decoded-object cache across calls)."""

    def __init__(self) -> None:
        self._stores: dict[StoreSpec, ArtifactStore] = {}
        self._lock = threading.Lock()

    def get(self, spec: StoreSpec) -> ArtifactStore:
        with self._lock:
            store = self._stores.get(spec)
            if store is None:
                store = self._stores[spec] = spec.open()
            return store


@dataclass
class NodeCall:
    """One node attempt sent to a replica."""

    run_id: str
    node: str
    tool: str
    params: dict[str, Any]
    inputs: dict[str, Refs]
    seed: int | None
    input_ids: dict[str, Any]
    store: StoreSpec
    profile: Any = None
    """The run's Profile (or None: the replica's configured one)."""
    settings: Any = None
    """The caller's Settings, so tools see the same limits and profile choice."""
    timeout: float | None = None


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling (the caller re-raises the same error), else an
    ExecutorError that carries its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - anything that does not round-trip is described instead
        return ExecutorError(f"{type(exc).__name__}: {exc}")
    return exc

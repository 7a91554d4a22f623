"""`ArtifactStore`: the one place bytes live. Redis or an embedded directory.

Both backends share this class's public API (sync, plus ``a``-prefixed async
twins) and differ only in a handful of private primitives. Besides artifacts
the store keeps small JSON *records* (run state, chat sessions, the node cache
index) and append-only *event logs*, so every layer persists to one backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from orchestrator.errors import ArtifactDecodeError, ArtifactNotFound, ArtifactTooLarge

from . import codecs
from ._ref import ArtifactMeta, ArtifactRef, Modality, Provenance, content_id, normalize_id

__all__ = ["ArtifactStore", "DecodedCache"]

Ref = ArtifactRef | str


class DecodedCache:
    """A size-bounded LRU of decoded objects keyed by artifact id.

    Objects handed out are shared: treat them as read-only (numpy arrays are
    marked non-writeable).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: str, obj: Any) -> None:
        size = codecs.approx_nbytes(obj)
        if size > self.max_bytes:
            return
        _freeze(obj)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (obj, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (_, s) = self._items.popitem(last=False)
                self._bytes -= s

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _freeze(obj: Any) -> None:
    import numpy as np

    for arr in (obj, getattr(obj, "samples", None), getattr(obj, "frames", None)):
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False


class ArtifactStore(ABC):
    """Content-addressed artifact storage with TTLs, pins, records and event logs.

    >>> from orchestrator.artifacts import LocalArtifactStore
    >>> store = LocalArtifactStore(tmp_path)            # doctest: +SKIP
    >>> ref = store.put("hello")                        # doctest: +SKIP
    >>> store.load(ref)                                 # doctest: +SKIP
    'hello'
    """

    def __init__(
        self,
        *,
        limits: codecs.Limits | None = None,
        decoded_cache_bytes: int = 256 << 20,
        default_ttl: int | None = None,
    ) -> None:
        self.limits = limits or codecs.Limits()
        self.cache = DecodedCache(decoded_cache_bytes)
        self.default_ttl = default_ttl
        self._pins: dict[str, set[str]] = {}
        self._pin_lock = threading.Lock()

    # -------------------------------------------------- backend primitives
    @abstractmethod
    def _write(self, ref: ArtifactRef, data: bytes, ttl: int | None) -> ArtifactRef:
        """Store bytes and ref atomically; if the id exists keep it and return the stored ref."""

    @abstractmethod
    def _read(self, artifact_id: str) -> bytes: ...

    @abstractmethod
    def _read_ref(self, artifact_id: str) -> ArtifactRef | None: ...

    @abstractmethod
    def _delete(self, artifact_id: str) -> bool: ...

    @abstractmethod
    def _expire(self, artifact_id: str, ttl: int | None) -> bool:
        """Set (or with ``None`` remove) the TTL of every key of an artifact."""

    @abstractmethod
    def _ids(self) -> Iterator[str]: ...

    @abstractmethod
    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: int | None = None) -> None:
        """Store a small JSON record (run state, a chat session, a cache entry)."""

    @abstractmethod
    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete_record(self, namespace: str, key: str) -> bool: ...

    @abstractmethod
    def list_records(self, namespace: str) -> list[str]: ...

    @abstractmethod
    def append_event(self, stream: str, event: dict[str, Any]) -> int:
        """Append to an event log; returns the event's 1-based sequence number."""

    @abstractmethod
    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~orchestrator.errors.StoreUnavailable` if the backend does not answer."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------- artifacts
    def put(
        self,
        obj: Any,
        *,
        modality: Modality | str | None = None,
        provenance: Provenance | dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        ttl: int | None = None,
    ) -> ArtifactRef:
        """Store a Python object, or bytes of a declared modality; same bytes, same id.

        Bytes are validated (and foreign formats converted) before anything is written.
        """
        if isinstance(obj, (bytes, bytearray, memoryview)):
            if modality is None:
                raise ArtifactDecodeError("bytes need an explicit modality=")
            data, media, decoded = codecs.canonicalize(bytes(obj), modality, limits=self.limits)
        else:
            data, media = codecs.encode(obj, modality)
            decoded = obj
            modality = modality or codecs.infer_modality(obj)
        if len(data) > self.limits.max_bytes:
            raise ArtifactTooLarge(f"artifact is {len(data)} bytes, over the {self.limits.max_bytes}-byte limit")
        extra = dict(meta or {})
        if provenance is not None:
            extra["provenance"] = provenance if isinstance(provenance, Provenance) else Provenance(**provenance)
        full = media.model_copy(update=extra) if extra else media
        ref = ArtifactRef.for_bytes(data, Modality(modality), ArtifactMeta.model_validate(full.model_dump()))
        stored = self._write(ref, data, ttl if ttl is not None else self.default_ttl)
        if not isinstance(decoded, (bytes, bytearray)) and not isinstance(obj, (bytes, bytearray, memoryview)):
            self.cache.put(stored.id, decoded)
        return stored

    def get_bytes(self, ref: Ref) -> bytes:
        """The canonical bytes; raises :class:`ArtifactNotFound`."""
        return self._read(normalize_id(ref))

    def load(self, ref: Ref) -> Any:
        """The decoded object (from the in-process cache when a producer just stored it)."""
        artifact_id = normalize_id(ref)
        cached = self.cache.get(artifact_id)
        if cached is not None:
            return cached
        info = self.stat(artifact_id)
        obj = codecs.decode(self._read(artifact_id), info.modality, limits=self.limits, artifact_id=artifact_id)
        self.cache.put(artifact_id, obj)
        return obj

    def stat(self, ref: Ref) -> ArtifactRef:
        artifact_id = normalize_id(ref)
        info = self._read_ref(artifact_id)
        if info is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        return info

    def exists(self, ref: Ref) -> bool:
        try:
            return self._read_ref(normalize_id(ref)) is not None
        except ArtifactNotFound:
            return False

    def delete(self, ref: Ref) -> bool:
        artifact_id = normalize_id(ref)
        self.cache.discard(artifact_id)
        return self._delete(artifact_id)

    def expire(self, ref: Ref, ttl: int | None) -> None:
        """Set an artifact's time to live in seconds (``None``: keep forever)."""
        artifact_id = normalize_id(ref)
        if not self._expire(artifact_id, ttl):
            raise ArtifactNotFound("no such artifact", artifact_id=artifact_id)

    def ids(self) -> list[str]:
        return sorted(self._ids())

    def verify(self, ref: Ref) -> bool:
        """Re-hash the stored bytes and compare them with the id."""
        artifact_id = normalize_id(ref)
        return content_id(self._read(artifact_id)) == artifact_id

    # -------------------------------------------------- pins
    def pin(self, run_id: str, refs: Iterable[Ref]) -> None:
        """Keep artifacts from expiring while ``run_id`` lives (until :meth:`unpin`)."""
        ids = [normalize_id(r) for r in refs]
        with self._pin_lock:
            self._pins.setdefault(run_id, set()).update(ids)
        for artifact_id in ids:
            self._expire(artifact_id, None)

    def unpin(self, run_id: str) -> None:
        """Release a run's pins: artifacts get the default TTL back, unless another run pins them."""
        with self._pin_lock:
            ids = self._pins.pop(run_id, set())
            still = set().union(*self._pins.values()) if self._pins else set()
        if self.default_ttl is None:
            return
        for artifact_id in ids - still:
            self._expire(artifact_id, self.default_ttl)

    @contextlib.contextmanager
    def pinned(self, run_id: str) -> Iterator[PinSet]:
        pins = PinSet(self, run_id)
        try:
            yield pins
        finally:
            self.unpin(run_id)

    # -------------------------------------------------- async twins
    async def aput(self, obj: Any, **kwargs: Any) -> ArtifactRef:
        return await asyncio.to_thread(self.put, obj, **kwargs)

    async def aget_bytes(self, ref: Ref) -> bytes:
        return await asyncio.to_thread(self.get_bytes, ref)

    async def aload(self, ref: Ref) -> Any:
        cached = self.cache.get(normalize_id(ref))
        return cached if cached is not None else await asyncio.to_thread(self.load, ref)

    async def astat(self, ref: Ref) -> ArtifactRef:
        return await asyncio.to_thread(self.stat, ref)

    async def aexists(self, ref: Ref) -> bool:
        return await asyncio.to_thread(self.exists, ref)

    async def adelete(self, ref: Ref) -> bool:
        return await asyncio.to_thread(self.delete, ref)


class PinSet:
    """Pins collected during a run; released when the ``pinned`` block ends."""

    def __init__(self, store: ArtifactStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id

    def add(self, *refs: Ref) -> None:
        self.store.pin(self.run_id, refs)

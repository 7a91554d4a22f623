"""`ArtifactStore`: the one place bytes live. Redis or an embedded directory.

Both backends share this class's public API (sync, plus ``a``-prefixed async
twins) and differ only in a handful of private primitives. Besides artifacts
the store keeps small JSON *records* (run state, chat sessions, the node cache
index) and append-only *event logs*, so every layer persists to one backend.

TTL rules, the same for both backends:

- ``put(..., ttl=s)`` (or the store's ``default_ttl``) expires every key of the
  artifact together after ``s`` seconds; ``None`` keeps it.
- Putting bytes that are already stored keeps the first ref (and its metadata)
  and only ever *extends* its life: to at least ``ttl``, or forever for ``None``.
- ``pin(run_id, refs)`` removes the TTL while the run lives; ``unpin(run_id)``
  gives the store's ``default_ttl`` back (when set) to what no other run pins.

Write-behind: ``put(..., defer=True)`` returns the ref at once and queues the
bytes (up to ``write_behind_bytes`` queued in all); :meth:`ArtifactStore.flush`
writes the queue in one batch (Redis: one pipeline). Every other call to the
store flushes first, so whatever this store object writes or reads after a
deferred put (a record naming the artifact, an event, a read) sees it stored.
A load served from the decoded cache needs no flush: that is what the next node
of a run does with its predecessor's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import ArtifactDecodeError, ArtifactError, ArtifactNotFound

from . import codecs
from ._ref import CANONICAL_MIME, ArtifactMeta, ArtifactRef, Modality, Provenance, content_id, normalize_id

__all__ = ["ArtifactStore", "DecodedCache", "DeferredWrite", "PendingRef", "PinSet"]

Ref = ArtifactRef | str
_MISSING: Any = object()

EVENT_WAIT_STEP = 0.05  # wait_events of a backend that cannot block: seconds between reads
OVERLAP_BYTES = 256 << 10  # from this size on, hash in a helper thread while the backend writes
WRITE_BEHIND_BYTES = 1 << 20
"""Default bytes of deferred puts a store queues before a put writes the queue (``Settings.write_behind_bytes``)."""
_writing = threading.local()  # ``deferred``: this thread writes deferred puts (its backend calls must not flush)
_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process's thread pool called ``name``, made with ``workers`` threads on first use."""
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return pool


def _hasher() -> ThreadPoolExecutor:
    return shared_pool("orch-hash", 4)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PendingRef:
    """The ref of bytes being stored, its content hash computed while the backend writes.

    hashlib releases the GIL, so for large blobs the hash runs in a helper thread
    while the backend sends or writes the bytes under a temporary name; the
    backend asks for :meth:`result` only when it needs the id to publish.
    """

    def __init__(self, data: bytes, modality: Modality, meta: ArtifactMeta) -> None:
        self.size = len(data)
        self._modality, self._meta = modality, meta
        self._ref: ArtifactRef | None = None
        self._json: str | None = None
        self._future: Future[str] | None = None
        if len(data) >= OVERLAP_BYTES:
            self._future = _hasher().submit(_sha256_hex, data)
        else:
            self._ref = self._make(_sha256_hex(data))

    @classmethod
    def of(cls, ref: ArtifactRef, size: int, ref_json: str | None = None) -> PendingRef:
        """A pending ref whose ref (and maybe its JSON) is known already (a deferred put's)."""
        pending = cls.__new__(cls)
        pending.size, pending._modality, pending._meta = size, ref.modality, ref.meta
        pending._ref, pending._future, pending._json = ref, None, ref_json
        return pending

    def _make(self, hex_digest: str) -> ArtifactRef:
        return ArtifactRef(
            id="sha256:" + hex_digest, modality=self._modality, mime=CANONICAL_MIME[self._modality],
            size=self.size, meta=self._meta,
        )

    def done(self) -> bool:
        return self._ref is not None or (self._future is not None and self._future.done())

    def result(self) -> ArtifactRef:
        if self._ref is None:
            assert self._future is not None
            self._ref = self._make(self._future.result())
        return self._ref

    def json(self) -> str:
        """``result().model_dump_json()``, made once (the put checks it, the backend writes it)."""
        if self._json is None:
            self._json = self.result().model_dump_json()
        return self._json


@dataclass(frozen=True, slots=True)
class DeferredWrite:
    """A put whose bytes wait in the store's queue for :meth:`ArtifactStore.flush`."""

    ref: ArtifactRef
    data: bytes
    pin: str | None
    """The run it is pinned to (written pinned, no TTL), or ``None``."""
    ttl: float | None
    ref_json: str | None = None
    """``ref.model_dump_json()`` when the put made it already (the backend writes it as it is)."""


class DecodedCache:
    """A size-bounded LRU of decoded objects keyed by artifact id.

    Objects handed out are shared: treat them as read-only (numpy arrays are
    marked non-writeable). ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return default
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
    if isinstance(obj, (str, dict, list)):  # the common small outputs: no arrays to freeze
        return
    import numpy as np

    audio = getattr(obj, "audio", None)
    for arr in (obj, getattr(obj, "samples", None), getattr(obj, "frames", None), getattr(audio, "samples", None)):
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False


@contextlib.contextmanager
def writing_deferred() -> Iterator[None]:
    """Mark this thread as writing deferred puts: its backend calls do not flush (a backend that
    writes a batch with helper threads marks them too)."""
    before = getattr(_writing, "deferred", False)
    _writing.deferred = True
    try:
        yield
    finally:
        _writing.deferred = before


def _record_ids(record: dict[str, Any]) -> list[str]:
    """The artifact ids a record of ids (or lists of ids) holds, in order."""
    ids = [i for v in record.values() for i in (v if isinstance(v, list) else [v])]
    if not all(isinstance(i, str) for i in ids):
        raise ArtifactError("the record does not hold artifact ids")
    return ids


def _modality(value: Modality | str) -> Modality:
    if isinstance(value, Modality):  # what the engine passes: no enum lookup
        return value
    try:
        return Modality(value)
    except ValueError:
        known = ", ".join(m.value for m in Modality)
        raise ArtifactError(f"unknown modality {value!r}; expected one of: {known}") from None


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
        default_ttl: float | None = None,
        write_behind_bytes: int = WRITE_BEHIND_BYTES,
    ) -> None:
        self.limits = limits or codecs.Limits()
        self.cache = DecodedCache(decoded_cache_bytes)
        self.default_ttl = default_ttl
        self.write_behind_bytes = write_behind_bytes
        self._pins: dict[str, set[str]] = {}
        self._pin_lock = threading.Lock()
        self._deferred: list[DeferredWrite] = []
        self._queued: set[tuple[str, str | None, float | None]] = set()  # (id, pin, ttl) of what _deferred holds
        self._deferred_bytes = 0
        self._unflushed = 0  # deferred puts not yet written: queued, or in a flush under way
        self._deferred_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._lost: dict[str, BaseException] = {}  # run -> why deferred puts pinned to it were not stored

    # -------------------------------------------------- backend primitives
    @abstractmethod
    def _write(self, pending: PendingRef, data: bytes, ttl: float | None) -> ArtifactRef:
        """Store bytes and ref so that readers see all or nothing.

        ``pending.result()`` gives the ref (blocking until the hash is done):
        write what does not need the id first. If the id is stored already keep
        it, extend its TTL (see the module docstring) and return the stored ref.
        """

    def _write_deferred(self, batch: list[DeferredWrite]) -> None:
        """Store a batch of deferred puts, in order (a backend may send them in one round trip).

        Raises on the first that fails; the rest of the batch is not stored."""
        for item in batch:
            pending = PendingRef.of(item.ref, len(item.data), item.ref_json)
            if item.pin is not None:
                self._write_pinned(pending, item.data, item.pin)
            else:
                self._write(pending, item.data, item.ttl)

    @abstractmethod
    def _read(self, artifact_id: str) -> tuple[Modality, bytes]:
        """The artifact's modality and bytes; raises :class:`ArtifactNotFound`."""

    def _read_bytes(self, artifact_id: str) -> bytes:
        """Just the bytes (a backend may have a faster way than :meth:`_read`)."""
        return self._read(artifact_id)[1]

    @abstractmethod
    def _read_ref(self, artifact_id: str) -> ArtifactRef | None: ...

    def _exists(self, artifact_id: str) -> bool:
        return self._read_ref(artifact_id) is not None

    @abstractmethod
    def _delete(self, artifact_id: str) -> bool: ...

    @abstractmethod
    def _expire(self, artifact_id: str, ttl: float | None) -> bool:
        """Set (or with ``None`` remove) the TTL of every key of an artifact; ``False`` if absent."""

    @abstractmethod
    def _ids(self) -> list[str]: ...

    @abstractmethod
    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: float | None = None) -> None:
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

    def append_events(self, stream: str, events: list[dict[str, Any]]) -> list[int]:
        """Append several events in order; returns their sequence numbers. The built-in stores do it in
        one call (Redis: one script; the directory store: one write under the log's lock); this default
        appends one at a time."""
        return [self.append_event(stream, event) for event in events]

    @abstractmethod
    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """Events with a sequence number above ``after``, oldest first."""

    def wait_events(self, stream: str, after: int = 0, timeout: float = 5.0) -> list[tuple[int, dict[str, Any]]]:
        """Events after ``after``, waiting up to ``timeout`` seconds for the first if there is none
        yet (``[]`` when none came). Redis blocks on the stream; this default checks every
        ``EVENT_WAIT_STEP`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            items = self.read_events(stream, after)
            if items or time.monotonic() >= deadline:
                return items
            time.sleep(min(EVENT_WAIT_STEP, max(0.0, deadline - time.monotonic())))

    @abstractmethod
    def expire_events(self, stream: str, ttl: float | None) -> None:
        """Let an event log expire ``ttl`` seconds from now (``None``: keep it)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~orchestrator.errors.StoreUnavailable` if the backend does not answer."""

    def close(self) -> None:
        """Store the deferred puts, then release connections; the store is unusable afterwards."""
        self.flush()

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
        ttl: float | None = None,
        pin: str | None = None,
        defer: bool = False,
    ) -> ArtifactRef:
        """Store a Python object, or bytes of a declared modality; same bytes, same id.

        ``pin=run_id`` stores it pinned to that run (as :meth:`pin` right after, without
        giving it a TTL first). ``defer=True`` queues the bytes for :meth:`flush` (any
        later call to the store flushes; see the module docstring) and returns this put's
        ref, whose metadata may differ from that of bytes stored already (the store keeps
        the first); bytes above ``write_behind_bytes`` are written at once.

        Everything is validated (and foreign formats converted) before anything is
        written, so a bad input leaves the store as it was. Media facts read off
        the bytes (width, duration …) win over the same keys in ``meta``. If the
        bytes are stored already, the stored ref comes back (the only way its
        modality can differ: JSON text stored first as ``text``, or the reverse).
        """
        # 1. canonical bytes, their media facts, and the object they decode to
        if isinstance(obj, (bytes, bytearray, memoryview)):
            if modality is None:
                raise ArtifactDecodeError("bytes need an explicit modality=")
            mod = _modality(modality)
            encoded = codecs.canonicalize(bytes(obj), mod, limits=self.limits)
        else:
            try:
                mod = _modality(modality) if modality is not None else codecs.infer_modality(obj)
            except TypeError as exc:
                raise ArtifactError(str(exc)) from exc
            encoded = codecs.encode_object(obj, mod, limits=self.limits)
        # 2. the ref: content id plus metadata, checked to survive the trip through the store (its
        # JSON, made here when the hash is at hand, is what the backend writes)
        hashed_here = len(encoded.data) < OVERLAP_BYTES
        pending = PendingRef(encoded.data, mod, self._meta(encoded.meta, meta, provenance, check=not hashed_here))
        if hashed_here:
            try:
                pending.json()
            except (ValueError, TypeError) as exc:
                raise ArtifactError(f"invalid artifact metadata: {exc}") from exc
        # 3. write (the first writer of an id wins) and keep the decoded object
        if defer and len(encoded.data) <= self.write_behind_bytes:
            stored = self._defer(DeferredWrite(pending.result(), encoded.data, pin,
                                               ttl if ttl is not None else self.default_ttl, pending.json()))
        elif pin is not None:
            stored = self._write_pinned(pending, encoded.data, pin)
            self._note_pins(pin, [stored.id])
        else:
            stored = self._write(pending, encoded.data, ttl if ttl is not None else self.default_ttl)
        # same modality: the same bytes stored first as text, now put as JSON, keep the first;
        # obj None: not decoded (a video streamed through)
        if stored.modality is mod and encoded.obj is not None:
            self.cache.put(stored.id, encoded.obj)
        return stored

    def _defer(self, item: DeferredWrite) -> ArtifactRef:
        """Queue a put (pins noted at once: loads of it are served from the decoded cache);
        write the queue first when it would grow past ``write_behind_bytes``."""
        if self._deferred_bytes + len(item.data) > self.write_behind_bytes:
            self.flush()
        if item.pin is not None:
            self._note_pins(item.pin, [item.ref.id])
        key = (item.ref.id, item.pin, item.ttl)
        with self._deferred_lock:
            if key not in self._queued:  # the same bytes again (the branches of a fan-out): queued once
                self._queued.add(key)
                self._deferred.append(item)
                self._deferred_bytes += len(item.data)
                self._unflushed += 1
        return item.ref

    @property
    def pending_writes(self) -> int:
        """Deferred puts not yet stored (queued, or in a flush under way)."""
        return self._unflushed

    def flush(self) -> None:
        """Write every deferred put made so far (no-op when there is none).

        Raises the backend's error when the batch cannot be written; its puts are then
        not stored (and forgotten: a run that deferred them fails)."""
        if not self._unflushed or getattr(_writing, "deferred", False):  # nothing, or this thread is writing it
            return
        with self._taking_deferred() as batch:
            if batch:
                self._write_deferred(batch)

    def _settle(self) -> None:
        """Before a backend call: store the deferred puts (unless this thread is writing them)."""
        if self._unflushed:
            self.flush()

    @contextlib.contextmanager
    def _taking_deferred(self) -> Iterator[list[DeferredWrite]]:
        """The queued deferred puts, taken off the queue for the block to write (under the flush
        lock: a flush under way in another thread finishes first). If the block raises they are
        forgotten, and dropped from the decoded cache: nothing is served that may not be stored."""
        with self._flush_lock, writing_deferred():
            with self._deferred_lock:
                batch, self._deferred, self._deferred_bytes = self._deferred, [], 0
                self._queued.clear()
            try:
                yield batch
            except BaseException as exc:
                for item in batch:
                    self.cache.discard(item.ref.id)
                    if item.pin is not None:  # whoever flushed, the run that deferred it must fail too
                        self._lost.setdefault(item.pin, exc)
                raise
            finally:
                with self._deferred_lock:
                    self._unflushed -= len(batch)

    @staticmethod
    def _meta(media: ArtifactMeta, meta: dict[str, Any] | None, provenance: Provenance | dict[str, Any] | None,
              *, check: bool = True) -> ArtifactMeta:
        """The artifact's metadata; ``check``: make sure it survives the trip through the store
        (else the caller checks the ref's JSON)."""
        fields = dict(meta) if meta else {}
        if media.model_fields_set or media.model_extra:  # text and JSON have no media facts
            fields.update(media.model_dump(exclude_none=True))
        if provenance is not None:
            fields["provenance"] = provenance
        try:
            full = ArtifactMeta.model_validate(fields)
            if check:
                full.model_dump_json()
        except (ValidationError, ValueError, TypeError) as exc:
            raise ArtifactError(f"invalid artifact metadata: {exc}") from exc
        return full

    def get_bytes(self, ref: Ref) -> bytes:
        """The canonical bytes; raises :class:`ArtifactNotFound`."""
        return self._read_bytes(normalize_id(ref))

    def get_range(self, ref: Ref, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` inclusive (HTTP Range semantics), reading only that part
        where the backend allows (a file seek, the Redis chunks that hold it)."""
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range {start}-{end}")
        return self._read_range(normalize_id(ref), start, end)

    def _read_range(self, artifact_id: str, start: int, end: int) -> bytes:
        return self._read_bytes(artifact_id)[start : end + 1]

    def load(self, ref: Ref) -> Any:
        """The decoded object; raises :class:`ArtifactNotFound`.

        Objects this process stored or loaded recently come from the in-process
        cache (after a cheap check that the artifact still exists, skipped while a
        run of this process pins it), so a consumer does not decode again what a
        producer just encoded.
        """
        artifact_id = normalize_id(ref)
        cached = self.cache.get(artifact_id, _MISSING)
        if cached is not _MISSING:
            if self._pinned_here(artifact_id) or self._exists(artifact_id):  # a live run's pin keeps it
                return cached
            self.cache.discard(artifact_id)
            raise ArtifactNotFound("no such artifact (deleted or expired)", artifact_id=artifact_id)
        modality, data = self._read(artifact_id)
        obj = codecs.decode(data, modality, limits=self.limits, artifact_id=artifact_id)
        self.cache.put(artifact_id, obj)
        return obj

    def stat(self, ref: Ref) -> ArtifactRef:
        """The stored ref (modality, size, metadata); raises :class:`ArtifactNotFound`."""
        artifact_id = normalize_id(ref)
        info = self._read_ref(artifact_id)
        if info is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        return info

    def stat_many(self, refs: Iterable[Ref], *, pin: str | None = None) -> list[ArtifactRef | None]:
        """The stored refs (``None`` for each one missing); ``pin=run_id`` also pins those found,
        in the same round trip where the backend allows."""
        ids = [normalize_id(r) for r in refs]
        found = [self._read_ref(i) for i in ids]
        if pin is not None:
            self.pin(pin, [i for i, ref in zip(ids, found, strict=True) if ref is not None])
        return found

    def get_record_refs(self, namespace: str, key: str, *, pin: str | None = None
                        ) -> tuple[dict[str, Any], dict[str, ArtifactRef | None]] | None:
        """A record whose values are artifact ids (or lists of ids), with the stored ref of each id
        (``None`` when gone), those found pinned to ``pin``; ``None`` without a record. In one round
        trip where the backend allows (the node cache's lookup). Raises :class:`ArtifactError` for a
        value that is not an id."""
        record = self.get_record(namespace, key)
        if not record:
            return None
        ids = _record_ids(record)
        return record, dict(zip(ids, self.stat_many(ids, pin=pin), strict=True))

    def get_record_refs_many(self, namespace: str, keys: list[str], *, pin: str | None = None
                             ) -> list[tuple[dict[str, Any], dict[str, ArtifactRef | None]] | None]:
        """:meth:`get_record_refs` for several keys, in one round trip where the backend allows
        (the node cache's lookup of independent nodes); a record that does not hold artifact ids
        reads as ``None``."""
        found: list[tuple[dict[str, Any], dict[str, ArtifactRef | None]] | None] = []
        for key in keys:
            try:
                found.append(self.get_record_refs(namespace, key, pin=pin))
            except ArtifactError:
                found.append(None)
        return found

    def exists(self, ref: Ref) -> bool:
        try:
            return self._exists(normalize_id(ref))
        except ArtifactNotFound:  # not an artifact id at all
            return False

    def delete(self, ref: Ref) -> bool:
        """Remove an artifact; ``False`` if it was not there."""
        artifact_id = normalize_id(ref)
        self.cache.discard(artifact_id)
        return self._delete(artifact_id)

    def expire(self, ref: Ref, ttl: float | None) -> None:
        """Set an artifact's time to live in seconds (``None``: keep forever)."""
        artifact_id = normalize_id(ref)
        if not self._expire(artifact_id, ttl):
            raise ArtifactNotFound("no such artifact", artifact_id=artifact_id)

    def ids(self) -> list[str]:
        """Every live artifact id, sorted."""
        return sorted(self._ids())

    def verify(self, ref: Ref) -> bool:
        """Re-hash the stored bytes and compare them with the id."""
        artifact_id = normalize_id(ref)
        return content_id(self._read(artifact_id)[1]) == artifact_id

    # -------------------------------------------------- pins
    def pin(self, run_id: str, refs: Iterable[Ref]) -> None:
        """Keep artifacts from expiring while ``run_id`` lives (until :meth:`unpin`).

        Ids that are not stored are ignored.
        """
        ids = [normalize_id(r) for r in refs]
        if ids:
            self.flush()  # before the pin lock is taken (a backend call would flush under it)
            self._pin(run_id, ids)
            self._note_pins(run_id, ids)

    def unpin(self, run_id: str) -> None:
        """Release a run's pins: artifacts get the default TTL back, unless another run pins them.
        Deferred puts are stored first (Redis: in the same round trip)."""
        try:
            with self._taking_deferred() as batch:
                self._unpin(run_id, batch)
        finally:
            lost = self._lost.pop(run_id, None)
        with self._pin_lock:
            self._pins.pop(run_id, None)
        if lost is not None:
            raise ArtifactError(f"outputs of run {run_id!r} were not stored (a batch of deferred writes failed: "
                                f"{lost})") from lost

    def _note_pins(self, run_id: str, ids: Iterable[str]) -> None:
        """Remember what live runs of this process pin (for every backend: :meth:`load` trusts it)."""
        with self._pin_lock:
            self._pins.setdefault(run_id, set()).update(ids)

    def _pinned_here(self, artifact_id: str) -> bool:
        with self._pin_lock:
            return any(artifact_id in held for held in self._pins.values())

    @contextlib.contextmanager
    def pinned(self, run_id: str) -> Iterator[PinSet]:
        """``with store.pinned(run_id) as pins: pins.add(ref)`` — released when the block ends."""
        pins = PinSet(self, run_id)
        try:
            yield pins
        finally:
            self.unpin(run_id)

    def _pin(self, run_id: str, ids: list[str]) -> None:
        """Pins kept in this process; a backend shared by processes overrides this pair."""
        with self._pin_lock:
            for artifact_id in ids:
                if not any(artifact_id in held for held in self._pins.values()):  # else a live pin keeps it
                    self._keep(artifact_id)

    def _write_pinned(self, pending: PendingRef, data: bytes, run_id: str) -> ArtifactRef:
        """:meth:`_write` with no TTL (pinned); a backend shared by processes also records the pin."""
        return self._write(pending, data, None)

    def _keep(self, artifact_id: str) -> bool:
        """Remove an artifact's TTL for a pin; a backend may skip what has none."""
        return self._expire(artifact_id, None)

    def _unpin(self, run_id: str, deferred: list[DeferredWrite]) -> None:
        """Store ``deferred`` (see :meth:`_write_deferred`), then release the run's pins."""
        if deferred:
            self._write_deferred(deferred)
        with self._pin_lock:
            ids = self._pins.pop(run_id, set())
            still = set().union(*self._pins.values()) if self._pins else set()
            if self.default_ttl is None:
                return
            for artifact_id in ids - still:
                self._expire(artifact_id, self.default_ttl)

    # -------------------------------------------------- async twins
    async def aput(self, obj: Any, **kwargs: Any) -> ArtifactRef:
        return await asyncio.to_thread(self.put, obj, **kwargs)

    async def aget_bytes(self, ref: Ref) -> bytes:
        return await asyncio.to_thread(self.get_bytes, ref)

    async def aload(self, ref: Ref) -> Any:
        return await asyncio.to_thread(self.load, ref)

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

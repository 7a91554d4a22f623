"""`LocalArtifactStore`: the embedded default, a content-addressed directory.

Layout under ``root``::

    blobs/ab/<hex>.json        the ArtifactRef, the writer's token, ``expires_at``
    blobs/ab/<hex>.<token>     canonical bytes, written by that writer (bytes up to
                               ``inline_bytes`` ride in the .json document instead, base64)
    records/<ns>/<key>.json    {"value": ..., "expires_at": ...}
    events/<stream>.jsonl      one JSON event per line; line n is event n
    tmp/                       files being written (renamed into place)

A writer writes its bytes to its own file, then links the ref in exclusively
(first writer wins; a loser removes its file). A reader resolves the ref first,
so it only ever opens one writer's complete file. Expired entries are removed
lazily, when next touched. Every OS error becomes :class:`StoreUnavailable`.

A batch of small deferred puts is written as *packs*: one file holding several
ref documents (its first line indexes them by id), hard-linked in as each one's
``<hex>.json`` (making a file costs several times what linking one does). A
reader parses only its own document; a TTL change or a delete replaces or
removes that one name.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from orchestrator.errors import ArtifactNotFound, StoreUnavailable

from ._ref import ArtifactRef, Modality, normalize_id
from .store import ArtifactStore, DeferredWrite, PendingRef, shared_pool, writing_deferred

__all__ = ["LocalArtifactStore"]

F = TypeVar("F", bound=Callable[..., Any])
INLINE_BYTES = 4096
"""Artifacts up to this size live inside their ref document (one file per artifact, not two)."""
PACK_BYTES = 16 << 10
"""A pack of small deferred puts holds ref documents up to about this many bytes (what a reader of one reads)."""
_PACK = b'{"pack":'
WRITE_THREADS = 4
"""Threads that write a batch of deferred puts holding a large artifact side by side: writing a
blob can wait on the disk, and waits overlap. A batch of small ones (one small file each, tens of
microseconds) is written by the flushing thread: handing it to threads costs more than it saves,
milliseconds on a busy machine."""


def _translated(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: LocalArtifactStore, *args: Any, **kwargs: Any) -> Any:
        self._settle()  # deferred puts are stored before anything else reaches the backend
        try:
            return fn(self, *args, **kwargs)
        except OSError as exc:
            raise StoreUnavailable(f"artifact directory {self.root} is unusable: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _append_whole(fd: int, line: bytes, size: int) -> None:
    """Append ``line`` to the file (opened for appending, ``size`` bytes long) entirely or not at
    all: a write cut short (disk full) is undone, so the log never holds half an event."""
    view = memoryview(line)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.ftruncate(fd, size)
        raise


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _parse_refdoc(raw: bytes, artifact_id: str, path: object = "") -> dict[str, Any]:
    """A ref document, or the one for ``artifact_id`` in a pack; raises StoreUnavailable if corrupt."""
    try:
        if not raw.startswith(_PACK):
            return json.loads(raw)  # type: ignore[no-any-return]
        end = raw.index(b"\n")
        start, stop = json.loads(raw[:end])["pack"][artifact_id]
        return json.loads(raw[end + 1 + start : end + 1 + stop])  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError) as exc:
        where = f"{path} ({'a pack of small artifacts' if raw.startswith(_PACK) else 'its ref document'}, " \
                f"{len(raw)} bytes)" if path else "its ref document"
        raise StoreUnavailable(f"artifact metadata is corrupt in {where}: {exc}", artifact_id=artifact_id) from exc


def _refdoc(ref: ArtifactRef | str, *, token: str | None, expires_at: float | None,
            inline: bytes | None = None) -> bytes:
    """A ref document (the ref serialized by pydantic, or its JSON as the put made it; the rest by
    hand: this runs on every put)."""
    parts = [b'{"ref":', (ref if isinstance(ref, str) else ref.model_dump_json()).encode(),
             b',"token":', b"null" if token is None else json.dumps(token).encode()]
    if inline is not None:
        parts += [b',"inline":"', inline, b'"']
    parts += [b',"expires_at":', b"null" if expires_at is None else json.dumps(expires_at).encode(), b"}"]
    return b"".join(parts)


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files in a directory (default ``./.orchestrator/artifacts``).

    >>> store = LocalArtifactStore(tmp_path / "artifacts")   # doctest: +SKIP
    >>> store.load(store.put({"a": 1}))                      # doctest: +SKIP
    {'a': 1}
    """

    def __init__(
        self, root: str | os.PathLike[str] = ".orchestrator/artifacts", *, inline_bytes: int = INLINE_BYTES,
        pack_bytes: int = PACK_BYTES, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.inline_bytes = inline_bytes
        self.pack_bytes = pack_bytes  # 0: one file per small deferred put
        self._blobs, self._tmpdir = str(self.root / "blobs"), str(self.root / "tmp")
        self._made: set[str] = set()  # blobs/ab/ folders known to exist
        try:
            for sub in ("blobs", "records", "events", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the artifact directory {self.root}: {exc}") from exc
        self._ref_lock = threading.Lock()  # read-modify-write of ref documents (TTL changes)
        self._event_lock = threading.Lock()
        self._event_counts: dict[Path, tuple[int, int]] = {}  # path -> (file size, events) seen last
        self._event_index: dict[Path, tuple[list[int], int]] = {}  # path -> (line start offsets, bytes indexed)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # -------------------------------------------------- paths and helpers
    def _refname(self, artifact_id: str) -> str:
        hex_ = artifact_id[7:]
        return f"{self._blobs}/{hex_[:2]}/{hex_}.json"

    def _fanout_dir(self, artifact_id: str, *, again: bool = False) -> None:
        """Make ``blobs/ab/`` once per process (not a mkdir and a stat on every put);
        ``again`` after finding it gone (someone emptied the directory)."""
        sub = artifact_id[7:9]
        if again or sub not in self._made:
            os.makedirs(f"{self._blobs}/{sub}", exist_ok=True)
            self._made.add(sub)

    def _link_ref(self, tmp: str, artifact_id: str) -> None:
        """Publish a ref document; raises FileExistsError when another writer was first."""
        try:
            os.link(tmp, self._refname(artifact_id))
        except FileNotFoundError:
            self._fanout_dir(artifact_id, again=True)
            os.link(tmp, self._refname(artifact_id))

    def _refpath(self, artifact_id: str) -> Path:
        hex_ = artifact_id[7:]
        return self.root / "blobs" / hex_[:2] / f"{hex_}.json"

    def _blob(self, artifact_id: str, token: str | None) -> Path:
        hex_ = artifact_id[7:]
        return self.root / "blobs" / hex_[:2] / (f"{hex_}.{token}" if token else hex_)

    def _tmpfile(self, data: bytes | memoryview) -> str:
        name = f"{self._tmpdir}/{os.urandom(8).hex()}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as mkstemp, without its Python overhead
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        os.close(fd)
        return name

    def _replace(self, path: Path, data: bytes) -> None:
        tmp = self._tmpfile(data)
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise

    @staticmethod
    def _expires(ttl: float | None) -> float | None:
        return time.time() + ttl if ttl is not None else None

    def _load_refdoc(self, artifact_id: str) -> dict[str, Any] | None:
        try:
            name = self._refname(artifact_id)
            with open(name, "rb") as f:  # plain strings: this runs on every access
                doc = _parse_refdoc(f.read(), artifact_id, name)
        except FileNotFoundError:
            return None
        exp = doc.get("expires_at")
        if exp is not None and exp <= time.time():
            self._delete(artifact_id)
            return None
        return doc

    # -------------------------------------------------- artifacts
    @_translated
    def _write(self, pending: PendingRef, data: bytes, ttl: float | None) -> ArtifactRef:
        if len(data) <= self.inline_bytes:
            return self._write_inline(pending, data, ttl)
        tmp = self._tmpfile(data)  # while the hash is computed
        try:
            ref = pending.result()
            existing = self._load_refdoc(ref.id)
            if existing is not None:
                return self._extend(ref.id, existing, ttl)
            token = uuid.uuid4().hex[:12]
            blob = self._blob(ref.id, token)
            self._fanout_dir(ref.id, again=True)  # large blobs: one mkdir is nothing next to the write
            os.replace(tmp, blob)
        finally:
            _unlink(tmp)
        tmp = self._tmpfile(_refdoc(pending.json(), token=token, expires_at=self._expires(ttl)))
        try:
            self._link_ref(tmp, ref.id)  # exclusive: the first writer wins
            return ref
        except FileExistsError:
            blob.unlink(missing_ok=True)
        finally:
            _unlink(tmp)
        existing = self._load_refdoc(ref.id)
        return self._extend(ref.id, existing, ttl) if existing is not None else self._write(pending, data, ttl)

    def _write_deferred(self, batch: list[DeferredWrite]) -> None:
        """The batch's files written here (small ones in packs), or by ``WRITE_THREADS`` threads side
        by side when it holds a large artifact (see ``WRITE_THREADS``)."""
        small = all(len(item.data) <= self.inline_bytes for item in batch)
        if small and self.pack_bytes and len(batch) > 1:
            return self._write_packs(batch)
        if small or len(batch) == 1:
            return super()._write_deferred(batch)

        def write(item: DeferredWrite) -> None:
            with writing_deferred():
                super(LocalArtifactStore, self)._write_deferred([item])

        for _ in shared_pool("orch-store-write", WRITE_THREADS).map(write, batch):
            pass  # the first that failed raises here

    @_translated
    def _write_packs(self, batch: list[DeferredWrite]) -> None:
        """Small deferred puts as packs of ref documents (see the module docstring); an id the batch
        holds twice (pinned and not, say) is written once, then kept as a repeated put would be."""
        docs: list[tuple[DeferredWrite, bytes]] = []
        again: list[DeferredWrite] = []
        seen: set[str] = set()
        for item in batch:
            if item.ref.id in seen:
                again.append(item)
                continue
            seen.add(item.ref.id)
            expires = None if item.pin is not None else self._expires(item.ttl)
            docs.append((item, _refdoc(item.ref_json or item.ref, token=None, expires_at=expires,
                                       inline=base64.b64encode(item.data))))
        while docs:
            size, n = 0, 0
            while n < len(docs) and (n == 0 or size + len(docs[n][1]) <= self.pack_bytes):
                size += len(docs[n][1])
                n += 1
            self._write_pack(docs[:n])
            docs = docs[n:]
        if again:
            super()._write_deferred(again)

    def _write_pack(self, docs: list[tuple[DeferredWrite, bytes]]) -> None:
        """One pack file, linked in under each id it holds (an id stored already is kept, its life extended)."""
        index, offset = {}, 0
        for item, doc in docs:
            index[item.ref.id] = (offset, offset + len(doc))
            offset += len(doc)
        tmp = self._tmpfile(b"".join([_PACK, json.dumps(index).encode(), b"}\n", *(doc for _, doc in docs)]))
        try:
            for item, _ in docs:
                self._fanout_dir(item.ref.id)
                while True:
                    try:
                        self._link_ref(tmp, item.ref.id)  # exclusive: the first writer wins
                        break
                    except FileExistsError:
                        existing = self._load_refdoc(item.ref.id)  # an expired one is removed: link again
                        if existing is not None:
                            self._extend(item.ref.id, existing, None if item.pin is not None else item.ttl)
                            break
        finally:
            _unlink(tmp)

    def _write_inline(self, pending: PendingRef, data: bytes, ttl: float | None) -> ArtifactRef:
        """A small artifact: its bytes ride in the ref document, one file written instead of two."""
        ref = pending.result()
        existing = self._load_refdoc(ref.id)
        if existing is not None:
            return self._extend(ref.id, existing, ttl)
        self._fanout_dir(ref.id)
        tmp = self._tmpfile(_refdoc(pending.json(), token=None, expires_at=self._expires(ttl),
                                    inline=base64.b64encode(data)))
        try:
            self._link_ref(tmp, ref.id)  # exclusive: the first writer wins
            return ref
        except FileExistsError:
            pass
        finally:
            _unlink(tmp)
        existing = self._load_refdoc(ref.id)
        return self._extend(ref.id, existing, ttl) if existing is not None else self._write_inline(pending, data, ttl)

    def _blob_bytes(self, artifact_id: str, doc: dict[str, Any]) -> bytes:
        if "inline" in doc:
            return base64.b64decode(doc["inline"])
        try:
            return self._blob(artifact_id, doc.get("token")).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound("artifact was deleted while reading", artifact_id=artifact_id) from None

    def _extend(self, artifact_id: str, doc: dict[str, Any], ttl: float | None) -> ArtifactRef:
        """A repeated put: keep the first ref, make it live at least ``ttl`` more seconds (or forever)."""
        exp, new = doc.get("expires_at"), self._expires(ttl)
        if exp is not None and (new is None or new > exp):
            self._set_expiry(artifact_id, new)
        return ArtifactRef.model_validate(doc["ref"])

    def _set_expiry(self, artifact_id: str, expires_at: float | None, *, keep_unchanged: bool = False) -> bool:
        with self._ref_lock:
            doc = self._load_refdoc(artifact_id)
            if doc is None:
                return False
            if keep_unchanged and doc.get("expires_at") == expires_at:  # pinning what never expires
                return True
            doc["expires_at"] = expires_at
            self._replace(self._refpath(artifact_id), json.dumps(doc).encode())
            return True

    @_translated
    def _read(self, artifact_id: str) -> tuple[Modality, bytes]:
        doc = self._load_refdoc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        return Modality(doc["ref"]["modality"]), self._blob_bytes(artifact_id, doc)

    @_translated
    def _read_range(self, artifact_id: str, start: int, end: int) -> bytes:
        doc = self._load_refdoc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        if "inline" in doc:
            return self._blob_bytes(artifact_id, doc)[start : end + 1]
        try:
            with open(self._blob(artifact_id, doc.get("token")), "rb") as f:
                f.seek(start)
                return f.read(end - start + 1)
        except FileNotFoundError:
            raise ArtifactNotFound("artifact was deleted while reading", artifact_id=artifact_id) from None

    @_translated
    def _read_ref(self, artifact_id: str) -> ArtifactRef | None:
        doc = self._load_refdoc(artifact_id)
        return ArtifactRef.model_validate(doc["ref"]) if doc else None

    @_translated
    def stat_many(self, refs: Iterable[ArtifactRef | str], *, pin: str | None = None) -> list[ArtifactRef | None]:
        ids = [normalize_id(r) for r in refs]
        docs = [self._load_refdoc(i) for i in ids]  # each ref document read once, for the ref and the pin
        if pin is not None:
            held = [i for i, doc in zip(ids, docs, strict=True) if doc is not None]
            expiring = [i for i, doc in zip(ids, docs, strict=True) if doc is not None and doc.get("expires_at") is not None]
            if expiring:  # what never expires needs no rewrite to be kept
                self._pin(pin, expiring)
            self._note_pins(pin, held)
        return [ArtifactRef.model_validate(doc["ref"]) if doc else None for doc in docs]

    @_translated
    def _delete(self, artifact_id: str) -> bool:
        path = self._refpath(artifact_id)
        try:
            doc = _parse_refdoc(path.read_bytes(), artifact_id, path)
            path.unlink()
        except FileNotFoundError:
            return False
        except StoreUnavailable:
            path.unlink(missing_ok=True)
            return True
        if doc.get("token"):
            self._blob(artifact_id, doc["token"]).unlink(missing_ok=True)
        return True

    @_translated
    def _expire(self, artifact_id: str, ttl: float | None) -> bool:
        return self._set_expiry(artifact_id, self._expires(ttl))

    @_translated
    def _keep(self, artifact_id: str) -> bool:
        # a pin rewrites the ref document only when it had an expiry (inputs, outputs and
        # cache hits are pinned on every run; most never expire)
        return self._set_expiry(artifact_id, None, keep_unchanged=True)

    @_translated
    def _ids(self) -> list[str]:
        ids = ["sha256:" + p.name[:-5] for p in (self.root / "blobs").glob("*/*.json")]
        return [i for i in ids if self._load_refdoc(i) is not None]

    @_translated
    def expires_at(self, ref: ArtifactRef | str) -> float | None:
        """When an artifact expires (epoch seconds), ``None`` if never; for inspection and tests."""
        artifact_id = normalize_id(ref)
        doc = self._load_refdoc(artifact_id)
        if doc is None:
            raise ArtifactNotFound("no such artifact", artifact_id=artifact_id)
        return doc.get("expires_at")

    # -------------------------------------------------- records
    def _record_path(self, namespace: str, key: str) -> Path:
        return self.root / "records" / quote(namespace, safe="") / (quote(key, safe="") + ".json")

    @_translated
    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: float | None = None) -> None:
        path = self._record_path(namespace, key)
        folder = f"records/{namespace}"
        if folder not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        try:
            self._replace(path, json.dumps({"value": value, "expires_at": self._expires(ttl)}).encode())
        except FileNotFoundError:  # the folder was removed meanwhile
            path.parent.mkdir(parents=True, exist_ok=True)
            self._replace(path, json.dumps({"value": value, "expires_at": self._expires(ttl)}).encode())

    @_translated
    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        path = self._record_path(namespace, key)
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        if doc.get("expires_at") is not None and doc["expires_at"] <= time.time():
            path.unlink(missing_ok=True)
            return None
        return doc["value"]

    @_translated
    def delete_record(self, namespace: str, key: str) -> bool:
        try:
            self._record_path(namespace, key).unlink()
            return True
        except FileNotFoundError:
            return False

    @_translated
    def list_records(self, namespace: str) -> list[str]:
        folder = self.root / "records" / quote(namespace, safe="")
        keys = sorted(unquote(p.name[:-5]) for p in folder.glob("*.json")) if folder.exists() else []
        return [k for k in keys if self.get_record(namespace, k) is not None]

    # -------------------------------------------------- events
    def _events_path(self, stream: str) -> Path:
        return self.root / "events" / (quote(stream, safe="") + ".jsonl")

    @_translated
    def append_event(self, stream: str, event: dict[str, Any]) -> int:
        return self._append_lines(stream, [event])[-1]

    @_translated
    def append_events(self, stream: str, events: list[dict[str, Any]]) -> list[int]:
        """One write for the whole batch (whole lines, under the log's lock)."""
        return self._append_lines(stream, events) if events else []

    def _append_lines(self, stream: str, events: list[dict[str, Any]]) -> list[int]:
        path = self._events_path(stream)
        self._drop_if_expired(path)
        line = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()
        with self._event_lock, open(path, "ab+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # other processes appending to the same log
            try:
                size = f.seek(0, os.SEEK_END)
                known = self._event_counts.get(path)
                if known is not None and known[0] == size:
                    count = known[1]
                else:  # first append here, or another process wrote: count once
                    f.seek(0)
                    count = sum(1 for _ in f)
                _append_whole(f.fileno(), line, size)
                self._event_counts[path] = (size + len(line), count + len(events))
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return list(range(count + 1, count + len(events) + 1))

    def _drop_if_expired(self, path: Path) -> None:
        marker = path.with_name(path.name + ".expires")
        try:
            expires = float(marker.read_text())
        except (OSError, ValueError):
            return
        if expires <= time.time():
            with self._event_lock:
                path.unlink(missing_ok=True)
                marker.unlink(missing_ok=True)
                self._event_counts.pop(path, None)
                self._event_index.pop(path, None)

    @_translated
    def expire_events(self, stream: str, ttl: float | None) -> None:
        marker = self._events_path(stream).with_name(self._events_path(stream).name + ".expires")
        if ttl is None:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(repr(time.time() + ttl))

    @_translated
    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """Events after ``after``. Line offsets are indexed once, so a follower polling a
        long log reads only what is new instead of the whole file each time."""
        path = self._events_path(stream)
        self._drop_if_expired(path)
        try:
            with open(path, "rb") as f:
                with self._event_lock:
                    starts, indexed = self._event_index.get(path, ([], 0))
                    size = f.seek(0, os.SEEK_END)
                    if size < indexed:  # replaced (expired and begun again): index afresh
                        starts, indexed = [], 0
                    if size > indexed:
                        f.seek(indexed)
                        chunk = f.read(size - indexed)
                        pos = 0
                        while (nl := chunk.find(b"\n", pos)) != -1:  # complete lines only
                            starts.append(indexed + pos)
                            pos = nl + 1
                        indexed += pos
                    self._event_index[path] = (starts, indexed)
                    starts = list(starts)
                if after >= len(starts):
                    return []
                f.seek(starts[after])
                lines = f.read(indexed - starts[after]).splitlines()
        except FileNotFoundError:
            return []
        return [(after + i + 1, json.loads(line)) for i, line in enumerate(lines)]

    def ping(self) -> None:
        probe = self.root / "tmp" / f".ping-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreUnavailable(f"artifact directory {self.root} is not writable: {exc}") from exc

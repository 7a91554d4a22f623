"""`LocalArtifactStore`: the embedded default, a content-addressed directory.

Layout under ``root``::

    blobs/ab/<hex>         canonical bytes
    blobs/ab/<hex>.json    the ArtifactRef plus ``expires_at``
    records/<ns>/<key>.json
    events/<stream>.jsonl

Bytes are written to a temporary file and renamed into place, then the ref is
linked in exclusively (first writer wins), so a reader that finds the ref always
finds complete bytes.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from orchestrator.errors import ArtifactNotFound, StoreUnavailable

from ._ref import ArtifactRef
from .store import ArtifactStore

__all__ = ["LocalArtifactStore"]


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files in a directory (default ``./.orchestrator/artifacts``)."""

    def __init__(self, root: str | os.PathLike[str] = ".orchestrator/artifacts", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        try:
            for sub in ("blobs", "records", "events", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the artifact directory {self.root}: {exc}") from exc
        self._event_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # -------------------------------------------------- paths and helpers
    def _blob(self, artifact_id: str) -> Path:
        hex_ = artifact_id[7:]
        return self.root / "blobs" / hex_[:2] / hex_

    def _refpath(self, artifact_id: str) -> Path:
        p = self._blob(artifact_id)
        return p.with_name(p.name + ".json")

    def _tmpfile(self, data: bytes) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(name)

    @staticmethod
    def _expires(ttl: int | None) -> float | None:
        return time.time() + ttl if ttl is not None else None

    def _load_refdoc(self, artifact_id: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(self._refpath(artifact_id).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(f"cannot read artifact metadata: {exc}", artifact_id=artifact_id) from exc
        exp = doc.get("expires_at")
        if exp is not None and exp <= time.time():
            self._delete(artifact_id)
            return None
        return doc

    # -------------------------------------------------- artifacts
    def _write(self, ref: ArtifactRef, data: bytes, ttl: int | None) -> ArtifactRef:
        existing = self._load_refdoc(ref.id)
        if existing is not None:
            return ArtifactRef.model_validate(existing["ref"])
        blob = self._blob(ref.id)
        try:
            blob.parent.mkdir(exist_ok=True)
            tmp = self._tmpfile(data)
            os.replace(tmp, blob)
            doc = {"ref": ref.model_dump(mode="json"), "expires_at": self._expires(ttl)}
            tmp = self._tmpfile(json.dumps(doc).encode())
            try:
                os.link(tmp, self._refpath(ref.id))  # exclusive: first writer wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write artifact: {exc}", artifact_id=ref.id) from exc
        stored = self._load_refdoc(ref.id)
        return ArtifactRef.model_validate(stored["ref"]) if stored else ref

    def _read(self, artifact_id: str) -> bytes:
        if self._load_refdoc(artifact_id) is None:
            raise ArtifactNotFound("no such artifact (never stored, deleted or expired)", artifact_id=artifact_id)
        try:
            return self._blob(artifact_id).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound("artifact was deleted while reading", artifact_id=artifact_id) from None

    def _read_ref(self, artifact_id: str) -> ArtifactRef | None:
        doc = self._load_refdoc(artifact_id)
        return ArtifactRef.model_validate(doc["ref"]) if doc else None

    def _delete(self, artifact_id: str) -> bool:
        try:
            self._refpath(artifact_id).unlink()
        except FileNotFoundError:
            return False
        self._blob(artifact_id).unlink(missing_ok=True)
        return True

    def _expire(self, artifact_id: str, ttl: int | None) -> bool:
        doc = self._load_refdoc(artifact_id)
        if doc is None:
            return False
        doc["expires_at"] = self._expires(ttl)
        tmp = self._tmpfile(json.dumps(doc).encode())
        os.replace(tmp, self._refpath(artifact_id))
        return True

    def _ids(self) -> Iterator[str]:
        for p in (self.root / "blobs").glob("*/*.json"):
            artifact_id = "sha256:" + p.name[:-5]
            if self._load_refdoc(artifact_id) is not None:
                yield artifact_id

    # -------------------------------------------------- records
    def _record_path(self, namespace: str, key: str) -> Path:
        return self.root / "records" / quote(namespace, safe="") / (quote(key, safe="") + ".json")

    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: int | None = None) -> None:
        path = self._record_path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmpfile(json.dumps({"value": value, "expires_at": self._expires(ttl)}).encode())
        os.replace(tmp, path)

    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        path = self._record_path(namespace, key)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        if doc.get("expires_at") is not None and doc["expires_at"] <= time.time():
            path.unlink(missing_ok=True)
            return None
        return doc["value"]

    def delete_record(self, namespace: str, key: str) -> bool:
        try:
            self._record_path(namespace, key).unlink()
            return True
        except FileNotFoundError:
            return False

    def list_records(self, namespace: str) -> list[str]:
        folder = self.root / "records" / quote(namespace, safe="")
        keys = sorted(unquote(p.name[:-5]) for p in folder.glob("*.json")) if folder.exists() else []
        return [k for k in keys if self.get_record(namespace, k) is not None]

    # -------------------------------------------------- events
    def append_event(self, stream: str, event: dict[str, Any]) -> int:
        path = self.root / "events" / (quote(stream, safe="") + ".jsonl")
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._event_lock, open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                seq = sum(1 for _ in f) + 1
                f.write(line)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return seq

    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        path = self.root / "events" / (quote(stream, safe="") + ".jsonl")
        if not path.exists():
            return []
        out = []
        with open(path) as f:
            for i, line in enumerate(f, start=1):
                if i > after and line.endswith("\n"):
                    out.append((i, json.loads(line)))
        return out

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StoreUnavailable(f"artifact directory {self.root} is not writable")

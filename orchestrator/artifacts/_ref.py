"""`ArtifactRef`: the small, serializable handle that crosses every boundary."""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Modality(StrEnum):
    """What an artifact holds; each has one canonical encoding."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    EMBEDDING = "embedding"
    JSON = "json"


CANONICAL_MIME: dict[Modality, str] = {
    Modality.TEXT: "text/plain; charset=utf-8",
    Modality.IMAGE: "image/png",
    Modality.AUDIO: "audio/wav",
    Modality.VIDEO: "video/mp4",
    Modality.EMBEDDING: "application/x-npy",
    Modality.JSON: "application/json",
}

EXTENSION: dict[Modality, str] = {
    Modality.TEXT: ".txt",
    Modality.IMAGE: ".png",
    Modality.AUDIO: ".wav",
    Modality.VIDEO: ".mp4",
    Modality.EMBEDDING: ".npy",
    Modality.JSON: ".json",
}


class Provenance(BaseModel):
    """Which node, tool, model and seed produced an artifact."""

    model_config = ConfigDict(extra="allow")

    tool: str | None = None
    tool_version: str | None = None
    node: str | None = None
    model: str | None = None
    seed: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)


class ArtifactMeta(BaseModel):
    """Media facts read off the canonical bytes, plus provenance."""

    model_config = ConfigDict(extra="allow")

    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration: float | None = None
    fps: float | None = None
    frames: int | None = None
    has_audio: bool | None = None
    shape: list[int] | None = None
    provenance: Provenance | None = None


class ArtifactRef(BaseModel):
    """A reference to stored bytes: content hash, modality, MIME type, size, metadata.

    >>> ref = ArtifactRef.for_bytes(b"hi", Modality.TEXT)
    >>> ref.id[:7], ref.size
    ('sha256:', 2)
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    modality: Modality
    mime: str
    size: int = Field(ge=0)
    meta: ArtifactMeta = Field(default_factory=ArtifactMeta)

    @property
    def hex(self) -> str:
        return self.id.split(":", 1)[1]

    @property
    def extension(self) -> str:
        return EXTENSION[self.modality]

    @classmethod
    def for_bytes(cls, data: bytes, modality: Modality | str, meta: ArtifactMeta | None = None) -> ArtifactRef:
        modality = Modality(modality)
        return cls(
            id=content_id(data),
            modality=modality,
            mime=CANONICAL_MIME[modality],
            size=len(data),
            meta=meta or ArtifactMeta(),
        )


def content_id(data: bytes | memoryview) -> str:
    """``sha256:<hex>`` of the canonical bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def normalize_id(ref_or_id: ArtifactRef | str) -> str:
    """Accept a ref, ``sha256:<hex>`` or a bare 64-hex digest; return ``sha256:<hex>``."""
    if isinstance(ref_or_id, ArtifactRef):
        return ref_or_id.id  # checked when the ref was made
    value = str(ref_or_id)
    if value.startswith("sha256:"):
        value = value[7:]
    if _HEX64.fullmatch(value) is None:
        from orchestrator.errors import ArtifactNotFound

        raise ArtifactNotFound("not an artifact id (expected sha256:<64 hex digits>)", artifact_id=str(ref_or_id)[:80])
    return "sha256:" + value

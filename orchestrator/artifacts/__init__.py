"""Artifacts: refs, codecs and the content-addressed stores (Redis or a directory)."""

from __future__ import annotations

from ._local import LocalArtifactStore
from ._redis import RedisArtifactStore
from ._ref import CANONICAL_MIME, ArtifactMeta, ArtifactRef, Modality, Provenance, content_id, normalize_id
from .codecs import Audio, Encoded, Limits, Video, canonicalize, decode, encode, infer_modality, sniff
from .store import ArtifactStore, DecodedCache

__all__ = [
    "CANONICAL_MIME",
    "ArtifactMeta",
    "ArtifactRef",
    "ArtifactStore",
    "Audio",
    "DecodedCache",
    "Encoded",
    "Limits",
    "LocalArtifactStore",
    "Modality",
    "Provenance",
    "RedisArtifactStore",
    "Video",
    "canonicalize",
    "content_id",
    "decode",
    "encode",
    "infer_modality",
    "normalize_id",
    "open_store",
    "sniff",
]


def open_store(settings: object | None = None) -> ArtifactStore:
    """The store the settings name: Redis when ``redis_url`` is set, else the embedded directory."""
    from orchestrator.settings import Settings, get_settings

    s: Settings = settings if isinstance(settings, Settings) else get_settings()
    limits = Limits.from_settings(s)
    common = {"limits": limits, "decoded_cache_bytes": s.decoded_cache_bytes, "default_ttl": s.artifact_ttl_seconds,
              "write_behind_bytes": s.write_behind_bytes}
    if s.redis_url:
        return RedisArtifactStore(s.redis_url, prefix=s.key_prefix, chunk_bytes=s.chunk_bytes, **common)
    return LocalArtifactStore(s.artifacts_dir, **common)

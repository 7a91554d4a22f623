"""Run and chat inputs: artifact ids, text, inline base64, data: URLs and http(s) URLs -> refs.

Everything a client sends is decoded and validated by the store's codecs before it
is stored (``store.put`` refuses corrupt bytes without writing anything), and URLs
go through the project's downloader with its limits (scheme, private addresses,
size, timeouts). Problems are :class:`~orchestrator.errors.WorkflowInputError`
naming the input.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from orchestrator.artifacts import ArtifactRef, ArtifactStore, Modality, sniff
from orchestrator.errors import (
    ArtifactError,
    ArtifactNotFound,
    DownloadError,
    OrchestratorError,
    WorkflowInputError,
)

from .schemas import InputValue

__all__ = ["check_url", "decode_base64", "fetch_url", "mislabelled", "modality_for_mime", "parse_data_url",
           "resolve_input"]

logger = logging.getLogger("orchestrator.server")

_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.DOTALL)


def modality_for_mime(mime: str | None) -> Modality | None:
    """The modality a MIME type names, or ``None``."""
    if not mime:
        return None
    mime = mime.split(";", 1)[0].strip().lower()
    major = mime.split("/", 1)[0]
    if major in ("image", "audio", "video"):
        return Modality(major)
    if mime in ("application/json",):
        return Modality.JSON
    if mime in ("application/x-npy",):
        return Modality.EMBEDDING
    if major == "text":
        return Modality.TEXT
    return None


_AV = frozenset({Modality.AUDIO, Modality.VIDEO})


def mislabelled(data: bytes, mime: str | None) -> str | None:
    """Why bytes disagree with their declared MIME type (a PNG declared ``audio/wav``), or ``None``.

    An absent or generic type (``application/octet-stream``) is no disagreement, nor is
    audio vs video for containers that hold either (MP4, Matroska/WebM, Ogg)."""
    declared = modality_for_mime(mime)
    detected = sniff(data)
    if declared is None or detected is None or declared is detected:
        return None
    head = bytes(data[:12])
    if {declared, detected} == _AV and (head[4:8] == b"ftyp" or head.startswith((b"\x1aE\xdf\xa3", b"OggS"))):
        return None
    plain = (mime or "").split(";", 1)[0].strip()
    return (f"the bytes are declared {plain!r} ({declared.value}) but they are {detected.value}; "
            "send the right type, or application/octet-stream")


def decode_base64(text: str, *, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace ignored."""
    cleaned = re.sub(r"\s+", "", text)
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned)
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WorkflowInputError(f"{what} is not valid base64: {exc}") from exc


def parse_data_url(url: str, *, what: str = "data URL") -> tuple[str | None, bytes]:
    """``data:[<mime>][;base64],<data>`` -> (mime or None, bytes)."""
    m = _DATA_URL.match(url)
    if m is None:
        raise WorkflowInputError(f"{what} is not a valid data: URL (expected data:<mime>;base64,<data>)")
    params = [p.strip().lower() for p in m.group("params").split(";") if p.strip()]
    data = m.group("data")
    raw = decode_base64(data, what=what) if "base64" in params else unquote_to_bytes(data)
    return (m.group("mime") or None), raw


def _pick_modality(data: bytes, declared: Modality | None, explicit: str | None, mime: str | None) -> Modality:
    if declared is not None:
        return declared
    if explicit is not None:
        return Modality(explicit)
    sniffed = sniff(data)
    if sniffed is not None:
        return sniffed
    by_mime = modality_for_mime(mime)
    if by_mime is not None:
        return by_mime
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise WorkflowInputError("cannot tell what these bytes are; give a modality") from None
    return Modality.TEXT


def check_url(name: str, url: str, *, core_settings: Any) -> None:
    """Refuse a URL input the downloader would refuse (scheme, non-public address) now, as the
    client's error, rather than when the run fetches it (blocking: run it in a thread)."""
    try:
        from tools.downloaders import check_url as policy
    except ImportError:  # fetch_url reports it when the run starts
        return
    try:
        policy(url, settings=core_settings)
    except DownloadError as exc:
        raise WorkflowInputError(f"input {name!r}: {exc.message}", input=name, url=url[:200]) from exc


def fetch_url(url: str, *, modality: Modality | None, store: ArtifactStore, core_settings: Any,
              max_bytes: int | None) -> ArtifactRef:
    """Fetch an http(s) URL with the project's downloader (``tools.downloaders.fetch``:
    scheme and address policy, size cap, timeouts) and store the validated bytes."""
    try:
        from tools.downloaders import fetch
    except ImportError as exc:
        raise DownloadError("URL inputs need the downloader (tools/downloaders.py), which is not installed", url=url) from exc
    if modality is None:
        guessed, _ = mimetypes.guess_type(urlsplit(url).path)
        modality = modality_for_mime(guessed)
        if modality is None:
            raise WorkflowInputError(f"cannot tell what {url[:200]!r} holds from its name; give a modality")
    data, _content_type = fetch(url, modality=modality, settings=core_settings, max_bytes=max_bytes)
    return store.put(data, modality=modality)


def resolve_input(
    name: str,
    value: str | InputValue | dict[str, Any],
    *,
    declared: Modality | None,
    store: ArtifactStore,
    core_settings: Any = None,
    max_bytes: int | None = None,
) -> ArtifactRef:
    """One input value -> a stored, validated ref (blocking: run it in a thread).

    ``declared`` is the modality the workflow expects (None for agent runs, where
    the modality comes from the value, its MIME type or its bytes).
    """
    what = f"input {name!r}"
    if isinstance(value, dict):
        value = InputValue.model_validate(value)
    if isinstance(value, str):
        value = InputValue(artifact_id=value) if value.startswith("sha256:") else InputValue(text=value)
    try:
        if value.artifact_id is not None:
            ref = store.stat(value.artifact_id)
        elif value.text is not None:
            if declared not in (None, Modality.TEXT):
                raise WorkflowInputError(f"{what} expects {declared.value}, got text")
            ref = store.put(value.text, modality=Modality.TEXT)
        elif value.base64 is not None:
            data = decode_base64(value.base64, what=what)
            ref = store.put(data, modality=_pick_modality(data, declared, value.modality, None))
        else:
            url = value.url or ""
            if url.startswith("data:"):
                mime, data = parse_data_url(url, what=what)
                problem = mislabelled(data, mime)
                if problem:
                    raise WorkflowInputError(f"{what}: {problem}", input=name)
                ref = store.put(data, modality=_pick_modality(data, declared, value.modality, mime))
            elif url.lower().startswith(("http://", "https://")):
                hint = declared or (Modality(value.modality) if value.modality else None)
                ref = fetch_url(url, modality=hint, store=store, core_settings=core_settings, max_bytes=max_bytes)
            else:
                raise WorkflowInputError(f"{what}: only http(s) and data: URLs are accepted")
    except WorkflowInputError as exc:
        if exc.message.startswith(what):
            raise
        raise WorkflowInputError(f"{what}: {exc.message}", input=name) from exc
    except ArtifactNotFound as exc:
        raise WorkflowInputError(f"{what}: {exc.message}", input=name, artifact_id=exc.context.get("artifact_id")) from exc
    except ArtifactError as exc:
        raise type(exc)(f"{what}: {exc.message}", **exc.context) from exc
    except OrchestratorError:
        raise
    if declared is not None and ref.modality is not declared:
        raise WorkflowInputError(f"{what} expects {declared.value}, got a {ref.modality.value} artifact", input=name)
    return ref

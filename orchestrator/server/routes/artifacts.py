"""``/v1/artifacts``: upload (validated before storing), download with HTTP Range, metadata.

Artifact ids are content hashes (``sha256:<hex>``, or the bare hex); a download
only ever looks an id up in the store, never a client-given path. With API keys on,
the URLs the server hands out are signed (``?expires=&sig=``, see ``_signing``), so a
browser loads them without the key; ``/link`` makes a fresh one.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from orchestrator.artifacts import ArtifactRef, Modality, sniff
from orchestrator.errors import ArtifactDecodeError, ArtifactError, ArtifactTooLarge

from .._errors import ApiError
from .._inputs import mislabelled, modality_for_mime
from .._state import ServerState, get_state
from ..schemas import ArtifactView

__all__ = ["parse_range", "router"]

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MODALITIES = [m.value for m in Modality]


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (start, end).

    Returns None when the header should be ignored (malformed or several ranges:
    the full body is sent); raises ``ValueError`` when it cannot be satisfied.
    """
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or (last and end < start):
        raise ValueError("range starts past the end")
    return start, min(end, size - 1)


def _pick_modality(declared: str | None, content_type: str | None, filename: str | None, data: bytes) -> Modality:
    if declared:
        if declared not in _MODALITIES:
            raise ApiError(422, f"modality must be one of {_MODALITIES}, got {declared!r}", type="BadModality")
        return Modality(declared)
    sniffed = sniff(data)
    by_type = modality_for_mime(content_type)
    if sniffed is not None:
        problem = mislabelled(data, content_type)
        if problem:
            raise ApiError(422, f"upload: {problem}", type="ArtifactDecodeError",
                           declared=(content_type or "").split(";", 1)[0].strip(), detected=sniffed.value)
        return sniffed
    if by_type is not None and content_type not in ("application/octet-stream",):
        return by_type
    if filename:
        import mimetypes

        by_name = modality_for_mime(mimetypes.guess_type(filename)[0])
        if by_name is not None:
            return by_name
    raise ApiError(422, "cannot tell what the upload is (no known image, audio or video format); give modality=",
                   type="ArtifactDecodeError")


@router.post("", status_code=201, response_model=ArtifactView, summary="Upload an artifact")
async def upload(request: Request, modality: str | None = Query(None, description=f"one of {_MODALITIES}"),
                 state: ServerState = Depends(get_state)) -> JSONResponse:
    """Upload media as ``multipart/form-data`` (field ``file``, optional field ``modality``) or
    as the raw request body (its ``Content-Type`` or ``?modality=`` says what it is).

    The bytes are decoded and validated first (corrupt or mislabelled: 422; over a size,
    pixel or duration limit: 413) and stored only if they pass. Foreign formats (JPEG,
    FLAC, WebM …) are converted to the canonical one, whose hash is the id.
    """
    content_type = request.headers.get("content-type", "")
    filename = None
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise ApiError(422, "multipart upload needs a file field named 'file'", type="BadUpload")
        data = await file.read()
        filename = file.filename
        declared = modality or (form.get("modality") if isinstance(form.get("modality"), str) else None)
        part_type = file.content_type
    else:
        data = await request.body()
        declared, part_type = modality, content_type
    if len(data) > state.settings.max_upload_bytes:
        state.metrics.uploads.labels("too_large").inc()
        raise ApiError(413, f"upload is {len(data)} bytes, over the {state.settings.max_upload_bytes}-byte limit",
                       type="ArtifactTooLarge", limit=state.settings.max_upload_bytes)
    if not data:
        state.metrics.uploads.labels("invalid").inc()
        raise ApiError(422, "upload is empty", type="ArtifactDecodeError")
    kind = _pick_modality(declared, part_type, filename, data)
    try:
        ref: ArtifactRef = await asyncio.to_thread(state.store.put, data, modality=kind)
    except ArtifactTooLarge:
        state.metrics.uploads.labels("too_large").inc()
        raise
    except (ArtifactDecodeError, ArtifactError):
        state.metrics.uploads.labels("invalid").inc()
        raise
    state.metrics.uploads.labels("stored").inc()
    return JSONResponse(state.artifact_view(request, ref), status_code=201, headers={"Location": f"/v1/artifacts/{ref.id}"})


@router.get("/{artifact_id}/meta", response_model=ArtifactView, summary="An artifact's ref and metadata")
async def meta(artifact_id: str, request: Request, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    ref = await asyncio.to_thread(state.store.stat, artifact_id)
    return state.artifact_view(request, ref)


@router.get("/{artifact_id}/link", summary="A fresh signed download link (works without the key until it expires)")
async def link(artifact_id: str, request: Request, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """``{"url", "expires_at"}``; without API keys on the server the plain download URL (no expiry)."""
    ref = await asyncio.to_thread(state.store.stat, artifact_id)
    url = f"{state.base_url(request)}/v1/artifacts/{ref.id}"
    if state.signer is None:
        return {"id": ref.id, "url": url, "expires_at": None}
    query = state.signer.query(ref.id)
    return {"id": ref.id, "url": f"{url}?expires={query['expires']}&sig={query['sig']}",
            "expires_at": int(query["expires"])}


@router.head("/{artifact_id}", include_in_schema=False)
@router.get("/{artifact_id}", summary="Download an artifact (HTTP Range supported)",
                  responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"},
                             416: {"description": "Range not satisfiable"}})
async def download(artifact_id: str, request: Request, download: bool = Query(False, description="as an attachment"),
                   state: ServerState = Depends(get_state)) -> Response:
    """The canonical bytes with their MIME type. ``Range: bytes=a-b`` answers 206 with
    ``Content-Range`` (what audio and video players need); the ETag is the content hash."""
    ref = await asyncio.to_thread(state.store.stat, artifact_id)
    etag = f'"{ref.hex}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{"attachment" if download else "inline"}; filename="{ref.hex[:16]}{ref.extension}"',
    }
    if_none = request.headers.get("if-none-match")
    if if_none and (if_none.strip() == "*" or etag in [t.strip() for t in if_none.split(",")]):
        return Response(status_code=304, headers=headers)
    size = ref.size
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (not if_range or if_range.strip() == etag):
        try:
            span = parse_range(range_header, size)
        except ValueError:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if span is not None:
            start, end = span
            part = await asyncio.to_thread(state.store.get_range, ref, start, end)  # only the asked-for bytes
            state.metrics.downloads.labels("partial").inc()
            return Response(part, status_code=206, media_type=ref.mime,
                            headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"})
    data = await asyncio.to_thread(state.store.get_bytes, ref)
    state.metrics.downloads.labels("full").inc()
    return Response(data, media_type=ref.mime, headers=headers)

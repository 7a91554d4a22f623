"""OpenAI's image endpoints: ``/v1/images/generations`` (JSON) and ``/v1/images/edits`` (multipart).

They run the profile's ``text-to-image`` and ``image-to-image`` tools (see
``_media``). ``n`` images come from ``n`` seeded calls in one run; ``size`` is
``<width>x<height>`` (multiples of 8) or ``auto`` (the profile's size);
``response_format`` is ``url`` (a link to the artifact, signed when keys are on) or
``b64_json`` (the PNG inline; what Open WebUI asks for).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from orchestrator.artifacts import ArtifactRef, Modality

from .._errors import ApiError
from .._media import Call, call_tool, pick_tool, validate_params
from .._state import ServerState, get_state

__all__ = ["ImageRequest", "router"]

router = APIRouter(prefix="/v1/images", tags=["openai media"])

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_PARAM_OF = {"width": "size", "height": "size", "count": "n", "negative_prompt": "negative_prompt"}


class ImageRequest(BaseModel):
    """OpenAI's image-generation request; ``quality``, ``style``, ``user`` … are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=32_000)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=16)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png"] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    negative_prompt: str | None = None


def _size(size: str | None) -> dict[str, int]:
    if size is None or size == "auto":
        return {}
    m = _SIZE.match(size.strip())
    if m is None:
        raise ApiError(400, f"size must be '<width>x<height>' (e.g. '512x512') or 'auto', got {size!r}",
                       type="invalid_request_error", param="size")
    width, height = int(m.group(1)), int(m.group(2))
    if width % 8 or height % 8:
        raise ApiError(400, f"size {size!r}: width and height must be multiples of 8",
                       type="invalid_request_error", param="size")
    return {"width": width, "height": height}


def _check_n(state: ServerState, n: int) -> None:
    if n > state.settings.max_images_per_request:
        raise ApiError(400, f"n is {n}; this server makes at most {state.settings.max_images_per_request} images "
                       "per request (ORCHESTRATOR_MAX_IMAGES_PER_REQUEST)", type="invalid_request_error", param="n")


async def _answer(state: ServerState, request: Request, refs: list[ArtifactRef], fmt: str, run_id: str,
                  prompt: str) -> JSONResponse:
    data: list[dict[str, Any]] = []
    for ref in refs:
        item: dict[str, Any] = {"revised_prompt": prompt}
        if fmt == "b64_json":
            item["b64_json"] = base64.b64encode(await state.store.aget_bytes(ref)).decode()
        else:
            item["url"] = state.artifact_url(request, ref.id)
        item["artifact_id"] = ref.id
        data.append(item)
    return JSONResponse({"created": int(time.time()), "data": data, "run_id": run_id}, headers={"X-Run-Id": run_id})


def _seeds(seed: int | None, n: int) -> list[int | None]:
    return [None if seed is None else seed + i for i in range(n)]


@router.post("/generations", summary="Generate images from a prompt (OpenAI-compatible)")
async def generations(body: ImageRequest, request: Request, state: ServerState = Depends(get_state)) -> JSONResponse:
    # 1. Check inputs
    _check_n(state, body.n)
    tool = pick_tool(state, "/v1/images/generations", body.model)
    params: dict[str, Any] = _size(body.size)
    if body.negative_prompt:
        params["negative_prompt"] = body.negative_prompt
    validate_params(state, tool, params, param_of=_PARAM_OF)
    # 2. One seeded call per image, in one run
    calls = [Call({"text": body.prompt}, params, seed) for seed in _seeds(body.seed, body.n)]
    results, run_id = await call_tool(state, path="/v1/images/generations", tool=tool, calls=calls, outputs=["image"])
    return await _answer(state, request, [r["image"] for r in results], body.response_format or "url", run_id,
                         body.prompt)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a form field, not a file", type="invalid_request_error", param=name)
    return value


def _int_field(form: Any, name: str, default: int) -> int:
    value = _field(form, name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {value[:40]!r}", type="invalid_request_error",
                       param=name) from None


async def read_upload(state: ServerState, file: UploadFile, modality: Modality, *, param: str) -> ArtifactRef:
    """Store an uploaded file as ``modality`` (decoded and validated first; foreign formats converted)."""
    data = await file.read()
    if not data:
        raise ApiError(400, f"{param} is empty", type="invalid_request_error", param=param)
    if len(data) > state.settings.max_upload_bytes:
        raise ApiError(413, f"{param} is {len(data)} bytes, over the {state.settings.max_upload_bytes}-byte limit",
                       type="invalid_request_error", param=param)
    return await asyncio.to_thread(state.store.put, data, modality=modality)


async def multipart_form(request: Request, *, max_files: int) -> Any:
    """The request's form; 415 when the body is not ``multipart/form-data``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, f"send multipart/form-data, got {content_type.split(';')[0] or 'no content type'!r}",
                       type="invalid_request_error")
    return await request.form(max_files=max_files, max_fields=32)


@router.post("/edits", summary="Edit an image following a prompt (OpenAI-compatible, multipart)")
async def edits(request: Request, state: ServerState = Depends(get_state)) -> JSONResponse:
    """Fields: ``image`` (or ``image[]``; PNG, JPEG, WebP …), ``prompt``, optional ``n``, ``size``,
    ``response_format``, ``model``, ``seed``. A ``mask`` is refused: the tool redraws the whole image."""
    # 1. Check inputs
    form = await multipart_form(request, max_files=state.settings.max_images_per_request + 1)
    files = [f for key in ("image", "image[]") for f in form.getlist(key) if not isinstance(f, str)]
    if not files:
        raise ApiError(400, "an image file is required (field 'image')", type="invalid_request_error", param="image")
    if form.get("mask") is not None:
        raise ApiError(400, "mask is not supported: image-to-image redraws the whole image (leave mask out)",
                       type="invalid_request_error", param="mask")
    prompt = (_field(form, "prompt") or "").strip()
    if not prompt:
        raise ApiError(400, "prompt is required", type="invalid_request_error", param="prompt")
    n = _int_field(form, "n", 1)
    if n < 1:
        raise ApiError(400, f"n must be at least 1, got {n}", type="invalid_request_error", param="n")
    _check_n(state, n * len(files))
    fmt = _field(form, "response_format") or "url"
    if fmt not in ("url", "b64_json"):
        raise ApiError(400, f"response_format must be 'url' or 'b64_json', got {fmt[:40]!r}",
                       type="invalid_request_error", param="response_format")
    seed_text = _field(form, "seed")
    seed = _int_field(form, "seed", 0) if seed_text else None
    tool = pick_tool(state, "/v1/images/edits", _field(form, "model"))
    params: dict[str, Any] = _size(_field(form, "size"))
    validate_params(state, tool, params, param_of=_PARAM_OF)
    images = [await read_upload(state, f, Modality.IMAGE, param="image") for f in files]
    # 2. One seeded call per image and copy, in one run
    calls = [Call({"image": image, "text": prompt}, params, s) for image in images for s in _seeds(seed, n)]
    results, run_id = await call_tool(state, path="/v1/images/edits", tool=tool, calls=calls, outputs=["image"])
    return await _answer(state, request, [r["image"] for r in results], fmt, run_id, prompt)

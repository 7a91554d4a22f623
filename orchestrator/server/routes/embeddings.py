"""OpenAI's ``/v1/embeddings``: text (the profile's ``feature-extraction`` tool) and images
(``image-feature-extraction``, where the profile has one), in one shared space.

``input`` is a string or a list of strings; a ``data:image/…`` URL in the list is
embedded as an image. Token-id arrays are refused (there is no shared tokenizer).
``encoding_format`` is ``float`` or ``base64`` (little-endian float32, what the
official client asks for by default). ``dimensions`` keeps the first components,
L2-normalised again.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import ArtifactRef, Modality

from .._errors import ApiError
from .._inputs import parse_data_url
from .._media import Call, call_tool, pick_tool
from .._state import ServerState, get_state

__all__ = ["EmbeddingRequest", "router"]

router = APIRouter(prefix="/v1", tags=["openai media"])


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request (``user`` accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)


def _items(body: EmbeddingRequest, limit: int) -> list[str]:
    raw: Any = body.input
    items = [raw] if isinstance(raw, str) else list(raw)
    if not items:
        raise ApiError(400, "input is empty", type="invalid_request_error", param="input")
    if any(not isinstance(i, str) for i in items):
        raise ApiError(400, "token-id arrays are not supported; send the text itself", type="invalid_request_error",
                       param="input")
    if len(items) > limit:
        raise ApiError(400, f"{len(items)} inputs; the limit is {limit} (ORCHESTRATOR_MAX_EMBEDDING_INPUTS)",
                       type="invalid_request_error", param="input")
    for i, item in enumerate(items):
        if not item.strip():
            raise ApiError(400, f"input[{i}] is empty", type="invalid_request_error", param="input")
    return items


def _vector(values: np.ndarray, dimensions: int | None) -> np.ndarray:
    vec = np.asarray(values, dtype=np.float32).reshape(-1)
    if dimensions is not None:
        if dimensions > vec.shape[0]:
            raise ApiError(400, f"dimensions is {dimensions}; this model's vectors have {vec.shape[0]}",
                           type="invalid_request_error", param="dimensions")
        vec = vec[:dimensions]
        norm = float(np.linalg.norm(vec))
        vec = vec / norm if norm > 0 else vec
    return vec


@router.post("/embeddings", summary="Embed texts (and images) as vectors (OpenAI-compatible)")
async def embeddings(body: EmbeddingRequest, state: ServerState = Depends(get_state)) -> JSONResponse:
    # 1. Check inputs, store images
    items = _items(body, state.settings.max_embedding_inputs)
    text_tool = pick_tool(state, "/v1/embeddings", body.model)
    images: dict[int, ArtifactRef] = {}
    for i, item in enumerate(items):
        if item.startswith("data:image/"):
            _, data = parse_data_url(item, what=f"input[{i}]")
            images[i] = await state.store.aput(data, modality=Modality.IMAGE)
    image_tool = pick_tool(state, "/v1/embeddings#image", None) if images else None
    # 2. Embed: texts in one run, images in another
    vectors: dict[int, np.ndarray] = {}
    run_ids: list[str] = []
    texts = [i for i in range(len(items)) if i not in images]
    for tool, indices, port in ((text_tool, texts, "text"), (image_tool, sorted(images), "image")):
        if not indices or tool is None:
            continue
        calls = [Call({port: images[i] if port == "image" else items[i]}) for i in indices]
        results, run_id = await call_tool(state, path="/v1/embeddings", tool=tool, calls=calls, outputs=["embedding"])
        run_ids.append(run_id)
        for i, result in zip(indices, results):
            vectors[i] = _vector(await state.store.aload(result["embedding"]), body.dimensions)
    # 3. Answer
    data = []
    for i in range(len(items)):
        vec = vectors[i]
        value: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" \
            else [float(x) for x in vec]
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(items[i]) // 4 + 1 for i in texts)
    return JSONResponse({"object": "list", "data": data, "model": body.model or text_tool,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                        headers={"X-Run-Id": ",".join(run_ids)})

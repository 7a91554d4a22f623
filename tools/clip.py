"""CLIP style tools: zero-shot image classification and image / text embeddings.

- ``image.classify`` (``zero-shot-image-classification``): scores an image against
  candidate labels, each put into ``hypothesis_template`` ("a photo of {}.").
- ``image.embed`` (``image-feature-extraction``) and ``text.embed``
  (``feature-extraction``): the model's projected embeddings, L2-normalised by
  default, as float32 embedding artifacts (``.npy``) of shape ``(dim,)``. Both come
  from the same dual encoder, so an image and a text embedding can be compared with
  a dot product. When the profile has no entry for their own task they use the
  ``zero-shot-image-classification`` checkpoint, which keeps them in one space.

Any ``AutoModel`` with ``get_image_features`` / ``get_text_features`` and a processor
works (CLIP, SigLIP, ALIGN …).

    >>> from tools.clip import embed_images, embed_texts                  # doctest: +SKIP
    >>> float(embed_images([cat])[0] @ embed_texts(["a cat"])[0])
    0.31
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.errors import ToolInputError
from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, batched, encoder, features, rgb, to_device

__all__ = ["ClassifyParams", "EmbedParams", "classify_images", "embed_images", "embed_texts"]

CLASSIFY_TASK = "zero-shot-image-classification"
IMAGE_EMBED_TASK, TEXT_EMBED_TASK = "image-feature-extraction", "feature-extraction"
BACKEND = "transformers.dual-encoder"


def _labels(value: list[str]) -> list[str]:
    labels = [str(v).strip() for v in value]
    if any(not v for v in labels):
        raise ValueError("labels may not be empty strings")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct")
    return labels


def _template(value: str) -> str:
    if "{}" not in value:
        raise ValueError("the template needs a '{}' where the label goes, e.g. 'a photo of {}.'")
    return value


class ClassifyParams(BaseModel):
    """Parameters of ``image.classify``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    labels: list[str] = Field(min_length=1, max_length=1000, description="Candidate labels (at least one).")
    hypothesis_template: str = Field("a photo of {}.", max_length=200, description="Sentence each label is put into.")

    _check_labels = field_validator("labels")(_labels)
    _check_template = field_validator("hypothesis_template")(_template)


class EmbedParams(BaseModel):
    """Parameters of ``image.embed`` and ``text.embed``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    normalize: bool = Field(True, description="L2-normalise (dot product = cosine similarity).")
    batch_size: int = Field(16, ge=1, le=256, description="Items per forward pass.")


def _finish(t: Any, normalize: bool) -> np.ndarray:
    t = t.float()
    if normalize:
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    arr = t.cpu().numpy().astype(np.float32)
    if not np.isfinite(arr).all():
        raise ToolInputError("the model produced non-finite embeddings (NaN or inf)")
    return arr


def _texts(items: Sequence[Any], tool: str, port: str = "text") -> list[str]:
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise ToolInputError(f"text {i} on port {port!r} is empty or not text", tool=tool, port=port)
        out.append(t.strip())
    return out


def embed_images(images: Sequence[Any], params: EmbedParams | Mapping[str, Any] | None = None, *, ctx: Any = None,
                 tool_name: str = "image.embed") -> np.ndarray:
    """``(n, dim)`` float32 image embeddings, ``batch_size`` images per forward pass."""
    p = params if isinstance(params, EmbedParams) else EmbedParams.model_validate(dict(params or {}))
    pictures = [rgb(im, tool=tool_name, ctx=ctx) for im in images]

    def forward(model: Any, processor: Any, chunk: list[Any]) -> Any:
        return model.get_image_features(**to_device(processor(images=chunk, return_tensors="pt"), model))

    return _embed(pictures, p, IMAGE_EMBED_TASK, tool_name, ctx, forward)


def embed_texts(texts: Sequence[str], params: EmbedParams | Mapping[str, Any] | None = None, *, ctx: Any = None,
                tool_name: str = "text.embed") -> np.ndarray:
    """``(n, dim)`` float32 text embeddings in the image embeddings' space."""
    p = params if isinstance(params, EmbedParams) else EmbedParams.model_validate(dict(params or {}))
    items = _texts(texts, tool_name)

    def forward(model: Any, processor: Any, chunk: list[str]) -> Any:
        inputs = processor(text=chunk, return_tensors="pt", padding=True, truncation=True)
        return model.get_text_features(**to_device(inputs, model))

    return _embed(items, p, TEXT_EMBED_TASK, tool_name, ctx, forward)


def _embed(items: list[Any], p: EmbedParams, task: str, tool_name: str, ctx: Any,
           forward: Callable[[Any, Any, list[Any]], Any]) -> np.ndarray:
    """Shared loop of the embed tools: ``forward(model, processor, chunk)`` per batch, stacked ``(n, dim)``."""
    import torch

    enc = encoder(ctx, task, tool_name, p.model, BACKEND, profile_task=CLASSIFY_TASK)
    rows = []
    with enc.use(exclusive=False) as (model, processor):
        for chunk in batched(items, p.batch_size):
            with torch.inference_mode():
                rows.append(_finish(features(forward(model, processor, chunk)), p.normalize))
    return np.concatenate(rows)


def classify_images(
    images: Sequence[Any], params: ClassifyParams | Mapping[str, Any], *, ctx: Any = None
) -> list[list[dict[str, Any]]]:
    """Per image, every label with its probability, best first (softmax over the labels)."""
    import torch

    p = params if isinstance(params, ClassifyParams) else ClassifyParams.model_validate(dict(params))
    pictures = [rgb(im, tool="image.classify", ctx=ctx) for im in images]
    enc = encoder(ctx, CLASSIFY_TASK, "image.classify", p.model, BACKEND)
    prompts = [p.hypothesis_template.format(label) for label in p.labels]
    with enc.use(exclusive=False) as (model, processor):
        inputs = to_device(processor(images=pictures, text=prompts, return_tensors="pt", padding=True, truncation=True), model)
        with torch.inference_mode():
            probs = model(**inputs).logits_per_image.float().softmax(dim=-1).cpu().numpy()
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        out.append([{"label": p.labels[i], "score": round(float(row[i]), 6)} for i in order])
    return out


@tool(
    "image.classify",
    task=CLASSIFY_TASK,
    description="Classify an image among candidate labels given as a param, with no training (zero-shot, CLIP style).",
    inputs={"image": Port(name="image", modality="image", description="The picture to classify.")},
    outputs={
        "label": Port(name="label", modality="text", description="The most likely label."),
        "scores": Port(name="scores", modality="json", description='Every label, best first: [{"label", "score"}].'),
    },
    params=ClassifyParams,
)
def classify_image(image: Any, *, params: ClassifyParams, ctx: ToolContext) -> dict[str, Any]:
    """Image plus candidate labels to the best label and all scores."""
    ranked = classify_images([image], params, ctx=ctx)[0]
    return {"label": ranked[0]["label"], "scores": ranked}


@tool(
    "image.embed",
    task=IMAGE_EMBED_TASK,
    description="Embed an image as a vector (CLIP style; same space as text.embed) for search and similarity.",
    inputs={"image": Port(name="image", modality="image", description="The picture to embed.")},
    outputs={"embedding": Port(name="embedding", modality="embedding", description="float32 vector, L2-normalised by default.")},
    params=EmbedParams,
)
def embed_image(image: Any, *, params: EmbedParams, ctx: ToolContext) -> np.ndarray:
    """Image to embedding."""
    return embed_images([image], params, ctx=ctx)[0]


@tool(
    "text.embed",
    task=TEXT_EMBED_TASK,
    description="Embed a text as a vector in the image embedding space (CLIP style text encoder).",
    inputs={"text": Port(name="text", modality="text", description="The text to embed.")},
    outputs={"embedding": Port(name="embedding", modality="embedding", description="float32 vector, L2-normalised by default.")},
    params=EmbedParams,
)
def embed_text(text: Any, *, params: EmbedParams, ctx: ToolContext) -> np.ndarray:
    """Text to embedding."""
    return embed_texts([text], params, ctx=ctx)[0]

"""Image captioning (``image.caption``, HuggingGPT's ``image-to-text``): BLIP or GIT style.

Any ``AutoModelForImageTextToText`` checkpoint with its processor works (BLIP, GIT,
ViT-GPT2 …). :func:`caption_images` captions many images in batched forward passes;
the tool captions one image, optionally continuing a text prefix ("a photograph of").

    >>> from tools.image_captioning import caption_images               # doctest: +SKIP
    >>> caption_images([img1, img2], {"max_tokens": 20}).texts
    ['a dog on a beach', 'a red car parked on a street']
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, batched, encoder, rgb, to_device

__all__ = ["CaptionParams", "Captions", "caption_images"]

TASK, TOOL, BACKEND = "image-to-text", "image.caption", "transformers.image-to-text"


class CaptionParams(BaseModel):
    """Parameters of ``image.caption``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    max_tokens: int | None = Field(None, ge=1, le=256, description="Longest caption, in tokens (None: profile, else 30).")
    num_beams: int = Field(1, ge=1, le=8, description="Beam search width (1: greedy).")
    prompt: str | None = Field(None, max_length=200, description="Text the caption continues (conditional captioning).")
    batch_size: int = Field(8, ge=1, le=64, description="Images per forward pass (caption_images).")


@dataclass
class Captions:
    """Captions of a batch of images, with the model that wrote them."""

    texts: list[str]
    model: str
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def caption_images(
    images: Sequence[Any],
    params: CaptionParams | Mapping[str, Any] | None = None,
    *,
    ctx: Any = None,
    tool_name: str = TOOL,
) -> Captions:
    """Caption every image, ``params.batch_size`` images per ``generate`` call."""
    import torch

    p = params if isinstance(params, CaptionParams) else CaptionParams.model_validate(dict(params or {}))
    pictures = [rgb(im, tool=tool_name, port="image", ctx=ctx) for im in images]
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    started = time.perf_counter()
    texts: list[str] = []
    passes = 0
    max_tokens = int(enc.option(p, "max_tokens", 30))
    with enc.use() as (model, processor):
        for chunk in batched(pictures, p.batch_size):
            kwargs: dict[str, Any] = {"images": chunk, "return_tensors": "pt"}
            if p.prompt:
                kwargs["text"] = [p.prompt] * len(chunk)
            inputs = to_device(processor(**kwargs), model)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_tokens, num_beams=p.num_beams, do_sample=False)
            texts += [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]
            passes += 1
            if ctx is not None:
                ctx.progress(len(texts), len(pictures))
    return Captions(texts, enc.model, time.perf_counter() - started, {"images": len(pictures), "forward_passes": passes})


@tool(
    TOOL,
    task=TASK,
    description="Describe an image in one sentence (image captioning, BLIP/GIT style).",
    inputs={"image": Port(name="image", modality="image", description="The picture to describe.")},
    outputs={"text": Port(name="text", modality="text", description="The caption.")},
    params=CaptionParams,
)
def caption_image(image: Any, *, params: CaptionParams, ctx: ToolContext) -> str:
    """Image to caption text."""
    return caption_images([image], params, ctx=ctx).texts[0]

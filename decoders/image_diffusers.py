"""Image generation and editing with diffusers (``image.generate``, ``image.edit``).

Any ``AutoPipelineForText2Image`` / ``AutoPipelineForImage2Image`` checkpoint works
(SD 1.5, SD 2.x, SD-Turbo, SDXL …). Several prompts, and ``count`` images per prompt,
go through the pipeline in one batched forward pass; image ``k`` of a call with seed
``s`` is drawn from its own generator seeded ``s + k``, so it is the same image
whether it was made alone or in a batch.

    >>> from decoders.image_diffusers import generate_images      # doctest: +SKIP
    >>> batch = generate_images(["a red fox", "a blue whale"], {"steps": 2}, seed=7)
    >>> [im.size for im in batch.images]
    [(64, 64), (64, 64)]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.errors import ToolInputError
from orchestrator.tool import Port, ToolContext, tool

from ._common import (
    MODEL_FIELD,
    Decoding,
    begin_call,
    check_multiple_of,
    check_range,
    first_and_all,
    generators,
    note_provenance,
    seeded_generators,
    prompts_of,
    step_callback,
)

__all__ = ["EditImageParams", "GenerateImageParams", "ImageBatch", "edit_images", "generate_images"]

T2I_TASK, I2I_TASK = "text-to-image", "image-to-image"
DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_STRENGTH = 25, 7.5, 0.6


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % 8:
        raise ValueError(f"must be a multiple of 8, got {value}")
    return value


class GenerateImageParams(BaseModel):
    """Parameters of ``image.generate``; unset ones come from the profile, then the pipeline."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    negative_prompt: str | None = Field(None, description="What the image should not show.")
    width: int | None = Field(None, ge=8, le=4096, description="Pixels, a multiple of 8.")
    height: int | None = Field(None, ge=8, le=4096, description="Pixels, a multiple of 8.")
    steps: int | None = Field(None, ge=1, le=500, description="Denoising steps.")
    guidance: float | None = Field(None, ge=0.0, le=50.0, description="Classifier-free guidance scale (0 or 1: off).")
    count: int = Field(1, ge=1, le=16, description="Images per prompt.")

    _check_size = field_validator("width", "height")(_multiple_of_8)


class EditImageParams(GenerateImageParams):
    """Parameters of ``image.edit``: ``strength`` is how much of the input is redrawn (1: all)."""

    strength: float | None = Field(None, gt=0.0, le=1.0, description="How much to change the image (0-1].")
    width: int | None = Field(None, ge=8, le=4096, description="Resize the input to this width (multiple of 8).")
    height: int | None = Field(None, ge=8, le=4096, description="Resize the input to this height (multiple of 8).")


@dataclass
class ImageBatch:
    """Images from one call, with the model and settings that made them."""

    images: list[Any]
    model: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _common_settings(d: Decoding, p: GenerateImageParams) -> dict[str, Any]:
    width, height = d.get(p, "width"), d.get(p, "height")
    steps, guidance = d.get(p, "steps", DEFAULT_STEPS), d.get(p, "guidance", DEFAULT_GUIDANCE)
    check_multiple_of(d, "width", width)
    check_multiple_of(d, "height", height)
    check_range(d, "width", width, 8, 4096)
    check_range(d, "height", height, 8, 4096)
    check_range(d, "steps", steps, 1, 500)
    check_range(d, "guidance", guidance, 0.0, 50.0)
    d.settings["count"] = p.count
    if p.negative_prompt:
        d.settings["negative_prompt"] = p.negative_prompt
    return {"width": width, "height": height, "num_inference_steps": int(steps), "guidance_scale": float(guidance)}


def generate_images(
    prompts: list[str],
    params: GenerateImageParams | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    models: Any = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    ctx: Any = None,
    generator_seeds: list[int] | None = None,
) -> ImageBatch:
    """Text to images: every prompt times ``params.count``, in one batched pipeline call.

    ``models`` / ``profile`` default to the context's, then the process defaults.
    ``generator_seeds`` (one per image) replaces ``seed, seed + 1, …`` when calls of several
    callers share the pipeline call (the Ray executor's batching).
    Raises ParamError (bad size, steps …) before any model loads.
    """
    p, ctx, seed, prompts, d = begin_call(GenerateImageParams, params, prompts, task=T2I_TASK, tool="image.generate",
                                          seed=seed, ctx=ctx, progress=progress, models=models, profile=profile)
    kwargs = _common_settings(d, p)
    n = len(prompts) * p.count
    if generator_seeds is not None and len(generator_seeds) != n:
        raise ToolInputError(f"{len(generator_seeds)} generator seeds for {n} images", tool="image.generate")
    started = time.perf_counter()
    with d.models.use(d.choice, "diffusers.text2img") as pipe:
        result = pipe(
            prompt=prompts,
            negative_prompt=[p.negative_prompt] * len(prompts) if p.negative_prompt else None,
            num_images_per_prompt=p.count,
            generator=generators(seed, n) if generator_seeds is None else seeded_generators(generator_seeds),
            callback_on_step_end=step_callback(ctx, kwargs["num_inference_steps"], new_style=True),
            output_type="pil",
            **kwargs,
        )
    images = list(result.images)
    d.settings.update(width=images[0].width, height=images[0].height)
    batch = ImageBatch(images, d.model, seed, dict(d.settings), time.perf_counter() - started)
    note_provenance(ctx, d, seed)
    return batch


def _prepare_input(image: Any, width: int | None, height: int | None, d: Decoding) -> Any:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ToolInputError(f"port 'image' needs an image, got {type(image).__name__}", tool="image.edit")
    img = image.convert("RGB")
    w = width or img.width - img.width % 8
    h = height or img.height - img.height % 8
    if w < 8 or h < 8:
        raise ToolInputError(f"input image is {img.width}x{img.height}; it must be at least 8x8", tool="image.edit")
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    return img


def edit_images(
    images: list[Any],
    prompts: list[str],
    params: EditImageParams | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    models: Any = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    ctx: Any = None,
) -> ImageBatch:
    """Image to images, guided by prompts (one image per prompt, or one image for all)."""
    p, ctx, seed, prompts, d = begin_call(EditImageParams, params, prompts, task=I2I_TASK, tool="image.edit",
                                          seed=seed, ctx=ctx, progress=progress, models=models, profile=profile)
    kwargs = _common_settings(d, p)
    width, height = kwargs.pop("width"), kwargs.pop("height")
    strength = float(d.get(p, "strength", DEFAULT_STRENGTH))
    check_range(d, "strength", strength, 0.01, 1.0)
    if int(kwargs["num_inference_steps"] * strength) < 1:
        raise d.fail("strength", f"steps x strength = {kwargs['num_inference_steps']} x {strength} < 1: "
                                 "no denoising step would run; raise steps or strength")
    if len(images) not in (1, len(prompts)):
        raise ToolInputError(f"{len(images)} images for {len(prompts)} prompts: give one image, or one per prompt",
                             tool="image.edit")
    inputs = [_prepare_input(im, width, height, d) for im in images]
    if len(inputs) == 1 and len(prompts) > 1:
        inputs = inputs * len(prompts)
    if len({im.size for im in inputs}) > 1:
        raise ToolInputError("input images differ in size; set width and height to batch them", tool="image.edit")
    n = len(prompts) * p.count
    started = time.perf_counter()
    with d.models.use(d.choice, "diffusers.img2img") as pipe:
        result = pipe(
            prompt=prompts,
            image=inputs,
            strength=strength,
            negative_prompt=[p.negative_prompt] * len(prompts) if p.negative_prompt else None,
            num_images_per_prompt=p.count,
            generator=generators(seed, n),
            callback_on_step_end=step_callback(ctx, max(1, int(kwargs["num_inference_steps"] * strength)), new_style=True),
            output_type="pil",
            **kwargs,
        )
    out = list(result.images)
    d.settings.update(width=out[0].width, height=out[0].height)
    note_provenance(ctx, d, seed)
    return ImageBatch(out, d.model, seed, dict(d.settings), time.perf_counter() - started)


_IMAGES_PORT = Port(name="images", modality="image", many=True, optional=True,
                    description="Every image, when a call makes more than one (count > 1 or several prompts).")


@tool(
    "image.generate",
    task=T2I_TASK,
    description="Generate an image from a text prompt with a diffusion model (Stable Diffusion family).",
    inputs={"text": Port(name="text", modality="text", description="The prompt (or a list of prompts).")},
    outputs={"image": Port(name="image", modality="image", description="The (first) image."), "images": _IMAGES_PORT},
    params=GenerateImageParams,
    seeded=True,
)
def generate_image(text: Any, *, params: GenerateImageParams, ctx: ToolContext) -> dict[str, Any]:
    """Text to image; several prompts are batched into one forward pass."""
    batch = generate_images(prompts_of(text, "image.generate"), params, ctx=ctx)
    return first_and_all(batch.images, "image", "images")


@tool(
    "image.edit",
    task=I2I_TASK,
    description="Redraw an image following a text prompt (image-to-image diffusion); strength sets how much changes.",
    inputs={
        "image": Port(name="image", modality="image", description="The image to edit."),
        "text": Port(name="text", modality="text", description="What the result should show."),
    },
    outputs={"image": Port(name="image", modality="image", description="The (first) edited image."), "images": _IMAGES_PORT},
    params=EditImageParams,
    seeded=True,
)
def edit_image(image: Any, text: Any, *, params: EditImageParams, ctx: ToolContext) -> dict[str, Any]:
    """Image plus prompt to image."""
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    batch = edit_images(images, prompts_of(text, "image.edit"), params, ctx=ctx)
    return first_and_all(batch.images, "image", "images")

"""Model-backed image tools: ``image.colorize`` and ``image.style_transfer``.

Both load their checkpoint through the model runtime like every encoder (``model``
param, else the profile's choice for the task).

**Colorize** (``image-colorizer``): a diffusion image editor redraws the grey image
in colour, then the result keeps only its colour: its chroma (YCbCr Cb/Cr) is put
under the input's own luminance, so every edge and texture of the input survives
exactly and the model only decides the colours. ``default`` uses InstructPix2Pix
(``timbrooks/instruct-pix2pix``, instruction "colorize this black and white photo");
any image-to-image diffusers checkpoint works too (an SD text-to-image checkpoint is
turned into its image-to-image pipeline with ``from_pipe``, sharing the weights), and
then ``strength`` sets how freely it redraws. ``tiny`` uses a tiny InstructPix2Pix.

**Style transfer** (``image-style-transfer``): Gatys et al.'s neural style transfer.
The output starts as the content image and is optimised (Adam on the pixels) so that
its CNN feature maps match the content image's at a middle layer and their Gram
matrices match the style image's at every layer. Any ``AutoModel`` vision checkpoint
that returns hidden states works; ``default`` uses ``microsoft/resnet-50`` (VGG, the
classic choice, is not in transformers; ResNet features give a flatter style, so
raise ``style_weight`` for bolder results). It runs ``steps`` forward/backward passes:
seconds on a GPU, minutes on a CPU at 512 px.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.errors import ParamError, RunCancelled
from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, encoder, rgb

__all__ = ["ColorizeParams", "StyleTransferParams", "colorize", "style_transfer", "working_size"]

COLORIZE_TASK, COLORIZE_TOOL = "image-colorizer", "image.colorize"
STYLE_TASK, STYLE_TOOL = "image-style-transfer", "image.style_transfer"

PIX2PIX_PROMPT = "colorize this black and white photo with natural, realistic colors"
IMG2IMG_PROMPT = "a color photograph with natural, realistic colors, high detail"
NEGATIVE_PROMPT = "black and white, grayscale, monochrome, sepia, desaturated"


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % 8:
        raise ValueError(f"must be a multiple of 8, got {value}")
    return value


def working_size(width: int, height: int, longest: int, multiple: int = 8) -> tuple[int, int]:
    """``(w, h)`` with the longer side ``longest``, aspect kept, both multiples of ``multiple``."""
    scale = longest / max(width, height)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


# ---------------------------------------------------------------- colorize


class ColorizeParams(BaseModel):
    """Parameters of ``image.colorize``; unset ones come from the profile, then the defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    prompt: str | None = Field(None, max_length=300, description="Instruction or description (None: a colorize prompt).")
    negative_prompt: str | None = Field(NEGATIVE_PROMPT, max_length=300, description="What the colours should not be.")
    steps: int | None = Field(None, ge=1, le=200, description="Denoising steps (default 20).")
    guidance: float | None = Field(None, ge=0.0, le=30.0, description="Text guidance scale (default 7.5).")
    image_guidance: float | None = Field(None, ge=0.0, le=10.0, description="InstructPix2Pix image guidance (default 1.5).")
    strength: float | None = Field(None, gt=0.0, le=1.0, description="Image-to-image models: how freely to redraw (default 0.75).")
    size: int | None = Field(None, ge=64, le=2048, description="Longer side the model works at, multiple of 8 (default 512).")
    keep_luminance: bool = Field(True, description="Keep the input's brightness exactly; take only colour from the model.")

    _check_size = field_validator("size")(_multiple_of_8)


def _editor(pipe: Any) -> tuple[Any, str]:
    """The pipeline as an image editor and its kind: ``"instruct-pix2pix"`` or ``"img2img"``."""
    if "InstructPix2Pix" in type(pipe).__name__:
        return pipe, "instruct-pix2pix"
    params = inspect.signature(type(pipe).__call__).parameters
    if "image" in params and "strength" in params:
        return pipe, "img2img"
    from diffusers import AutoPipelineForImage2Image

    editor = AutoPipelineForImage2Image.from_pipe(pipe)
    editor.set_progress_bar_config(disable=True)
    return editor, "img2img"


def colorize(image: Any, params: ColorizeParams | Mapping[str, Any] | None = None, *, ctx: Any = None) -> Any:
    """A colour version of ``image`` (same size); see the module docstring."""
    import torch
    from PIL import Image

    from decoders._common import resolve_seed, step_callback

    p = params if isinstance(params, ColorizeParams) else ColorizeParams.model_validate(dict(params or {}))
    source = rgb(image, tool=COLORIZE_TOOL, ctx=ctx)
    gray = source.convert("L")
    enc = encoder(ctx, COLORIZE_TASK, COLORIZE_TOOL, p.model, "diffusers")
    steps = int(enc.option(p, "steps", 20))
    strength = float(enc.option(p, "strength", 0.75))
    size = int(enc.option(p, "size", 512))
    seed = resolve_seed(ctx)
    w, h = working_size(source.width, source.height, size)
    with enc.use() as pipe:
        editor, kind = _editor(pipe)
        kwargs: dict[str, Any] = {
            "prompt": p.prompt or (PIX2PIX_PROMPT if kind == "instruct-pix2pix" else IMG2IMG_PROMPT),
            "negative_prompt": p.negative_prompt or None,
            "image": gray.convert("RGB").resize((w, h), Image.Resampling.LANCZOS),
            "num_inference_steps": steps,
            "guidance_scale": float(enc.option(p, "guidance", 7.5)),
            "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": "pil",
        }
        if kind == "instruct-pix2pix":
            kwargs["image_guidance_scale"] = float(enc.option(p, "image_guidance", 1.5))
            total = steps
        else:
            if int(steps * strength) < 1:
                raise ParamError(f"steps x strength = {steps} x {strength} < 1: no denoising step would run",
                                 param="strength", task=COLORIZE_TASK, model=enc.model, tool=COLORIZE_TOOL)
            kwargs["strength"] = strength
            total = int(steps * strength)
        kwargs["callback_on_step_end"] = step_callback(ctx, total, new_style=True)
        painted = editor(**kwargs).images[0].convert("RGB")
    painted = painted.resize(source.size, Image.Resampling.LANCZOS)
    if not p.keep_luminance:
        return painted
    _, cb, cr = painted.convert("YCbCr").split()
    return Image.merge("YCbCr", (gray, cb, cr)).convert("RGB")


@tool(
    COLORIZE_TOOL,
    task=COLORIZE_TASK,
    description="Add colour to a black and white photo with a diffusion model; the input's brightness is kept.",
    inputs={"image": Port(name="image", modality="image", description="A black and white (or any) photo.")},
    outputs={"image": Port(name="image", modality="image", description="The colorized photo, same size.")},
    params=ColorizeParams,
    seeded=True,
)
def colorize_image(image: Any, *, params: ColorizeParams, ctx: ToolContext) -> Any:
    """Grey image to colour image."""
    return colorize(image, params, ctx=ctx)


# ---------------------------------------------------------------- style transfer


class StyleTransferParams(BaseModel):
    """Parameters of ``image.style_transfer``; unset ones come from the profile, then the defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    steps: int | None = Field(None, ge=1, le=2000, description="Optimisation steps (default 200).")
    size: int | None = Field(None, ge=32, le=2048, description="Longer side the optimisation works at (default 512).")
    style_weight: float = Field(1e5, ge=0.0, le=1e12, description="Weight of the style (Gram) loss.")
    content_weight: float = Field(1.0, ge=0.0, le=1e6, description="Weight of the content loss.")
    smoothness_weight: float = Field(0.0, ge=0.0, le=1e6, description="Total-variation weight (less noise).")
    learning_rate: float = Field(0.02, gt=0.0, le=1.0, description="Adam step on pixels in [0, 1].")


def _to_tensor(img: Any, device: Any) -> Any:
    import torch

    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)


def _gram(f: Any) -> Any:
    if f.ndim == 3:  # (B, tokens, C) from a transformer: channels last
        f = f.transpose(1, 2)
    b, c = f.shape[:2]
    flat = f.reshape(b, c, -1)
    return flat @ flat.transpose(1, 2) / flat.shape[-1] / c


def style_transfer(content: Any, style: Any, params: StyleTransferParams | Mapping[str, Any] | None = None, *,
                   ctx: Any = None) -> Any:
    """``content`` repainted in the style of ``style`` (same size as ``content``)."""
    import torch
    from PIL import Image

    p = params if isinstance(params, StyleTransferParams) else StyleTransferParams.model_validate(dict(params or {}))
    # 1. check inputs before anything loads
    content_img = rgb(content, tool=STYLE_TOOL, port="image", ctx=ctx)
    style_img = rgb(style, tool=STYLE_TOOL, port="style", ctx=ctx)
    enc = encoder(ctx, STYLE_TASK, STYLE_TOOL, p.model, "transformers.vision-model")
    steps = int(enc.option(p, "steps", 200))
    w, h = working_size(content_img.width, content_img.height, int(enc.option(p, "size", 512)))
    with enc.use(exclusive=False) as (model, processor):
        device, dtype = model.device, model.dtype
        mean = torch.tensor(getattr(processor, "image_mean", None) or [0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        std = torch.tensor(getattr(processor, "image_std", None) or [0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

        def feature_maps(x: Any) -> list[Any]:
            out = model(pixel_values=((x - mean) / std).to(dtype), output_hidden_states=True)
            return [f.float() for f in out.hidden_states]

        # 2. targets: content features at a middle layer, style Gram matrices at every layer
        c = _to_tensor(content_img.resize((w, h), Image.Resampling.LANCZOS), device)
        s = _to_tensor(style_img.resize((w, h), Image.Resampling.LANCZOS), device)
        with torch.no_grad():
            content_feats = feature_maps(c)
            style_grams = [_gram(f) for f in feature_maps(s)]
        layer = len(content_feats) // 2
        # 3. optimise the pixels (gradients w.r.t. the image only; the shared model is untouched)
        x = c.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=p.learning_rate)
        with torch.enable_grad():
            for step in range(steps):
                if ctx is not None and getattr(ctx, "cancelled", False):
                    raise RunCancelled("cancelled during style transfer", node=getattr(ctx, "node", None))
                feats = feature_maps(x)
                loss = p.content_weight * torch.nn.functional.mse_loss(feats[layer], content_feats[layer])
                loss = loss + p.style_weight * sum(
                    torch.nn.functional.mse_loss(_gram(f), g) for f, g in zip(feats, style_grams, strict=True)
                )
                if p.smoothness_weight:
                    tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
                    loss = loss + p.smoothness_weight * tv
                (grad,) = torch.autograd.grad(loss, x)
                x.grad = grad
                opt.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
                if ctx is not None:
                    ctx.progress(step + 1, steps)
    arr = (x.detach()[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr).resize(content_img.size, Image.Resampling.LANCZOS)


@tool(
    STYLE_TOOL,
    task=STYLE_TASK,
    description="Repaint an image in the visual style of another image (neural style transfer with a CNN).",
    inputs={
        "image": Port(name="image", modality="image", description="The content image."),
        "style": Port(name="style", modality="image", description="The image whose style is applied."),
    },
    outputs={"image": Port(name="image", modality="image", description="The stylised image, same size as the content.")},
    params=StyleTransferParams,
)
def transfer_style(image: Any, style: Any, *, params: StyleTransferParams, ctx: ToolContext) -> Any:
    """Content image plus style image to stylised image."""
    return style_transfer(image, style, params, ctx=ctx)

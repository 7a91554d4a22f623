"""Everyday image edits with PIL: resize, crop, rotate, grayscale, and the TaskBench "Image Stitcher".

Every tool refuses an output over ``max_image_pixels`` (``ORCHESTRATOR_MAX_IMAGE_PIXELS``)
before allocating it, and keeps an alpha channel when the input has one.

>>> from PIL import Image
>>> from orchestrator import get_tool
>>> a, b = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (20, 30), "blue")
>>> get_tool("image.stitch").call({"images": [a, b]}, {"direction": "horizontal"})["image"].size
(60, 30)
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.errors import ToolInputError
from orchestrator.tool import tool

from ._media import as_image, as_list, check_pixels, parse_color

__all__ = ["CropParams", "ResizeParams", "RotateParams", "StitchParams", "stitch_images"]

_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}  # PIL.Image.Resampling values


class ResizeParams(BaseModel):
    """Give ``width`` and/or ``height`` (the other follows the aspect ratio), or ``scale``."""

    model_config = ConfigDict(extra="forbid")

    width: int | None = Field(default=None, ge=1, le=32768)
    height: int | None = Field(default=None, ge=1, le=32768)
    scale: float | None = Field(default=None, gt=0, le=16)
    fit: Literal["stretch", "contain", "cover"] = Field(
        default="contain",
        description="with both width and height: 'stretch' to exactly that size, 'contain' inside it keeping the "
        "aspect (result may be smaller on one side), 'cover' it keeping the aspect and centre-crop the overflow",
    )
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "lanczos"

    @model_validator(mode="after")
    def _one_way(self) -> ResizeParams:
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give either scale or width/height, not both")
        if self.scale is None and self.width is None and self.height is None:
            raise ValueError("give width, height or scale")
        return self


@tool(
    "image.resize",
    task="image-resize",
    description="Resize an image to a width and/or height (keeping aspect unless told) or by a scale factor.",
    inputs={"image": "image"},
    outputs={"image": "image"},
    params=ResizeParams,
)
def resize(image: Any, *, params: ResizeParams, ctx: Any = None) -> Any:
    img = as_image(image, tool="image.resize", port="image", ctx=ctx)
    w, h = img.size
    crop = False
    if params.scale is not None:
        size = (max(1, round(w * params.scale)), max(1, round(h * params.scale)))
    elif params.width is not None and params.height is not None:
        if params.fit == "stretch":
            size = (params.width, params.height)
        else:
            ratio = (min if params.fit == "contain" else max)(params.width / w, params.height / h)
            size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
            crop = params.fit == "cover"
    elif params.width is not None:
        size = (params.width, max(1, round(h * params.width / w)))
    else:
        assert params.height is not None
        size = (max(1, round(w * params.height / h)), params.height)
    check_pixels(size[0], size[1], ctx, tool="image.resize")
    out = img.resize(size, _RESAMPLE[params.resample])
    if crop:
        assert params.width is not None and params.height is not None
        left, top = (size[0] - params.width) // 2, (size[1] - params.height) // 2
        out = out.crop((left, top, left + params.width, top + params.height))
    return out


class CropParams(BaseModel):
    """A box in pixels (``left``, ``top``, ``width``, ``height``) or, with ``relative``, in fractions of the image."""

    model_config = ConfigDict(extra="forbid")

    left: float = Field(default=0, ge=0)
    top: float = Field(default=0, ge=0)
    width: float | None = Field(default=None, gt=0, description="default: to the right edge")
    height: float | None = Field(default=None, gt=0, description="default: to the bottom edge")
    relative: bool = Field(default=False, description="values are fractions (0-1) of the image size")
    clamp: bool = Field(default=True, description="cut a box that overhangs the image to the image (else: error)")


@tool(
    "image.crop",
    task="image-crop",
    description="Crop an image to a box given in pixels or in fractions of its size.",
    inputs={"image": "image"},
    outputs={"image": "image"},
    params=CropParams,
)
def crop(image: Any, *, params: CropParams, ctx: Any = None) -> Any:
    img = as_image(image, tool="image.crop", port="image", ctx=ctx)
    w, h = img.size
    sx, sy = (w, h) if params.relative else (1, 1)
    left, top = round(params.left * sx), round(params.top * sy)
    right = w if params.width is None else left + round(params.width * sx)
    bottom = h if params.height is None else top + round(params.height * sy)
    if left >= w or top >= h:
        raise ToolInputError(f"crop box starts at ({left}, {top}), outside the {w}x{h} image", tool="image.crop")
    if (right > w or bottom > h) and not params.clamp:
        raise ToolInputError(f"crop box ({left}, {top}, {right}, {bottom}) overhangs the {w}x{h} image", tool="image.crop")
    right, bottom = min(right, w), min(bottom, h)
    if right <= left or bottom <= top:
        raise ToolInputError("crop box is empty", tool="image.crop")
    return img.crop((left, top, right, bottom))


class RotateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    degrees: float = Field(default=90.0, ge=-360, le=360, description="counter-clockwise")
    expand: bool = Field(default=True, description="grow the canvas so nothing is cut off")
    background: str = Field(default="black", description="fill for uncovered corners (any CSS colour)")


@tool(
    "image.rotate",
    task="image-rotate",
    description="Rotate an image counter-clockwise by some degrees.",
    inputs={"image": "image"},
    outputs={"image": "image"},
    params=RotateParams,
)
def rotate(image: Any, *, params: RotateParams, ctx: Any = None) -> Any:
    img = as_image(image, tool="image.rotate", port="image", ctx=ctx)
    fill = parse_color(params.background, tool="image.rotate")
    if img.mode == "RGBA":
        fill = (*fill, 0)  # type: ignore[assignment]
    rad = math.radians(params.degrees)
    if params.expand:
        w = abs(img.width * math.cos(rad)) + abs(img.height * math.sin(rad))
        h = abs(img.width * math.sin(rad)) + abs(img.height * math.cos(rad))
        check_pixels(math.ceil(w), math.ceil(h), ctx, tool="image.rotate")
    return img.rotate(params.degrees, resample=3, expand=params.expand, fillcolor=fill)


@tool(
    "image.grayscale",
    task="image-grayscale",
    description="Convert an image to grayscale (luminance), keeping transparency.",
    inputs={"image": "image"},
    outputs={"image": "image"},
)
def grayscale(image: Any, ctx: Any = None) -> Any:
    img = as_image(image, tool="image.grayscale", port="image", ctx=ctx)
    return img.convert("LA" if img.mode == "RGBA" else "L")


class StitchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    direction: Literal["horizontal", "vertical", "grid"] = Field(
        default="horizontal", description="side by side, stacked, or a grid (a collage)"
    )
    columns: int | None = Field(default=None, ge=1, le=64, description="grid columns (default: about a square)")
    match_size: bool = Field(
        default=True,
        description="scale images to a common height (horizontal), width (vertical) or cell (grid), keeping aspect",
    )
    gap: int = Field(default=0, ge=0, le=512, description="pixels between images")
    background: str = Field(default="white", description="colour of gaps and unfilled space")


def stitch_images(images: list[Any], params: StitchParams, ctx: Any = None) -> Any:
    """Stitch PIL images into one (panorama strip or collage grid); the body of ``image.stitch``."""
    from PIL import Image

    name = "image.stitch"
    bg = parse_color(params.background, tool=name)
    has_alpha = any(im.mode == "RGBA" for im in images)
    mode = "RGBA" if has_alpha else "RGB"
    fill = (*bg, 255) if has_alpha else bg
    images = [im.convert(mode) for im in images]
    gap = params.gap
    if params.direction == "horizontal":
        if params.match_size:
            target = min(im.height for im in images)
            images = [_scale_to(im, height=target, ctx=ctx) for im in images]
        width = sum(im.width for im in images) + gap * (len(images) - 1)
        height = max(im.height for im in images)
        check_pixels(width, height, ctx, tool=name)
        canvas = Image.new(mode, (width, height), fill)
        x = 0
        for im in images:
            canvas.paste(im, (x, (height - im.height) // 2))
            x += im.width + gap
        return canvas
    if params.direction == "vertical":
        if params.match_size:
            target = min(im.width for im in images)
            images = [_scale_to(im, width=target, ctx=ctx) for im in images]
        width = max(im.width for im in images)
        height = sum(im.height for im in images) + gap * (len(images) - 1)
        check_pixels(width, height, ctx, tool=name)
        canvas = Image.new(mode, (width, height), fill)
        y = 0
        for im in images:
            canvas.paste(im, ((width - im.width) // 2, y))
            y += im.height + gap
        return canvas
    # grid: cells the size of the largest image (or of the first image when matching sizes)
    cols = params.columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    if params.match_size:
        cw, ch = images[0].size
    else:
        cw, ch = max(im.width for im in images), max(im.height for im in images)
    width, height = cols * cw + gap * (cols - 1), rows * ch + gap * (rows - 1)
    check_pixels(width, height, ctx, tool=name)
    canvas = Image.new(mode, (width, height), fill)
    for i, im in enumerate(images):
        if params.match_size and im.size != (cw, ch):
            scale = min(cw / im.width, ch / im.height)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), 1)
        r, c = divmod(i, cols)
        x = c * (cw + gap) + (cw - im.width) // 2
        y = r * (ch + gap) + (ch - im.height) // 2
        canvas.paste(im, (x, y))
    return canvas


def _scale_to(im: Any, *, width: int | None = None, height: int | None = None, ctx: Any = None) -> Any:
    if height is not None and im.height != height:
        return im.resize((max(1, round(im.width * height / im.height)), height), 1)
    if width is not None and im.width != width:
        return im.resize((width, max(1, round(im.height * width / im.width))), 1)
    return im


@tool(
    "image.stitch",
    task="image-stitcher",
    description="Stitch two or more images into one: side by side (panorama strip), stacked, or a grid collage.",
    inputs={"images": {"modality": "image", "many": True}},
    outputs={"image": "image"},
    params=StitchParams,
)
def stitch(images: Any, *, params: StitchParams, ctx: Any = None) -> Any:
    items = [as_image(im, tool="image.stitch", port="images", ctx=ctx) for im in as_list(images, tool="image.stitch", port="images")]
    return stitch_images(items, params, ctx)

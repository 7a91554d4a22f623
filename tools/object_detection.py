"""Object detection (``image.detect``, ``object-detection``): DETR style.

Any ``AutoModelForObjectDetection`` checkpoint with an image processor that has
``post_process_object_detection`` works (DETR, Conditional/Deformable DETR, RT-DETR,
YOLOS). Output ``objects`` uses the format of HuggingGPT's object-detection results,
``[{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}]`` in pixels of the
input image (clamped to it), best first; output ``image`` is the input with the boxes
and labels drawn, the same size as the input, because HuggingGPT's plans feed it to
the next task.

    >>> from tools.object_detection import detect_objects                # doctest: +SKIP
    >>> detect_objects([street], {"threshold": 0.9})[0][0]
    {'label': 'car', 'score': 0.998, 'box': {'xmin': 12, 'ymin': 40, 'xmax': 210, 'ymax': 160}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, batched, encoder, rgb, to_device

__all__ = ["DetectParams", "detect_objects", "draw_boxes"]

TASK, TOOL, BACKEND = "object-detection", "image.detect", "transformers.object-detection"

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))


class DetectParams(BaseModel):
    """Parameters of ``image.detect``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Lowest score kept.")
    max_objects: int = Field(100, ge=1, le=1000, description="Most objects kept (best scores first).")
    line_width: int = Field(0, ge=0, le=32, description="Box outline in pixels on the drawn image (0: from the image size).")
    batch_size: int = Field(8, ge=1, le=64, description="Images per forward pass (detect_objects).")


def detect_objects(images: Sequence[Any], params: DetectParams | Mapping[str, Any] | None = None, *,
                   ctx: Any = None) -> list[list[dict[str, Any]]]:
    """Objects per image, best first; boxes in input pixels, clamped to the image."""
    import torch

    p = params if isinstance(params, DetectParams) else DetectParams.model_validate(dict(params or {}))
    pictures = [rgb(im, tool=TOOL, ctx=ctx) for im in images]
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    results: list[list[dict[str, Any]]] = []
    with enc.use(exclusive=False) as (model, processor):
        labels = model.config.id2label
        for chunk in batched(pictures, p.batch_size):
            inputs = to_device(processor(images=chunk, return_tensors="pt"), model)
            with torch.inference_mode():
                outputs = model(**inputs)
            outputs.logits = outputs.logits.float()
            outputs.pred_boxes = outputs.pred_boxes.float()
            sizes = torch.tensor([(im.height, im.width) for im in chunk])
            found = processor.post_process_object_detection(outputs, threshold=p.threshold, target_sizes=sizes)
            for im, res in zip(chunk, found, strict=True):
                objects = []
                for score, label, box in zip(res["scores"].tolist(), res["labels"].tolist(), res["boxes"].tolist(), strict=True):
                    x0, y0, x1, y1 = box
                    x0, x1 = sorted((min(max(x0, 0.0), im.width), min(max(x1, 0.0), im.width)))
                    y0, y1 = sorted((min(max(y0, 0.0), im.height), min(max(y1, 0.0), im.height)))
                    objects.append({
                        "label": str(labels.get(int(label), label)), "score": round(float(score), 6),
                        "box": {"xmin": round(x0, 2), "ymin": round(y0, 2), "xmax": round(x1, 2), "ymax": round(y1, 2)},
                    })
                objects.sort(key=lambda o: -o["score"])
                results.append(objects[: p.max_objects])
    return results


def draw_boxes(image: Any, objects: Sequence[Mapping[str, Any]], *, line_width: int = 0) -> Any:
    """A copy of ``image`` with every object's box and "label score" drawn; same size and mode RGB."""
    from PIL import ImageDraw, ImageFont

    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = line_width or max(1, round(min(out.size) / 150))
    font = ImageFont.load_default()
    colors: dict[str, tuple[int, int, int]] = {}
    for obj in objects:
        color = colors.setdefault(str(obj["label"]), PALETTE[len(colors) % len(PALETTE)])
        b = obj["box"]
        box = (b["xmin"], b["ymin"], max(b["xmin"], b["xmax"] - 1), max(b["ymin"], b["ymax"] - 1))
        draw.rectangle(box, outline=color, width=width)
        caption = f"{obj['label']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tx, ty = b["xmin"], max(0.0, b["ymin"] - (bottom - top) - 2)
        draw.rectangle((tx, ty, tx + right - left + 2, ty + bottom - top + 2), fill=color)
        draw.text((tx + 1, ty), caption, fill=(255, 255, 255), font=font)
    return out


@tool(
    TOOL,
    task=TASK,
    description="Find objects in an image (DETR style): labels, scores and boxes, plus the image with the boxes drawn.",
    inputs={"image": Port(name="image", modality="image", description="The picture to search.")},
    outputs={
        "objects": Port(name="objects", modality="json",
                        description='[{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}], best first.'),
        "image": Port(name="image", modality="image", description="The input with boxes and labels drawn (same size)."),
    },
    params=DetectParams,
)
def detect(image: Any, *, params: DetectParams, ctx: ToolContext) -> dict[str, Any]:
    """Image to objects and an annotated image."""
    picture = rgb(image, tool=TOOL, ctx=ctx)
    objects = detect_objects([picture], params, ctx=ctx)[0]
    return {"objects": objects, "image": draw_boxes(picture, objects, line_width=params.line_width)}

"""Optical character recognition (``image.ocr``): TrOCR style, line by line.

TaskBench's "Image-to-Text" tool is OCR ("extracts text from an input image"), while
HuggingGPT's ``image-to-text`` task is captioning (``image.caption``); to keep the
two apart this tool's task is ``image-to-text-ocr``.

TrOCR-style checkpoints (a ``VisionEncoderDecoderModel``, e.g.
``microsoft/trocr-small-printed``) read one line of text per image. So the tool first
finds the text lines of the image from its row ink profile (rows whose pixels differ
from the background), crops each line with a small margin, and reads all lines in
batched ``generate`` calls. ``segment_lines=False`` reads the whole image as one line.

A profile entry with ``options = { backend = "tesseract" }`` and a model such as
``tesseract:eng`` reads with Tesseract instead (Debian ``tesseract-ocr``, real
offline OCR): it finds the lines itself, and the result has the same shape.

    >>> from tools.ocr import read_text                                  # doctest: +SKIP
    >>> read_text(page).text
    'Invoice 2024-113\\nTotal: 42.00 EUR'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, batched, encoder, rgb, to_device

__all__ = ["OCRParams", "OCRResult", "find_text_lines", "read_text"]

TASK, TOOL, BACKEND = "image-to-text-ocr", "image.ocr", "transformers.image-to-text"
TESSERACT_BACKEND = "tesseract"


class OCRParams(BaseModel):
    """Parameters of ``image.ocr``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    segment_lines: bool = Field(True, description="Split the image into text lines first (TrOCR reads one line).")
    max_lines: int = Field(64, ge=1, le=512, description="Most lines read; the rest are dropped (and reported).")
    max_tokens: int | None = Field(None, ge=1, le=256, description="Longest line, in tokens (None: profile, else 64).")
    num_beams: int = Field(1, ge=1, le=8, description="Beam search width (1: greedy).")
    batch_size: int = Field(16, ge=1, le=64, description="Lines per forward pass.")


@dataclass
class OCRResult:
    text: str
    lines: list[dict[str, Any]]
    model: str
    seconds: float = 0.0
    dropped_lines: int = 0


def find_text_lines(image: Any, *, min_height: int = 4, margin: int = 2, threshold: int = 40) -> list[tuple[int, int, int, int]]:
    """Boxes ``(left, top, right, bottom)`` of the text lines of an RGB image, top to bottom.

    The background is the median grey level; a pixel is ink when it differs from it
    by more than ``threshold``. Rows with ink form lines (gaps of one row are bridged);
    each line is cropped to its inked columns plus ``margin``. An image with no
    distinct lines gives one box: the whole image.
    """
    gray = np.asarray(image.convert("L"), dtype=np.int16)
    h, w = gray.shape
    background = int(np.median(gray))
    ink = np.abs(gray - background) > threshold
    rows = ink.sum(axis=1) > max(1, w // 200)
    if rows.size > 2:  # bridge one-row gaps (thin horizontal strokes)
        rows[1:-1] |= rows[:-2] & rows[2:]
    boxes = []
    y = 0
    while y < h:
        if not rows[y]:
            y += 1
            continue
        top = y
        while y < h and rows[y]:
            y += 1
        bottom = y
        if bottom - top >= min_height:
            cols = np.flatnonzero(ink[top:bottom].any(axis=0))
            left, right = int(cols[0]), int(cols[-1]) + 1
            boxes.append((max(0, left - margin), max(0, top - margin), min(w, right + margin), min(h, bottom + margin)))
    return boxes or [(0, 0, w, h)]


def read_text(image: Any, params: OCRParams | Mapping[str, Any] | None = None, *, ctx: Any = None) -> OCRResult:
    """Read the text of an image: lines found, cropped and read in batches."""
    import torch

    p = params if isinstance(params, OCRParams) else OCRParams.model_validate(dict(params or {}))
    picture = rgb(image, tool=TOOL, ctx=ctx)
    boxes = find_text_lines(picture) if p.segment_lines else [(0, 0, picture.width, picture.height)]
    dropped = max(0, len(boxes) - p.max_lines)
    boxes = boxes[: p.max_lines]
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    if enc.backend == TESSERACT_BACKEND:
        return _read_tesseract(enc, picture, p)
    crops = [picture.crop(box) for box in boxes]
    started = time.perf_counter()
    texts: list[str] = []
    max_tokens = int(enc.option(p, "max_tokens", 64))
    with enc.use() as (model, processor):
        for chunk in batched(crops, p.batch_size):
            inputs = to_device(processor(images=chunk, return_tensors="pt"), model)
            with torch.inference_mode():
                ids = model.generate(**inputs, max_new_tokens=max_tokens, num_beams=p.num_beams, do_sample=False)
            texts += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
            if ctx is not None:
                ctx.progress(len(texts), len(crops))
    lines = [
        {"text": t, "box": {"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]}}
        for t, b in zip(texts, boxes, strict=True)
    ]
    text = "\n".join(t for t in texts if t)
    return OCRResult(text, lines, enc.model, time.perf_counter() - started, dropped)


# ---------------------------------------------------------------- tesseract


@dataclass
class TesseractReader:
    """A Tesseract language ready to read: the binary, its tessdata folder and the language."""

    binary: str
    tessdata: str
    lang: str
    resident_bytes: int = 0

    def read(self, image: Any, *, psm: int = 3, timeout: float = 120.0) -> list[tuple[str, tuple[int, int, int, int]]]:
        """``[(line text, (left, top, right, bottom))]`` in reading order."""
        import pytesseract

        from orchestrator.errors import ToolInputError

        pytesseract.pytesseract.tesseract_cmd = self.binary
        config = f'--tessdata-dir "{self.tessdata}" --psm {psm}'
        try:
            data = pytesseract.image_to_data(image, lang=self.lang, config=config, timeout=timeout,
                                             output_type=pytesseract.Output.DICT)
        except (pytesseract.TesseractError, RuntimeError, OSError) as exc:
            raise ToolInputError(f"tesseract could not read the image: {exc}", tool=TOOL) from exc
        lines: dict[tuple[int, int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if str(word).strip() and float(data["conf"][i]) >= 0:
                key = (data["page_num"][i], data["block_num"][i], data["par_num"][i], data["line_num"][i])
                lines.setdefault(key, []).append(i)
        out = []
        for idx in lines.values():
            left = min(data["left"][i] for i in idx)
            top = min(data["top"][i] for i in idx)
            right = max(data["left"][i] + data["width"][i] for i in idx)
            bottom = max(data["top"][i] + data["height"][i] for i in idx)
            out.append((" ".join(str(data["text"][i]).strip() for i in idx), (left, top, right, bottom)))
        return out


def load_tesseract(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> TesseractReader:
    """Backend loader: ``source`` is a ``<lang>.traineddata`` file (what ``tesseract:<lang>`` resolves to)."""
    from pathlib import Path

    from orchestrator.runtime import tesseract_binary

    data = Path(source)
    return TesseractReader(tesseract_binary(), str(data.parent), data.name.removesuffix(".traineddata"),
                           data.stat().st_size)


def _read_tesseract(enc: Any, picture: Any, p: OCRParams) -> OCRResult:
    started = time.perf_counter()
    psm = int(enc.choice.option("psm", 3) if p.segment_lines else 7)  # 3: find the layout; 7: one line
    with enc.use(exclusive=False) as reader:
        found = reader.read(picture, psm=psm)
    dropped = max(0, len(found) - p.max_lines)
    lines = [
        {"text": t, "box": {"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]}} for t, b in found[: p.max_lines]
    ]
    text = "\n".join(line["text"] for line in lines)
    return OCRResult(text, lines, enc.model, time.perf_counter() - started, dropped)


def _register() -> None:
    from orchestrator.runtime import list_backends, register_backend

    if TESSERACT_BACKEND not in list_backends():
        register_backend(TESSERACT_BACKEND, load_tesseract, requires=("pytesseract",), extra="offline",
                         description="Tesseract OCR (Debian tesseract-ocr; model tesseract:<lang>)")


_register()


@tool(
    TOOL,
    task=TASK,
    description="Read the text in an image (OCR, TrOCR style; lines found and read one by one).",
    inputs={"image": Port(name="image", modality="image", description="A photo or scan containing text.")},
    outputs={
        "text": Port(name="text", modality="text", description="The text read, one line per text line."),
        "lines": Port(name="lines", modality="json", description='Every line: [{"text", "box": {xmin, ymin, xmax, ymax}}].'),
    },
    params=OCRParams,
)
def ocr(image: Any, *, params: OCRParams, ctx: ToolContext) -> dict[str, Any]:
    """Image to the text written in it."""
    result = read_text(image, params, ctx=ctx)
    return {"text": result.text, "lines": result.lines}

"""Outputs depend on inputs: for every model tool, another prompt, question, image or sound
gives another output, while the same input and seed give the same output again.

Tiny random weights make the outputs meaningless, but not input-free: a tool that dropped
its prompt (a constant), its question, or read the whole page for every line would pass
the shape tests and fail these. Real-model behaviour is in tests/test_offline_models.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from media_factory import gradient_image, speech, tone
from PIL import Image, ImageDraw

from orchestrator.registry import get_tool
from orchestrator.runtime import ModelBundle, ModelManager, build_zoo, get_profile, list_backends, register_backend
from orchestrator.tool import ToolContext

pytestmark = pytest.mark.slow

ZOO = ["tiny-sd", "tiny-t2v", "tiny-audioldm", "tiny-musicgen", "tiny-vits", "tiny-blip-caption", "tiny-vilt-vqa",
       "tiny-trocr", "tiny-whisper", "tiny-clip", "tiny-clap", "tiny-detr", "tiny-instruct-pix2pix", "tiny-resnet"]


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    from tools._encoding import register_backends

    register_backends()
    build_zoo(ZOO)
    return ModelManager(device="cpu")


@pytest.fixture(scope="module")
def tiny():
    return get_profile("tiny")


def noise_photo(seed: int, size: tuple[int, int] = (70, 50)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def run(tool: str, inputs: dict[str, Any], params: dict[str, Any] | None, manager: ModelManager, profile: Any) -> Any:
    return get_tool(tool).call(inputs, dict(params or {}), ToolContext(seed=7, models=manager, profile=profile))


def fingerprint(value: Any) -> Any:
    """A comparable form of a tool output: pixels, samples, frames, text or JSON."""
    if isinstance(value, Image.Image):
        return np.asarray(value.convert("RGB")).tobytes()
    for attr in ("samples", "frames"):
        if hasattr(value, attr):
            return np.asarray(getattr(value, attr)).tobytes()
    if isinstance(value, np.ndarray):
        return value.tobytes()
    return repr(value)


PHOTO_A, PHOTO_B = noise_photo(1), noise_photo(2)
# tool, the port that changes, its two values, the other inputs, params, the output compared
CASES = [
    ("image.generate", "text", "a red fox in the snow", "a blue whale in the sea", {}, {}, "image"),
    ("image.edit", "text", "make it a sunny beach", "turn it into a night city", {"image": PHOTO_A}, {}, "image"),
    ("video.generate", "text", "a red fox in the snow", "a blue whale in the sea", {}, {"frames": 3}, "video"),
    ("audio.generate", "text", "a dog barking", "rain on a tin roof", {}, {"duration": 0.3}, "audio"),
    ("music.generate", "text", "calm piano", "fast drum and bass", {}, {"duration": 0.3}, "audio"),
    ("speech.synthesize", "text", "Good morning.", "See you tomorrow at noon.", {}, {}, "audio"),
    ("speech.espeak", "text", "Good morning.", "See you tomorrow at noon.", {}, {}, "audio"),
    ("image.caption", "image", PHOTO_A, PHOTO_B, {}, {}, "text"),
    ("image.vqa", "question", "what color is the car?", "how many dogs are there?", {"image": PHOTO_A},
     {"top_k": 5}, "answers"),
    ("image.vqa", "image", PHOTO_A, PHOTO_B, {"question": "what color is the car?"}, {"top_k": 5}, "answers"),
    ("image.classify", "image", PHOTO_A, PHOTO_B, {}, {"labels": ["a cat", "a dog", "a car"]}, "scores"),
    ("image.embed", "image", PHOTO_A, PHOTO_B, {}, {}, "embedding"),
    ("text.embed", "text", "a cat on a mat", "a rocket at launch", {}, {}, "embedding"),
    ("audio.classify", "audio", "tone-440", "tone-1500", {}, {"labels": ["a bird", "a siren"]}, "scores"),
    ("image.detect", "image", PHOTO_A, PHOTO_B, {}, {"threshold": 0.0}, "objects"),
    ("speech.transcribe", "audio", "speech-a", "speech-b", {}, {}, "segments"),
    ("image.colorize", "image", "gradient", "noise", {}, {}, "image"),
    ("image.style_transfer", "style", PHOTO_A, PHOTO_B, {"image": "gradient"}, {}, "image"),
]


def _materialize(value: Any) -> Any:
    named = {
        "tone-440": lambda: tone(440.0, 1.0), "tone-1500": lambda: tone(1500.0, 1.0),
        "speech-a": lambda: speech("Good morning everyone."), "speech-b": lambda: speech("The train leaves at nine."),
        "gradient": lambda: gradient_image(64, 48).convert("L"), "noise": lambda: noise_photo(3, (64, 48)).convert("L"),
    }
    return named[value]() if isinstance(value, str) and value in named else value


@pytest.mark.parametrize(("tool", "port", "first", "second", "others", "params", "out"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_another_input_gives_another_output(tool, port, first, second, others, params, out, manager, tiny) -> None:
    others = {k: _materialize(v) for k, v in others.items()}
    a = run(tool, {**others, port: _materialize(first)}, params, manager, tiny)[out]
    again = run(tool, {**others, port: _materialize(first)}, params, manager, tiny)[out]
    b = run(tool, {**others, port: _materialize(second)}, params, manager, tiny)[out]
    assert fingerprint(a) == fingerprint(again), "the same input and seed must give the same output"
    assert fingerprint(a) != fingerprint(b), f"{tool}: changing {port!r} did not change {out!r}"


def test_colorize_adds_colour_to_a_grey_photo(manager, tiny) -> None:
    grey = gradient_image(64, 48).convert("L")
    out = np.asarray(run("image.colorize", {"image": grey}, {}, manager, tiny)["image"].convert("RGB"), dtype=float)
    chroma = np.abs(out - out.mean(axis=2, keepdims=True)).mean()  # 0 for any grey picture
    assert chroma > 2.0, f"colorize returned a grey picture (mean chroma {chroma:.2f})"


# ------------------------------------------------------------------ OCR reads each line, not the page


class _Recording:
    """The real tiny TrOCR processor, noting the size of every image it is given."""

    def __init__(self, processor: Any, seen: list[tuple[int, int]]) -> None:
        self._processor, self._seen = processor, seen

    def __call__(self, *args: Any, images: Any = None, **kwargs: Any) -> Any:
        self._seen.extend(im.size for im in images)
        return self._processor(*args, images=images, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


SEEN: list[tuple[int, int]] = []


def _recording_trocr(source: str, **kwargs: Any) -> ModelBundle:
    from tools._encoding import _bundle_loader

    model, processor = _bundle_loader("AutoModelForImageTextToText", "AutoProcessor")(source, **kwargs)
    return ModelBundle(model, _Recording(processor, SEEN))


def test_ocr_gives_the_model_each_line_not_the_whole_page(manager, tiny) -> None:
    if "test.recording-trocr" not in list_backends():
        register_backend("test.recording-trocr", _recording_trocr)
    profile = tiny.with_overrides({"image-to-text-ocr": {"tool": "image.ocr", "model": "zoo:tiny-trocr",
                                                          "options": {"backend": "test.recording-trocr"}}})
    page = Image.new("RGB", (200, 100), "white")
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(["Invoice 2024", "Total 42.00 EUR", "Paid"]):
        draw.text((6, 8 + 30 * i), line, fill="black")
    SEEN.clear()
    out = run("image.ocr", {"image": page}, {}, manager, profile)
    boxes = [line["box"] for line in out["lines"]]
    assert len(boxes) == 3
    assert SEEN == [(b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]) for b in boxes]
    assert all(h < page.height // 2 for _w, h in SEEN)  # line crops, never the page

"""The offline profile's real models: size on disk, load time, call time, speed against real time.

    .venv/bin/python bench/bench_offline_models.py

For each task the `offline` profile serves with real weights, one cold call (it loads the
model through the model manager) and one warm call on real inputs: espeak-ng speech for
Whisper, a rendered page for Tesseract, scikit-image photos for EfficientNet and the face
cascade, a prompt for the synthesizer. Prints the model's size, the load time the manager
recorded, the warm call time, and for audio the real-time factor (seconds of audio per
second of compute; > 1 is faster than real time).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import skimage.data  # noqa: E402
from media_factory import speech  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from orchestrator.registry import get_tool  # noqa: E402
from orchestrator.runtime import ModelManager, get_profile  # noqa: E402
from orchestrator.tool import ToolContext  # noqa: E402


def main() -> None:
    profile = get_profile("offline")
    manager = ModelManager(device="cpu")
    page = Image.new("RGB", (640, 160), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=28)
    draw.text((20, 30), "Invoice 2024-113 for garden tools", fill="black", font=font)
    draw.text((20, 90), "Total due: 42.50 EUR by Monday", fill="black", font=font)
    voice = speech("Please send the weekly report to the team before Friday morning.", voice="en-us")
    cases: list[tuple[str, str, dict[str, Any], dict[str, Any], float | None]] = [
        ("automatic-speech-recognition", "speech.transcribe", {"audio": voice}, {}, voice.duration),
        ("image-to-text-ocr", "image.ocr", {"image": page}, {}, None),
        ("image-classification", "image.recognize", {"image": Image.fromarray(skimage.data.chelsea())}, {}, None),
        ("face-detection", "image.faces", {"image": Image.fromarray(skimage.data.astronaut())}, {}, None),
        ("text-to-music", "music.compose", {"text": "calm piano in C major at 90 bpm"}, {"duration": 9.0}, 9.0),
    ]
    print(f"{'task':30} {'model size':>11} {'load s':>7} {'cold s':>7} {'warm s':>7} {'x realtime':>10}  output")
    for task, tool, inputs, params, seconds in cases:
        ctx = ToolContext(seed=1, models=manager, profile=profile)
        started = time.perf_counter()
        get_tool(tool).call(inputs, params, ctx)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        out = get_tool(tool).call(inputs, params, ToolContext(seed=1, models=manager, profile=profile))
        warm = time.perf_counter() - started
        resident = [r for r in manager.resident() if r["task"] == task]
        size = resident[0]["bytes"] / 1e6 if resident else 0.0
        load = resident[0]["load_seconds"] if resident else 0.0
        rtf = f"{seconds / warm:10.1f}" if seconds else f"{'':>10}"
        shown = next(iter(out.values()))
        summary = shown if isinstance(shown, str) else (shown[:1] if isinstance(shown, list) else type(shown).__name__)
        print(f"{task:30} {size:9.1f}MB {load:7.2f} {cold:7.2f} {warm:7.2f} {rtf}  {str(summary)[:70]!r}")


if __name__ == "__main__":
    main()

"""Encoder throughput on the tiny zoo: batched vs one at a time, measured side by side.

    .venv/bin/python bench/bench_encoders.py                    # tiny profile, auto device
    .venv/bin/python bench/bench_encoders.py --device cuda --repeat 5

1. Speech recognition of 60 s of audio (two 30 s windows, resampled from 44.1 kHz):
   both windows in one ``generate`` call (batch_size=8) vs one window per call
   (batch_size=1).
2. Captioning of 16 images: one batched call (batch_size=16) vs 16 single-image
   calls (batch_size=1).

Each is warmed up (the model loads then), then the two ways run alternately
``--repeat`` times, so both see the same machine load; the medians are compared
and the outputs of both ways are checked to be identical. Tiny models make
gibberish; the point is the per-call overhead that batching removes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from orchestrator.artifacts import Audio  # noqa: E402
from orchestrator.runtime import ModelManager, build_zoo, get_profile  # noqa: E402
from orchestrator.tool import ToolContext  # noqa: E402
from tools.image_captioning import caption_images  # noqa: E402
from tools.speech_recognition import transcribe  # noqa: E402


def side_by_side(batched: Any, single: Any, repeat: int) -> tuple[float, Any, float, Any]:
    """Median seconds and last result of each, run alternately (after one warm-up each)."""
    batched(), single()
    times: dict[str, list[float]] = {"b": [], "s": []}
    results: dict[str, Any] = {}
    for _ in range(repeat):
        for key, fn in (("b", batched), ("s", single)):
            started = time.perf_counter()
            results[key] = fn()
            times[key].append(time.perf_counter() - started)
    return statistics.median(times["b"]), results["b"], statistics.median(times["s"]), results["s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=24, help="max tokens per window / caption")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    build_zoo(["tiny-whisper", "tiny-blip-caption"])
    manager = ModelManager(device=args.device)
    ctx = ToolContext(models=manager, profile=get_profile("tiny"))
    rng = np.random.default_rng(0)
    print(f"device={manager.device} threads={torch.get_num_threads()} repeat={args.repeat} max_tokens={args.tokens}")

    # 1. speech recognition, 60 s at 44.1 kHz
    audio = Audio((0.1 * rng.standard_normal(60 * 44100)).astype(np.float32), 44100)
    asr = {"max_tokens": args.tokens, "language": "en"}
    batched_s, batched, single_s, single = side_by_side(
        lambda: transcribe(audio, {**asr, "batch_size": 8}, ctx=ctx),
        lambda: transcribe(audio, {**asr, "batch_size": 1}, ctx=ctx),
        args.repeat,
    )
    assert batched.segments == single.segments, "batching changed the transcript"
    print(f"ASR 60 s ({batched.windows} windows): batched {batched_s:.3f}s ({batched.stats['forward_passes']} pass), "
          f"one at a time {single_s:.3f}s ({single.stats['forward_passes']} passes), "
          f"speed-up x{single_s / batched_s:.2f}, real-time factor {batched_s / 60:.4f}")

    # 2. captioning, 16 images
    images = [Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)) for _ in range(16)]
    cap = {"max_tokens": args.tokens}
    batched_s, batched, single_s, single = side_by_side(
        lambda: caption_images(images, {**cap, "batch_size": 16}, ctx=ctx),
        lambda: caption_images(images, {**cap, "batch_size": 1}, ctx=ctx),
        args.repeat,
    )
    assert batched.texts == single.texts, "batching changed the captions"
    print(f"Captioning 16 images: batched {batched_s:.3f}s ({batched.stats['forward_passes']} pass), "
          f"one at a time {single_s:.3f}s ({single.stats['forward_passes']} passes), "
          f"speed-up x{single_s / batched_s:.2f}, {16 / batched_s:.1f} images/s batched")
    print(f"model loads: {manager.stats()['loads']} (2 expected: warm runs never reload)")


if __name__ == "__main__":
    main()

"""Decoder latency on the tiny zoo: cold (load + generate) vs warm, and batched text-to-image.

    .venv/bin/python bench/bench_decoders.py                  # tiny profile, auto device
    .venv/bin/python bench/bench_decoders.py --device cuda --dtype float16 --repeat 5
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_decoders.py --threads 1 --quick   # batching only

For each decoder: the first call (the model loads, then generates) and the median
of ``--repeat`` warm calls, with the manager's load count before and after the warm
calls (it must not change). Then 8 text-to-image prompts in one batched call
against 8 separate calls (goal: batched >= 1.5x the throughput), with the minor page
faults of each (memory the allocator took back from the OS: a count load does not change). Libraries (and the
pipeline classes) are imported before timing, so cold means checkpoint load + first
generation. ``--quick`` runs the batching comparison alone (to repeat it on a busy machine).
Tiny models make noise; the point is the runtime's overheads, not image quality.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from orchestrator.registry import get_tool  # noqa: E402
from orchestrator.runtime import ModelManager, build_zoo, get_profile  # noqa: E402
from orchestrator.tool import ToolContext  # noqa: E402

PROMPTS = [
    "a lighthouse at dusk", "a red fox in the snow", "a bowl of ramen", "a city street at night",
    "a watercolor mountain lake", "an astronaut riding a horse", "a cat on a red chair", "a sailing boat at sea",
]


def cases(photo: Image.Image) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        ("image.generate", {"text": "a lighthouse at dusk"}, {}),
        ("image.edit", {"text": "make it blue", "image": photo}, {}),
        ("video.generate", {"text": "a cat playing with yarn"}, {}),
        ("audio.generate", {"text": "rain on a tin roof"}, {}),
        ("music.generate", {"text": "calm piano with soft drums"}, {}),
        ("speech.synthesize", {"text": "Hello, this is the orchestrator speaking."}, {}),
    ]


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_latency(manager: ModelManager, profile: Any, repeat: int) -> list[tuple[str, float, float, int, int]]:
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    rows = []
    for i, (name, inputs, params) in enumerate(cases(photo)):
        tool = get_tool(name)

        def call(seed: int, tool=tool, inputs=inputs, params=params) -> None:
            tool.call(inputs, params, ToolContext(seed=seed, models=manager, profile=profile))

        cold = timed(lambda: call(0))
        loads_before = manager.stats()["loads"]
        warm = statistics.median(timed(lambda s=s: call(s)) for s in range(1, repeat + 1))
        loads_after = manager.stats()["loads"]
        rows.append((name, cold, warm, loads_before, loads_after))
        print(f"  {name:18} cold {cold * 1000:8.1f} ms   warm {warm * 1000:8.1f} ms", flush=True)
    return rows


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Batching:
    """Medians over the rounds: seconds and minor page faults of one batched call and of the separate calls."""

    batched: float
    separate: float
    batched_faults: float
    separate_faults: float
    max_pixel_diff: int


def bench_batching(manager: ModelManager, profile: Any, rounds: int) -> Batching:
    from decoders.image_diffusers import generate_images

    generate_images(PROMPTS[:1], {}, seed=0, models=manager, profile=profile)  # warm the model
    times: dict[str, list[float]] = {"batched": [], "separate": []}
    faults: dict[str, list[int]] = {"batched": [], "separate": []}
    batch = singles = None
    for _ in range(rounds):
        f0, started = minor_faults(), time.perf_counter()
        batch = generate_images(PROMPTS, {}, seed=100, models=manager, profile=profile)
        times["batched"].append(time.perf_counter() - started)
        faults["batched"].append(minor_faults() - f0)
        f0, started = minor_faults(), time.perf_counter()
        singles = [generate_images([p], {}, seed=100 + k, models=manager, profile=profile) for k, p in enumerate(PROMPTS)]
        times["separate"].append(time.perf_counter() - started)
        faults["separate"].append(minor_faults() - f0)
    assert batch is not None and singles is not None
    diff = max(
        int(np.abs(np.asarray(a, dtype=int) - np.asarray(b.images[0], dtype=int)).max())
        for a, b in zip(batch.images, singles, strict=True)
    )
    return Batching(statistics.median(times["batched"]), statistics.median(times["separate"]),
                    statistics.median(faults["batched"]), statistics.median(faults["separate"]), diff)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    parser.add_argument("--dtype", default=None, help="auto (default), float32, float16, bfloat16")
    parser.add_argument("--repeat", type=int, default=3, help="warm calls per decoder (median)")
    parser.add_argument("--rounds", type=int, default=3, help="batched-vs-separate rounds (median)")
    parser.add_argument("--quick", action="store_true", help="only the batched-vs-separate text-to-image comparison")

    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    started = time.perf_counter()
    import torch
    from diffusers import StableDiffusionPipeline  # noqa: F401

    if not args.quick:
        from diffusers import AudioLDMPipeline, TextToVideoSDPipeline  # noqa: F401
        from transformers import MusicgenForConditionalGeneration, VitsModel  # noqa: F401

    imports = time.perf_counter() - started
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    started = time.perf_counter()
    t2i = profile.resolve("text-to-image", tool="image.generate")
    build_zoo(([t2i.zoo_name] if t2i.zoo_name else []) if args.quick else profile.zoo_names())
    zoo = time.perf_counter() - started
    manager = ModelManager(device=args.device, dtype=args.dtype)
    print(f"device {manager.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"profile {profile.name}; imports {imports:.1f}s, zoo ready in {zoo:.1f}s\n")

    if not args.quick:
        print("cold vs warm (per call):")
        rows = bench_latency(manager, profile, args.repeat)
        print(f"\n{'decoder':18} {'cold ms':>9} {'warm ms':>9} {'cold/warm':>9} {'loads':>12}")
        for name, cold, warm, before, after in rows:
            reload = "" if before == after else "  RELOADED!"
            print(f"{name:18} {cold * 1000:9.1f} {warm * 1000:9.1f} {cold / warm:8.1f}x "
                  f"{before:>5} -> {after:<4}{reload}")
        stats = manager.stats()
        print(f"\nmanager: {stats['loads']} loads ({stats['load_seconds']:.2f}s), {stats['hits']} hits, "
              f"{stats['evictions']} evictions, {len(stats['resident'])} resident, {stats['used_bytes'] / 1e6:.1f} MB")

    b = bench_batching(manager, profile, args.rounds)
    n = len(PROMPTS)
    print(f"\ntext-to-image, {n} prompts ({args.rounds} rounds, median):")
    print(f"  one batched call   {b.batched * 1000:8.1f} ms   {n / b.batched:7.1f} images/s   "
          f"{b.batched_faults:8.0f} minor page faults")
    print(f"  {n} separate calls  {b.separate * 1000:8.1f} ms   {n / b.separate:7.1f} images/s   "
          f"{b.separate_faults:8.0f} minor page faults")
    ratio = b.separate / b.batched
    print(f"  batched throughput {ratio:.2f}x separate (goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}); "
          f"max pixel difference batched vs alone: {b.max_pixel_diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

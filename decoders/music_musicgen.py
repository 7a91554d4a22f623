"""Text-to-music with MusicGen (``music.generate``), written as WAV.

The default backend is ``transformers`` (``MusicgenForConditionalGeneration``). The
``audiocraft`` backend (Meta's own package, an optional extra that pins an old
torch) is used when it is installed and the model is a hub id, or when asked for
with ``backend="audiocraft"``; asking for it when it is not installed raises
:class:`~orchestrator.errors.BackendUnavailable` before anything loads.
Progress is reported per block of generated codec frames. Several prompts are
generated in one batched ``generate`` call.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio
from orchestrator.errors import RunCancelled
from orchestrator.runtime import check_backend
from orchestrator.tool import Port, ToolContext, tool

from ._common import (
    MODEL_FIELD,
    Decoding,
    begin_call,
    check_range,
    first_and_all,
    global_rng,
    note_provenance,
    prompts_of,
)

__all__ = ["GenerateMusicParams", "MusicBatch", "generate_music"]

TASK = "text-to-music"
MAX_DURATION = 60.0
DEFAULT_DURATION, DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE, DEFAULT_TOP_K = 8.0, 3.0, 1.0, 250
PROGRESS_BLOCKS = 20


class GenerateMusicParams(BaseModel):
    """Parameters of ``music.generate``; unset ones come from the profile."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    duration: float | None = Field(None, gt=0, description=f"Seconds of music (at most {MAX_DURATION:g}).",
                                   json_schema_extra={"maximum": MAX_DURATION})
    guidance: float | None = Field(None, ge=0.0, le=20.0, description="Classifier-free guidance scale (1: off).")
    temperature: float | None = Field(None, gt=0.0, le=5.0, description="Sampling temperature.")
    top_k: int | None = Field(None, ge=0, le=4096, description="Sample among the k most likely codes (0: all).")
    backend: Literal["auto", "transformers", "audiocraft"] | None = Field(
        None, description="auto: audiocraft when installed and the model is a hub id, else transformers.")


@dataclass
class MusicBatch:
    clips: list[Audio]
    model: str
    seed: int
    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _progress_processor(ctx: Any, total: int) -> Any:
    """A logits processor that reports progress every block of generated frames and stops on cancel.

    (A logits processor rather than a streamer: MusicGen's ``generate`` runs it once per
    step in every transformers version, while some drop the streamer.)
    """
    from transformers import LogitsProcessor

    block = max(1, math.ceil(total / PROGRESS_BLOCKS))

    class BlockProgress(LogitsProcessor):
        def __init__(self) -> None:
            self.step = 0

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self.step += 1
            if getattr(ctx, "cancelled", False):
                raise RunCancelled("cancelled during music generation", node=getattr(ctx, "node", None))
            if self.step % block == 0 or self.step >= total:
                ctx.progress(min(self.step, total), total)
            return scores

    return BlockProgress()


def _pick_backend(d: Decoding, asked: str | None) -> str:
    backend = asked or d.choice.option("backend") or "auto"
    if backend == "auto":
        is_hub_id = not d.model.startswith(("zoo:", "/", ".", "~")) and d.model.count("/") == 1
        backend = "audiocraft" if is_hub_id and importlib.util.find_spec("audiocraft") is not None else "transformers"
    if backend == "audiocraft":
        check_backend("audiocraft.musicgen", model=d.model, task=d.task)
    d.settings["backend"] = backend
    return backend


def _as_clip(wave: Any, rate: int, n: int) -> Audio:
    import numpy as np

    arr = wave.detach().float().cpu().numpy() if hasattr(wave, "detach") else np.asarray(wave, dtype=np.float32)
    arr = arr[..., :n]  # (channels, samples)
    if arr.shape[-1] < n:
        arr = np.pad(arr, [(0, 0)] * (arr.ndim - 1) + [(0, n - arr.shape[-1])])
    samples = arr[0] if arr.shape[0] == 1 else arr.T
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)


def _transformers(d: Decoding, prompts: list[str], seed: int, ctx: Any, duration: float, guidance: float,
                  temperature: float, top_k: int) -> list[Audio]:
    import torch

    with d.models.use(d.choice, "transformers.musicgen") as bundle:
        model, processor = bundle
        codec = model.config.audio_encoder
        rate, frame_rate = int(codec.sampling_rate), float(codec.frame_rate)
        # the codebook delay pattern costs (codebooks - 1) frames
        tokens = math.ceil(duration * frame_rate) + model.decoder.num_codebooks - 1
        inputs = processor(text=prompts, padding=True, return_tensors="pt").to(model.device)
        from transformers import LogitsProcessorList

        with global_rng(seed, str(model.device)), torch.inference_mode():
            waves = model.generate(
                **inputs, do_sample=True, guidance_scale=guidance, temperature=temperature, top_k=top_k,
                max_new_tokens=tokens, logits_processor=LogitsProcessorList([_progress_processor(ctx, tokens)]),
            )
    d.settings["sample_rate"] = rate
    n = int(round(duration * rate))
    return [_as_clip(w, rate, n) for w in waves]


def _audiocraft(d: Decoding, prompts: list[str], seed: int, ctx: Any, duration: float, guidance: float,
                temperature: float, top_k: int) -> list[Audio]:
    with d.models.use(d.choice, "audiocraft.musicgen") as mg:
        mg.set_generation_params(duration=duration, top_k=top_k, temperature=temperature, cfg_coef=guidance,
                                 use_sampling=True)
        mg.set_custom_progress_callback(lambda done, total: ctx.progress(int(done), int(total)))
        with global_rng(seed, str(mg.device)):
            waves = mg.generate(prompts, progress=False)
        rate = int(mg.sample_rate)
    d.settings["sample_rate"] = rate
    n = int(round(duration * rate))
    return [_as_clip(w, rate, n) for w in waves]


def generate_music(
    prompts: list[str],
    params: GenerateMusicParams | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    models: Any = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    ctx: Any = None,
) -> MusicBatch:
    """Text to music clips, one per prompt, in one batched ``generate`` call."""
    p, ctx, seed, prompts, d = begin_call(GenerateMusicParams, params, prompts, task=TASK, tool="music.generate",
                                          seed=seed, ctx=ctx, progress=progress, models=models, profile=profile)
    duration = float(d.get(p, "duration", DEFAULT_DURATION))
    guidance = float(d.get(p, "guidance", DEFAULT_GUIDANCE))
    temperature = float(d.get(p, "temperature", DEFAULT_TEMPERATURE))
    top_k = int(d.get(p, "top_k", DEFAULT_TOP_K))
    check_range(d, "duration", duration, 0.05, MAX_DURATION, unit=" s")
    check_range(d, "guidance", guidance, 0.0, 20.0)
    check_range(d, "temperature", temperature, 1e-3, 5.0)
    backend = _pick_backend(d, p.backend)
    started = time.perf_counter()
    run = _audiocraft if backend == "audiocraft" else _transformers
    clips = run(d, prompts, seed, ctx, duration, guidance, temperature, top_k)
    note_provenance(ctx, d, seed)
    return MusicBatch(clips, d.model, seed, backend, dict(d.settings), time.perf_counter() - started)


@tool(
    "music.generate",
    task=TASK,
    description="Compose a music clip (WAV) from a text description with MusicGen.",
    inputs={"text": Port(name="text", modality="text", description="The style, instruments, mood (or a list).")},
    outputs={
        "audio": Port(name="audio", modality="audio", description="The (first) clip."),
        "audios": Port(name="audios", modality="audio", many=True, optional=True,
                       description="Every clip, when several prompts were given."),
    },
    params=GenerateMusicParams,
    seeded=True,
)
def compose_music(text: Any, *, params: GenerateMusicParams, ctx: ToolContext) -> dict[str, Any]:
    """Text to music."""
    batch = generate_music(prompts_of(text, "music.generate"), params, ctx=ctx)
    return first_and_all(batch.clips, "audio", "audios")

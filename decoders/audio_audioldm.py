"""Text-to-audio with diffusers AudioLDM (``audio.generate``), written as WAV.

AudioLDM is the sound decoder NExT-GPT used: a latent diffusion model over mel
spectrograms, conditioned on CLAP text embeddings, with a HiFi-GAN vocoder. Audio
comes out at the vocoder's sample rate (16 kHz for the cvssp checkpoints). Several
prompts are batched into one pipeline call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio
from orchestrator.tool import Port, ToolContext, tool

from ._common import MODEL_FIELD, begin_call, check_range, first_and_all, generators, note_provenance, prompts_of, step_callback

__all__ = ["AudioBatch", "GenerateAudioParams", "generate_audio"]

TASK = "text-to-audio"
DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_DURATION = 10, 2.5, 5.0
MAX_DURATION = 60.0


class GenerateAudioParams(BaseModel):
    """Parameters of ``audio.generate``; unset ones come from the profile."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    negative_prompt: str | None = Field(None, description="What the sound should not contain, e.g. 'low quality'.")
    duration: float | None = Field(None, gt=0, description=f"Seconds of audio (at most {MAX_DURATION:g}).",
                                   json_schema_extra={"maximum": MAX_DURATION})
    steps: int | None = Field(None, ge=1, le=1000, description="Denoising steps.")
    guidance: float | None = Field(None, ge=0.0, le=50.0, description="Classifier-free guidance scale.")


@dataclass
class AudioBatch:
    clips: list[Audio]
    model: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def generate_audio(
    prompts: list[str],
    params: GenerateAudioParams | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    models: Any = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    ctx: Any = None,
) -> AudioBatch:
    """Text to sound clips, one per prompt, in one batched pipeline call."""
    p, ctx, seed, prompts, d = begin_call(GenerateAudioParams, params, prompts, task=TASK, tool="audio.generate",
                                          seed=seed, ctx=ctx, progress=progress, models=models, profile=profile)
    duration = float(d.get(p, "duration", DEFAULT_DURATION))
    steps, guidance = int(d.get(p, "steps", DEFAULT_STEPS)), float(d.get(p, "guidance", DEFAULT_GUIDANCE))
    check_range(d, "duration", duration, 0.01, MAX_DURATION, unit=" s")
    check_range(d, "steps", steps, 1, 1000)
    if p.negative_prompt:
        d.settings["negative_prompt"] = p.negative_prompt
    started = time.perf_counter()
    with d.models.use(d.choice, "diffusers") as pipe:
        result = pipe(
            prompt=prompts,
            negative_prompt=[p.negative_prompt] * len(prompts) if p.negative_prompt else None,
            audio_length_in_s=duration,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators(seed, len(prompts)),
            callback=step_callback(ctx, steps, new_style=False),
            callback_steps=1,
            output_type="np",
        )
        rate = int(pipe.vocoder.config.sampling_rate)
    clips = [Audio(wave.astype("float32"), rate) for wave in result.audios]
    d.settings["sample_rate"] = rate
    note_provenance(ctx, d, seed)
    return AudioBatch(clips, d.model, seed, dict(d.settings), time.perf_counter() - started)


@tool(
    "audio.generate",
    task=TASK,
    description="Generate a sound effect or ambience (WAV) from a text description with AudioLDM.",
    inputs={"text": Port(name="text", modality="text", description="What the sound is (or a list of prompts).")},
    outputs={
        "audio": Port(name="audio", modality="audio", description="The (first) clip."),
        "audios": Port(name="audios", modality="audio", many=True, optional=True,
                       description="Every clip, when several prompts were given."),
    },
    params=GenerateAudioParams,
    seeded=True,
)
def generate_sound(text: Any, *, params: GenerateAudioParams, ctx: ToolContext) -> dict[str, Any]:
    """Text to audio."""
    batch = generate_audio(prompts_of(text, "audio.generate"), params, ctx=ctx)
    return first_and_all(batch.clips, "audio", "audios")

"""Text-to-speech with transformers VITS / MMS-TTS (``speech.synthesize``), written as WAV.

The neural voice next to ``speech.espeak``: any ``VitsModel`` checkpoint
(``facebook/mms-tts-eng`` and the other MMS languages, or a local VITS folder).
Several texts are synthesized in one padded batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio
from orchestrator.errors import ToolInputError
from orchestrator.tool import Port, ToolContext, tool

from ._common import MODEL_FIELD, begin_call, check_range, first_and_all, global_rng, note_provenance, prompts_of

__all__ = ["SpeechBatch", "SynthesizeParams", "synthesize_speech"]

TASK = "text-to-speech"
MAX_CHARS = 4000


class SynthesizeParams(BaseModel):
    """Parameters of ``speech.synthesize``; unset ones come from the profile, then the checkpoint."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    speaking_rate: float | None = Field(None, ge=0.25, le=4.0, description="Speed: >1 faster, <1 slower.")
    noise_scale: float | None = Field(None, ge=0.0, le=2.0, description="Variation in intonation (VITS noise).")


@dataclass
class SpeechBatch:
    clips: list[Audio]
    model: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def synthesize_speech(
    texts: list[str],
    params: SynthesizeParams | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    models: Any = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    ctx: Any = None,
) -> SpeechBatch:
    """Texts to speech clips at the checkpoint's sample rate, in one batched forward pass."""
    import numpy as np
    import torch

    p, ctx, seed, texts, d = begin_call(SynthesizeParams, params, texts, task=TASK, tool="speech.synthesize", seed=seed,
                                        ctx=ctx, progress=progress, models=models, profile=profile, max_chars=MAX_CHARS)
    rate_ = d.get(p, "speaking_rate")
    noise = d.get(p, "noise_scale")
    check_range(d, "speaking_rate", rate_, 0.25, 4.0)
    check_range(d, "noise_scale", noise, 0.0, 2.0)
    started = time.perf_counter()
    with d.models.use(d.choice, "transformers.vits") as bundle:
        model, tokenizer = bundle
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
        lengths = inputs["attention_mask"].sum(dim=1)
        if int(lengths.min()) <= 1:  # only the blank: nothing this voice can pronounce
            bad = int(lengths.argmin())
            raise ToolInputError(f"text {texts[bad]!r} has no characters this voice can speak", tool="speech.synthesize")
        inputs = inputs.to(model.device)
        saved = (model.speaking_rate, model.noise_scale)
        try:
            if rate_ is not None:
                model.speaking_rate = float(rate_)
            if noise is not None:
                model.noise_scale = float(noise)
            with global_rng(seed, str(model.device)), torch.inference_mode():
                out = model(**inputs)
        finally:
            model.speaking_rate, model.noise_scale = saved
        sr = int(model.config.sampling_rate)
        ctx.progress(1, 1)
    waves = out.waveform.float().cpu().numpy()
    clips = [Audio(np.ascontiguousarray(waves[i, : int(n)], dtype=np.float32), sr)
             for i, n in enumerate(out.sequence_lengths.cpu())]
    d.settings["sample_rate"] = sr
    note_provenance(ctx, d, seed)
    return SpeechBatch(clips, d.model, seed, dict(d.settings), time.perf_counter() - started)


@tool(
    "speech.synthesize",
    task=TASK,
    description="Read a text aloud with a neural voice (VITS / MMS-TTS), as WAV.",
    inputs={"text": Port(name="text", modality="text", description="What to say (or a list of texts).")},
    outputs={
        "audio": Port(name="audio", modality="audio", description="The (first) spoken clip."),
        "audios": Port(name="audios", modality="audio", many=True, optional=True,
                       description="Every clip, when several texts were given."),
    },
    params=SynthesizeParams,
    seeded=True,
)
def synthesize(text: Any, *, params: SynthesizeParams, ctx: ToolContext) -> dict[str, Any]:
    """Text to speech."""
    batch = synthesize_speech(prompts_of(text, "speech.synthesize"), params, ctx=ctx)
    return first_and_all(batch.clips, "audio", "audios")

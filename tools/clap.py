"""Zero-shot audio classification (``audio.classify``): CLAP style.

The audio is mixed to mono and resampled to the feature extractor's rate (48 kHz for
``laion/clap-htsat-unfused``), then cut into windows of the model's input length
(10 s there). Every window is embedded (all windows in batched forward passes), the
normalised window embeddings are averaged, and the result is compared with the text
embeddings of the labels put into ``hypothesis_template``. So a long recording is
judged on all of it, not on a random crop.

    >>> from tools.clap import classify_audio                            # doctest: +SKIP
    >>> classify_audio(clip, {"labels": ["a dog barking", "rain"]})[0]
    {'label': 'a dog barking', 'score': 0.87}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, audio_windows, batched, encoder, features, mono_at, to_device
from .clip import _labels, _template

__all__ = ["AudioClassifyParams", "classify_audio"]

TASK, TOOL, BACKEND = "zero-shot-audio-classification", "audio.classify", "transformers.dual-encoder"


class AudioClassifyParams(BaseModel):
    """Parameters of ``audio.classify``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    labels: list[str] = Field(min_length=1, max_length=1000, description="Candidate labels (at least one).")
    hypothesis_template: str = Field("the sound of {}", max_length=200, description="Sentence each label is put into.")
    max_windows: int = Field(32, ge=1, le=1024, description="Most windows embedded; longer audio is sampled evenly.")
    batch_size: int = Field(8, ge=1, le=64, description="Windows per forward pass.")

    _check_labels = field_validator("labels")(_labels)
    _check_template = field_validator("hypothesis_template")(_template)


def classify_audio(audio: Any, params: AudioClassifyParams | Mapping[str, Any], *, ctx: Any = None) -> list[dict[str, Any]]:
    """Every label with its probability for the whole clip, best first."""
    import torch

    p = params if isinstance(params, AudioClassifyParams) else AudioClassifyParams.model_validate(dict(params))
    from ._media import as_audio

    source = as_audio(audio, tool=TOOL, port="audio", ctx=ctx)
    mono_at(source, source.sample_rate, tool=TOOL)  # refuse empty or silent audio before loading
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    prompts = [p.hypothesis_template.format(label) for label in p.labels]
    with enc.use(exclusive=False) as (model, processor):
        fe = processor.feature_extractor
        rate = int(fe.sampling_rate)
        samples = mono_at(source, rate, tool=TOOL)
        windows = [w for _, w in audio_windows(samples, rate, float(fe.max_length_s))]
        if len(windows) > p.max_windows:
            pick = np.linspace(0, len(windows) - 1, p.max_windows).round().astype(int)
            windows = [windows[i] for i in pick]
        with torch.inference_mode():
            audio_rows = []
            for chunk in batched(windows, p.batch_size):
                inputs = to_device(fe(chunk, sampling_rate=rate, return_tensors="pt"), model)
                emb = features(model.get_audio_features(**inputs)).float()
                audio_rows.append(emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12))
            clip = torch.cat(audio_rows).mean(dim=0, keepdim=True)
            clip = clip / clip.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            text_inputs = to_device(processor.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True), model)
            text = features(model.get_text_features(**text_inputs)).float()
            text = text / text.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            scale = model.logit_scale_a.exp().float() if hasattr(model, "logit_scale_a") else torch.tensor(100.0)
            probs = (scale * clip @ text.T).softmax(dim=-1)[0].cpu().numpy()
    order = np.argsort(-probs, kind="stable")
    return [{"label": p.labels[i], "score": round(float(probs[i]), 6)} for i in order]


@tool(
    TOOL,
    task=TASK,
    description="Classify a sound among candidate labels given as a param, with no training (zero-shot, CLAP style).",
    inputs={"audio": Port(name="audio", modality="audio", description="The sound, any length and sample rate.")},
    outputs={
        "label": Port(name="label", modality="text", description="The most likely label."),
        "scores": Port(name="scores", modality="json", description='Every label, best first: [{"label", "score"}].'),
    },
    params=AudioClassifyParams,
)
def classify_sound(audio: Any, *, params: AudioClassifyParams, ctx: ToolContext) -> dict[str, Any]:
    """Audio plus candidate labels to the best label and all scores."""
    ranked = classify_audio(audio, params, ctx=ctx)
    return {"label": ranked[0]["label"], "scores": ranked}

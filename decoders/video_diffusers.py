"""Text-to-video with diffusers UNet3D pipelines (``video.generate``), written as MP4.

Works with ModelScope/damo ``text-to-video-ms-1.7b`` and zeroscope checkpoints
(``TextToVideoSDPipeline``), or any diffusers text-to-video pipeline that takes
``num_frames`` and returns ``frames``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.artifacts import Video
from orchestrator.tool import Port, ToolContext, tool

from ._common import (
    MODEL_FIELD,
    begin_call,
    check_multiple_of,
    check_range,
    first_and_all,
    note_provenance,
    prompts_of,
    step_callback,
)

__all__ = ["GenerateVideoParams", "VideoBatch", "generate_videos"]

TASK = "text-to-video"
DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_FRAMES, DEFAULT_FPS = 25, 9.0, 16, 8.0
MAX_FRAMES = 256


class GenerateVideoParams(BaseModel):
    """Parameters of ``video.generate``; unset ones come from the profile."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    negative_prompt: str | None = Field(None, description="What the video should not show.")
    width: int | None = Field(None, ge=8, le=2048, description="Pixels, a multiple of 8.")
    height: int | None = Field(None, ge=8, le=2048, description="Pixels, a multiple of 8.")
    frames: int | None = Field(None, ge=1, le=MAX_FRAMES, description="Number of frames.")
    fps: float | None = Field(None, gt=0, le=120, description="Frames per second of the MP4.")
    steps: int | None = Field(None, ge=1, le=500, description="Denoising steps.")
    guidance: float | None = Field(None, ge=0.0, le=50.0, description="Classifier-free guidance scale.")

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value


@dataclass
class VideoBatch:
    videos: list[Video]
    model: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _to_uint8(frames: Any) -> Any:
    import numpy as np

    arr = frames.detach().float().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return arr


def generate_videos(
    prompts: list[str],
    params: GenerateVideoParams | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    models: Any = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    ctx: Any = None,
) -> VideoBatch:
    """Text to videos, one per prompt. Prompts run one after another: UNet3D pipelines
    do not batch prompts reliably (diffusers skips its own batch tests for them)."""
    p, ctx, seed, prompts, d = begin_call(GenerateVideoParams, params, prompts, task=TASK, tool="video.generate",
                                          seed=seed, ctx=ctx, progress=progress, models=models, profile=profile)
    width, height = d.get(p, "width"), d.get(p, "height")
    frames = int(d.get(p, "frames", DEFAULT_FRAMES))
    fps = float(d.get(p, "fps", DEFAULT_FPS))
    steps, guidance = int(d.get(p, "steps", DEFAULT_STEPS)), float(d.get(p, "guidance", DEFAULT_GUIDANCE))
    for name, value in (("width", width), ("height", height)):
        check_multiple_of(d, name, value)
        check_range(d, name, value, 8, 2048)
    check_range(d, "frames", frames, 1, MAX_FRAMES)
    check_range(d, "fps", fps, 0.1, 120)
    check_range(d, "steps", steps, 1, 500)
    if p.negative_prompt:
        d.settings["negative_prompt"] = p.negative_prompt
    import torch

    videos = []
    started = time.perf_counter()
    with d.models.use(d.choice, "diffusers") as pipe:
        for i, prompt in enumerate(prompts):
            result = pipe(
                prompt=prompt,
                negative_prompt=p.negative_prompt,
                width=width,
                height=height,
                num_frames=frames,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(seed + i),
                callback=step_callback(ctx, steps, new_style=False),
                callback_steps=1,
                output_type="np",
            )
            clip = _to_uint8(result.frames[0])  # (frames, H, W, 3)
            videos.append(Video(clip, fps=fps))
    d.settings.update(width=int(videos[0].frames.shape[2]), height=int(videos[0].frames.shape[1]))
    note_provenance(ctx, d, seed)
    return VideoBatch(videos, d.model, seed, dict(d.settings), time.perf_counter() - started)


@tool(
    "video.generate",
    task=TASK,
    description="Generate a short video clip (MP4) from a text prompt with a text-to-video diffusion model.",
    inputs={"text": Port(name="text", modality="text", description="The prompt (or a list of prompts).")},
    outputs={
        "video": Port(name="video", modality="video", description="The (first) video."),
        "videos": Port(name="videos", modality="video", many=True, optional=True,
                       description="Every video, when several prompts were given."),
    },
    params=GenerateVideoParams,
    seeded=True,
)
def generate_video(text: Any, *, params: GenerateVideoParams, ctx: ToolContext) -> dict[str, Any]:
    """Text to video."""
    batch = generate_videos(prompts_of(text, "video.generate"), params, ctx=ctx)
    return first_and_all(batch.videos, "video", "videos")

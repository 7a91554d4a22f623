"""Video to text (``video.describe``, ``video-to-text``): captions of sampled frames plus a transcript.

1. Frames are sampled every ``interval`` seconds (at most ``max_frames``, spread
   evenly over the video when there would be more) and captioned in batched passes
   (``image.caption``'s model).
2. Consecutive frames with the same caption are merged into one scene.
3. When the video has an audio track that is not silent, it is transcribed
   (``speech.transcribe``'s model, windowed and batched, with timestamps).
4. The result is a timed description, scenes then speech, each line starting with its
   time span, plus the same as JSON.

TaskBench's Video-to-Text ("transcribes speech from a video file into text") maps
here: the transcript is in the text and alone under ``timeline["transcript"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.tool import Port, ToolContext, tool

from .image_captioning import CaptionParams, caption_images
from .speech_recognition import TranscribeParams, transcribe

__all__ = ["DescribeParams", "describe_video", "frame_times"]

TASK, TOOL = "video-to-text", "video.describe"


class DescribeParams(BaseModel):
    """Parameters of ``video.describe``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Captioning checkpoint (None: the profile's image-to-text choice).")
    asr_model: str | None = Field(None, description="Speech recognition checkpoint (None: the profile's choice).")
    interval: float = Field(2.0, gt=0.0, le=600.0, description="Seconds between sampled frames.")
    max_frames: int = Field(16, ge=1, le=256, description="Most frames captioned.")
    transcribe: bool = Field(True, description="Transcribe the audio track when there is one.")
    language: str | None = Field(None, max_length=32, description="Spoken language; None: detect.")
    max_tokens: int | None = Field(None, ge=1, le=256, description="Longest caption, in tokens.")
    batch_size: int = Field(8, ge=1, le=64, description="Frames per captioning pass.")


def frame_times(duration: float, interval: float, max_frames: int) -> list[float]:
    """Sample times in seconds: every ``interval`` from 0, thinned evenly to ``max_frames``."""
    times = list(np.arange(0.0, max(duration, 1e-9), interval))
    if len(times) > max_frames:
        times = list(np.linspace(0.0, duration, max_frames, endpoint=False))
    return [round(float(t), 3) for t in times]


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def describe_video(video: Any, params: DescribeParams | dict[str, Any] | None = None, *, ctx: Any = None) -> dict[str, Any]:
    """The timed description of a video: ``{"text", "timeline"}``; see the module docstring."""
    from PIL import Image

    from ._media import as_video, is_silent

    p = params if isinstance(params, DescribeParams) else DescribeParams.model_validate(dict(params or {}))
    v = as_video(video, tool=TOOL, port="video", ctx=ctx)
    duration = v.duration
    # 1. sample and caption frames
    times = frame_times(duration, p.interval, p.max_frames)
    frames = [Image.fromarray(np.ascontiguousarray(v.frames[min(len(v.frames) - 1, int(t * v.fps))])) for t in times]
    captions = caption_images(
        frames, CaptionParams(model=p.model, max_tokens=p.max_tokens, batch_size=p.batch_size), ctx=ctx, tool_name=TOOL
    ).texts
    # 2. merge unchanged captions into scenes
    scenes: list[dict[str, Any]] = []
    for i, (t, caption) in enumerate(zip(times, captions, strict=True)):
        end = times[i + 1] if i + 1 < len(times) else duration
        if scenes and scenes[-1]["caption"] == caption:
            scenes[-1]["end"] = round(end, 3)
        else:
            scenes.append({"start": t, "end": round(end, 3), "caption": caption})
    # 3. transcribe the audio track
    speech: dict[str, Any] | None = None
    note = None
    if not p.transcribe:
        note = "transcription off"
    elif v.audio is None:
        note = "no audio track"
    elif v.audio.samples.shape[0] == 0 or is_silent(v.audio.mono()):
        note = "audio track is silent"
    else:
        result = transcribe(v.audio, TranscribeParams(model=p.asr_model, language=p.language), ctx=ctx)
        speech = {"language": result.language, "segments": result.segments, "windows": result.windows}
    # 4. timed text
    w, h = v.size
    lines = [f"Video: {duration:.1f} s, {w}x{h}, {v.fps:g} fps.", "Scenes:"]
    lines += [f"[{_clock(s['start'])}-{_clock(s['end'])}] {s['caption']}" for s in scenes]
    transcript = ""
    if speech is not None:
        lines.append(f"Speech ({speech['language']}):" if speech["language"] else "Speech:")
        lines += [f"[{_clock(s['start'])}-{_clock(s['end'])}] {s['text']}" for s in speech["segments"]]
        transcript = " ".join(s["text"] for s in speech["segments"]).strip()
        if not speech["segments"]:
            lines.append("(no words recognised)")
    else:
        lines.append(f"Speech: none ({note}).")
    timeline = {
        "duration": round(duration, 3), "fps": v.fps, "width": w, "height": h,
        "frames": [{"time": t, "caption": c} for t, c in zip(times, captions, strict=True)],
        "scenes": scenes, "speech": speech, "speech_note": note, "transcript": transcript,
    }
    return {"text": "\n".join(lines), "timeline": timeline}


@tool(
    TOOL,
    task=TASK,
    description="Describe a video over time: captions of sampled frames and a transcript of its speech, with times.",
    inputs={"video": Port(name="video", modality="video", description="The video to describe.")},
    outputs={
        "text": Port(name="text", modality="text", description="Timed description: scenes, then speech."),
        "timeline": Port(name="timeline", modality="json",
                         description='{"duration", "frames", "scenes", "speech": {"language", "segments"}, "transcript"}'),
    },
    params=DescribeParams,
)
def video_describe(video: Any, *, params: DescribeParams, ctx: ToolContext) -> dict[str, Any]:
    """Video to a timed text description."""
    return describe_video(video, params, ctx=ctx)

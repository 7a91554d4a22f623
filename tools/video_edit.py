"""Video tools on decoded frames (numpy) and the codec's MP4 encoder: TaskBench's Video-to-Audio,
Video-to-Image, Image-to-Video, Video Speed Changer, Video Voiceover, Video Synchronization and
Video Stabilizer.

Videos are :class:`~orchestrator.artifacts.Video` objects (uint8 frames, fps, optional
audio track); the engine encodes outputs to MP4 (H.264 + AAC). Output size is checked
against the duration, pixel and memory limits before any frame is built.

>>> import numpy as np
>>> from orchestrator import Video, get_tool
>>> clip = Video(np.zeros((20, 32, 32, 3), np.uint8), fps=10)
>>> len(get_tool("video.speed").call({"video": clip, "instruction": "2x"})["video"].frames)
10
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.artifacts import Audio, Video
from orchestrator.errors import ToolInputError
from orchestrator.tool import tool

from ._media import (
    as_audio,
    as_image,
    as_list,
    as_text,
    as_video,
    check_audio_seconds,
    check_video,
    fit_image,
    fit_length,
    from_2d,
    limit_peak,
    parse_color,
    parse_speed,
    phase_correlation,
    resample,
    shift_frame,
    time_stretch,
    to_channels,
)

__all__ = [
    "FrameParams",
    "SlideshowParams",
    "SpeedParams",
    "StabilizeParams",
    "SyncParams",
    "VoiceoverParams",
    "change_speed",
    "stabilize",
]

logger = logging.getLogger("orchestrator.tools.video")


def _pad_or_trim(audio: Audio, seconds: float) -> Audio:
    return Audio(fit_length(audio.samples, max(1, int(round(seconds * audio.sample_rate)))), audio.sample_rate)


def _mix(a: Audio, b: Audio, b_gain: float = 1.0, a_gain: float = 1.0) -> Audio:
    """Sum two tracks at ``a``'s rate and the wider channel layout; as long as the longer one."""
    channels = max(a.channels, b.channels)
    x = to_channels(a.samples, channels) * a_gain
    y = to_channels(resample(b.samples, b.sample_rate, a.sample_rate), channels) * b_gain
    n = max(x.shape[0], y.shape[0])
    out = fit_length(x, n) + fit_length(y, n)
    return Audio(from_2d(limit_peak(out)), a.sample_rate)


# ---------------------------------------------------------------- Video-to-Audio


class ExtractAudioParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_rate: int | None = Field(default=None, ge=8000, le=192000, description="resample to this rate (default: keep)")
    mono: bool = Field(default=False, description="mix down to one channel")


@tool(
    "video.extract_audio",
    task="video-to-audio",
    description="Extract the audio track of a video as a WAV clip.",
    inputs={"video": "video"},
    outputs={"audio": "audio"},
    params=ExtractAudioParams,
)
def video_to_audio(video: Any, *, params: ExtractAudioParams, ctx: Any = None) -> Audio:
    clip = as_video(video, tool="video.extract_audio", port="video", ctx=ctx)
    if clip.audio is None or clip.audio.samples.shape[0] == 0:
        raise ToolInputError("the video has no audio track to extract", tool="video.extract_audio", port="video")
    samples, rate = clip.audio.samples, clip.audio.sample_rate
    if params.mono:
        samples = from_2d(to_channels(samples, 1))
    if params.sample_rate and params.sample_rate != rate:
        samples, rate = resample(samples, rate, params.sample_rate), params.sample_rate
    return Audio(samples, rate)


# ---------------------------------------------------------------- Video-to-Image


class FrameParams(BaseModel):
    """Pick a frame by ``time`` (seconds) or ``index`` (negative counts from the end), else by ``position``."""

    model_config = ConfigDict(extra="forbid")

    time: float | None = Field(default=None, ge=0, description="seconds from the start")
    index: int | None = Field(default=None, description="frame number; -1 is the last frame")
    position: Literal["first", "middle", "last"] = Field(default="middle", description="used when neither time nor index is given")

    @model_validator(mode="after")
    def _one(self) -> FrameParams:
        if self.time is not None and self.index is not None:
            raise ValueError("give time or index, not both")
        return self


@tool(
    "video.frame",
    task="video-to-image",
    description="Extract a still image from a video: the frame at a time or index (default: the middle frame).",
    inputs={"video": "video"},
    outputs={"image": "image"},
    params=FrameParams,
)
def video_to_image(video: Any, *, params: FrameParams, ctx: Any = None) -> Any:
    from PIL import Image

    clip = as_video(video, tool="video.frame", port="video", ctx=ctx)
    n = len(clip.frames)
    if params.time is not None:
        if params.time > clip.duration + 1e-6:
            raise ToolInputError(
                f"frame at {params.time:g}s requested but the video lasts {clip.duration:.3f}s", tool="video.frame"
            )
        i = min(int(params.time * clip.fps + 1e-6), n - 1)
    elif params.index is not None:
        if not -n <= params.index < n:
            raise ToolInputError(f"frame index {params.index} is out of range: the video has {n} frame(s)", tool="video.frame")
        i = params.index % n
    else:
        i = {"first": 0, "middle": n // 2, "last": n - 1}[params.position]
    return Image.fromarray(clip.frames[i])


# ---------------------------------------------------------------- Image-to-Video


class SlideshowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds_per_image: float = Field(default=2.0, gt=0, le=600)
    fps: float = Field(default=24.0, ge=1, le=60)
    width: int | None = Field(default=None, ge=16, le=4096, description="default: the first image's width")
    height: int | None = Field(default=None, ge=16, le=4096, description="default: the first image's height")
    transition: float = Field(default=0.0, ge=0, le=10, description="crossfade seconds between images")
    background: str = Field(default="black", description="letterbox colour for images of another aspect")
    fit_audio: Literal["trim", "extend"] = Field(
        default="trim",
        description="with a soundtrack: 'trim' cuts or pads it to the slideshow; 'extend' lengthens each image so "
        "the slideshow lasts as long as the soundtrack",
    )


@tool(
    "video.slideshow",
    task="image-to-video",
    description="Make a slideshow video from images (seconds per image, fps, crossfade), with an optional soundtrack.",
    inputs={
        "images": {"modality": "image", "many": True},
        "audio": {"modality": "audio", "optional": True, "description": "soundtrack"},
    },
    outputs={"video": "video"},
    params=SlideshowParams,
)
def image_to_video(images: Any, audio: Any = None, *, params: SlideshowParams, ctx: Any = None) -> Video:
    name = "video.slideshow"
    # 1. Check inputs
    pics = [as_image(im, tool=name, port="images", ctx=ctx) for im in as_list(images, tool=name, port="images")]
    track = as_audio(audio, tool=name, port="audio", ctx=ctx) if audio is not None else None
    w = params.width or pics[0].width
    h = params.height or pics[0].height
    w, h = w + w % 2, h + h % 2  # H.264 wants even sides
    seconds = params.seconds_per_image
    if track is not None and params.fit_audio == "extend":
        seconds = max(seconds, track.duration / len(pics))
    per = max(1, int(round(seconds * params.fps)))
    total = per * len(pics)
    check_video(total, w, h, params.fps, ctx, tool=name)
    # 2. Lay out frames: each image letterboxed to the frame size, held for `per` frames
    bg = parse_color(params.background, tool=name)
    stills = [fit_image(p, w, h, bg) for p in pics]
    frames = np.repeat(np.stack(stills), per, axis=0)
    fade = min(int(params.transition * params.fps), per)
    if fade > 0:
        for k in range(1, len(stills)):
            start = k * per
            alpha = np.linspace(0, 1, fade + 2)[1:-1, None, None, None]
            frames[start : start + fade] = (stills[k - 1] * (1 - alpha) + stills[k] * alpha).round().astype(np.uint8)
    # 3. Soundtrack fitted to the slideshow
    if track is not None:
        track = _pad_or_trim(track, total / params.fps)
    return Video(frames, params.fps, track)


# ---------------------------------------------------------------- Video Speed Changer


class SpeedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: float | None = Field(default=None, ge=0.1, le=10, description="2: twice as fast; 0.5: half speed")
    preserve_pitch: bool = Field(default=True, description="time-stretch the audio keeping its pitch (else it sounds higher/lower)")


def change_speed(clip: Video, factor: float, preserve_pitch: bool = True) -> Video:
    """Play ``clip`` ``factor`` times faster at the same fps: frames dropped or repeated, audio
    time-stretched. A one-frame video stays one frame (only its audio changes)."""
    n = len(clip.frames)
    n_out = max(1, int(round(n / factor)))
    idx = np.minimum((np.arange(n_out) * factor).astype(int), n - 1)
    audio = None
    if clip.audio is not None and clip.audio.samples.shape[0] > 0:
        a = clip.audio
        if preserve_pitch:
            samples = time_stretch(a.samples, factor, a.sample_rate)
        else:  # play the samples faster: resample to fewer samples at the same rate
            samples = resample(a.samples, int(round(a.sample_rate * factor)), a.sample_rate)
        audio = Audio(samples, a.sample_rate)
    return Video(clip.frames[idx], clip.fps, audio)


@tool(
    "video.speed",
    task="video-speed-changer",
    description="Speed a video up or slow it down by a factor or an instruction ('1.5x', 'slow it down by 50%').",
    inputs={"video": "video", "instruction": {"modality": "text", "optional": True}},
    outputs={"video": "video"},
    params=SpeedParams,
)
def video_speed_changer(video: Any, instruction: Any = None, *, params: SpeedParams, ctx: Any = None) -> Video:
    name = "video.speed"
    clip = as_video(video, tool=name, port="video", ctx=ctx)
    factor = params.factor
    if factor is None and instruction is not None:
        text = as_text(instruction, tool=name, port="instruction")
        factor = parse_speed(text)
        if factor is None:
            raise ToolInputError(
                f"the instruction {text[:80]!r} names no speed; say e.g. '1.5x', 'twice as fast', 'slow down by 50%'",
                tool=name, port="instruction",
            )
        if not 0.1 <= factor <= 10:
            raise ToolInputError(f"speed factor {factor:g} from the instruction is outside 0.1-10", tool=name)
    if factor is None:
        raise ToolInputError("give a speed factor param or an instruction text", tool=name)
    n_out = max(1, int(round(len(clip.frames) / factor)))
    check_video(n_out, clip.size[0], clip.size[1], clip.fps, ctx, tool=name)
    return change_speed(clip, factor, params.preserve_pitch)


# ---------------------------------------------------------------- Video Voiceover


class VoiceoverParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voice: str = Field(default="en", pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*(\+[A-Za-z0-9_\-]+)?$", description="espeak-ng voice")
    rate: int = Field(default=165, ge=80, le=450, description="words per minute")
    pitch: int = Field(default=50, ge=0, le=99)
    mode: Literal["mix", "replace"] = Field(default="mix", description="mix over the original sound, or replace it")
    original_volume: float = Field(default=0.3, ge=0, le=1, description="level of the original sound when mixing")
    start: float = Field(default=0.0, ge=0, le=3600, description="seconds into the video where the speech starts")
    fit: Literal["extend", "trim", "stretch"] = Field(
        default="extend",
        description="speech longer than the video: 'extend' holds the last frame until it ends, 'trim' cuts the "
        "speech, 'stretch' speeds the speech up to fit (at most 2x, then extends)",
    )


@tool(
    "video.voiceover",
    task="video-voiceover",
    description="Add a spoken voiceover (eSpeak NG) of a script to a video, mixed over or replacing its sound.",
    inputs={"video": "video", "text": {"modality": "text", "description": "the script to speak"}},
    outputs={"video": "video"},
    params=VoiceoverParams,
)
def video_voiceover(video: Any, text: Any, *, params: VoiceoverParams, ctx: Any = None) -> Video:
    from decoders.speech_espeak import synthesize

    name = "video.voiceover"
    clip = as_video(video, tool=name, port="video", ctx=ctx)
    script = as_text(text, tool=name, port="text")
    if not script.strip():
        raise ToolInputError("the voiceover script is empty", tool=name, port="text")
    speech = synthesize(script, voice=params.voice, rate=params.rate, pitch=params.pitch)
    room = clip.duration - params.start
    if speech.duration > room and params.fit == "stretch" and room > 0:
        factor = min(2.0, speech.duration / room)
        speech = Audio(time_stretch(speech.samples, factor, speech.sample_rate), speech.sample_rate)
    if params.fit == "trim":
        speech = _pad_or_trim(speech, max(room, 1.0 / speech.sample_rate))
    lead = np.zeros(int(params.start * speech.sample_rate), dtype=np.float32)
    speech = Audio(np.concatenate([lead, speech.samples]), speech.sample_rate)
    frames = clip.frames
    if speech.duration > clip.duration:  # hold the last frame while the speech goes on
        extra = int(np.ceil((speech.duration - clip.duration) * clip.fps))
        check_video(len(frames) + extra, clip.size[0], clip.size[1], clip.fps, ctx, tool=name)
        frames = np.concatenate([frames, np.repeat(frames[-1:], extra, axis=0)])
    seconds = len(frames) / clip.fps
    check_audio_seconds(seconds, ctx, tool=name)
    if params.mode == "mix" and clip.audio is not None and clip.audio.samples.shape[0] > 0:
        track = _mix(clip.audio, speech, a_gain=params.original_volume)
    else:
        track = speech
    return Video(frames, clip.fps, _pad_or_trim(track, seconds))


# ---------------------------------------------------------------- Video Synchronization


class SyncParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["stretch", "pad_trim"] = Field(
        default="stretch",
        description="'stretch' time-stretches the audio (pitch kept) to the video's length; 'pad_trim' pads it "
        "with silence or cuts it",
    )
    max_stretch: float = Field(default=4.0, ge=1, le=10, description="largest speed change 'stretch' may apply")
    mode: Literal["replace", "mix"] = Field(default="replace", description="replace the video's sound, or mix over it")
    original_volume: float = Field(default=0.3, ge=0, le=1, description="level of the original sound when mixing")


@tool(
    "video.sync_audio",
    task="video-synchronization",
    description="Fit an audio track (voiceover, music) to a video's length by time-stretching or padding/trimming, "
    "and put it on the video.",
    inputs={"video": "video", "audio": "audio"},
    outputs={"video": "video"},
    params=SyncParams,
)
def video_synchronization(video: Any, audio: Any, *, params: SyncParams, ctx: Any = None) -> Video:
    name = "video.sync_audio"
    clip = as_video(video, tool=name, port="video", ctx=ctx)
    track = as_audio(audio, tool=name, port="audio", ctx=ctx)
    if params.method == "stretch":
        factor = track.duration / clip.duration
        if not 1 / params.max_stretch <= factor <= params.max_stretch:
            raise ToolInputError(
                f"the audio lasts {track.duration:.2f}s and the video {clip.duration:.2f}s: fitting needs a "
                f"{factor:.2f}x speed change, beyond max_stretch={params.max_stretch:g}; use method='pad_trim' or "
                "raise max_stretch",
                tool=name,
            )
        track = Audio(time_stretch(track.samples, factor, track.sample_rate), track.sample_rate)
    track = _pad_or_trim(track, clip.duration)
    if params.mode == "mix" and clip.audio is not None and clip.audio.samples.shape[0] > 0:
        track = _pad_or_trim(_mix(clip.audio, track, a_gain=params.original_volume), clip.duration)
    return Video(clip.frames, clip.fps, track)


# ---------------------------------------------------------------- Video Stabilizer


class StabilizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    smoothing: int = Field(
        default=15, ge=0, le=300,
        description="radius in frames of the moving average the camera path is smoothed with; 0 locks the "
        "view to the first frame",
    )
    max_shift: float = Field(default=0.15, gt=0, le=0.5, description="largest correction, as a fraction of the frame size")


def stabilize(clip: Video, p: StabilizeParams) -> Video:
    """Translation-only stabilization (numpy): measure the global shift between consecutive frames by
    phase correlation, integrate it into a camera path, smooth the path with a moving average, and
    move each frame by (smoothed - measured) whole pixels; uncovered borders repeat the edge pixels.
    Rotation and zoom shake are not corrected. A one-frame video is returned unchanged."""
    n = len(clip.frames)
    if n < 2:
        return Video(clip.frames.copy(), clip.fps, clip.audio)
    h, w = clip.frames.shape[1:3]
    step = max(1, int(np.ceil(max(h, w) / 256)))  # analyse at most ~256 px
    gray = clip.frames[:, ::step, ::step].astype(np.float32).mean(axis=3)
    path = np.zeros((n, 2))
    for i in range(1, n):
        dy, dx = phase_correlation(gray[i - 1], gray[i])
        path[i] = path[i - 1] + (dy * step, dx * step)
    if p.smoothing == 0:
        target = np.zeros_like(path)
    else:
        r = p.smoothing
        padded = np.pad(path, ((r, r), (0, 0)), mode="edge")
        kernel = np.ones(2 * r + 1) / (2 * r + 1)
        target = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)], axis=1)
    limit = np.array([h, w]) * p.max_shift
    correction = np.clip(np.round(target - path), -limit, limit).astype(int)
    frames = np.stack([shift_frame(f, int(dy), int(dx)) for f, (dy, dx) in zip(clip.frames, correction)])
    logger.debug("stabilize: mean |correction| %.2f px", float(np.abs(correction).mean()))
    return Video(frames, clip.fps, clip.audio)


@tool(
    "video.stabilize",
    task="video-stabilizer",
    description="Stabilize a shaky video: translation-only motion compensation along a smoothed camera path.",
    inputs={"video": "video"},
    outputs={"video": "video"},
    params=StabilizeParams,
)
def video_stabilizer(video: Any, *, params: StabilizeParams, ctx: Any = None) -> Video:
    return stabilize(as_video(video, tool="video.stabilize", port="video", ctx=ctx), params)

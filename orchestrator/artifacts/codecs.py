"""Codecs: Python objects <-> canonical bytes, with validation on the way in.

Canonical encodings: text UTF-8, image PNG, audio WAV (16-bit PCM, sample rate
kept), video MP4 (H.264, optional AAC track, fps kept), embedding float32 ``.npy``,
JSON. Foreign encodings handed to :func:`canonicalize` (JPEG, FLAC, WebM …) are
validated and converted; anything empty, truncated, mislabelled or over a limit
raises an :class:`~orchestrator.errors.ArtifactError` that says which and why.

Python types per modality: ``str``; ``PIL.Image.Image``; :class:`Audio`;
:class:`Video`; ``numpy.ndarray`` (float32); ``dict``/``list``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ArtifactDecodeError, ArtifactTooLarge

from ._ref import ArtifactMeta, Modality

__all__ = [
    "Audio",
    "Limits",
    "Video",
    "canonicalize",
    "decode",
    "encode",
    "infer_modality",
    "sniff",
]


@dataclass(frozen=True)
class Limits:
    """What decoding accepts. The store passes the settings' values."""

    max_bytes: int = 1 << 30
    max_pixels: int = 64_000_000
    max_audio_seconds: float = 3600.0
    max_video_seconds: float = 1800.0


DEFAULT_LIMITS = Limits()


@dataclass
class Audio:
    """Samples as float32 in [-1, 1], shape ``(n,)`` or ``(n, channels)``, plus the rate.

    >>> a = Audio(np.zeros(16000, dtype=np.float32), 16000)
    >>> a.duration
    1.0
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        self.samples = np.asarray(self.samples, dtype=np.float32)
        if self.samples.ndim not in (1, 2):
            raise ValueError(f"audio samples must be 1-D or 2-D (n, channels), got shape {self.samples.shape}")
        if int(self.sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        self.sample_rate = int(self.sample_rate)

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else self.samples.shape[1]

    def mono(self) -> np.ndarray:
        return self.samples if self.samples.ndim == 1 else self.samples.mean(axis=1)


@dataclass
class Video:
    """Frames as uint8 ``(T, H, W, 3)``, frames per second, and an optional audio track."""

    frames: np.ndarray
    fps: float
    audio: Audio | None = field(default=None)

    def __post_init__(self) -> None:
        frames = self.frames
        if isinstance(frames, (list, tuple)):
            frames = np.stack([np.asarray(_to_rgb_array(f)) for f in frames]) if frames else np.zeros((0, 0, 0, 3))
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            frames = np.clip(frames * (255.0 if frames.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"video frames must be (T, H, W, 3), got shape {frames.shape}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        self.frames = frames

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def _to_rgb_array(img: Any) -> np.ndarray:
    from PIL import Image

    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    return np.asarray(img)


# ---------------------------------------------------------------- sniffing


def sniff(data: bytes) -> Modality | None:
    """Guess the modality from magic bytes; ``None`` for plain text or unknown."""
    head = data[:16]
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff") or head[:4] in (b"GIF8", b"BM\x00\x00"):
        return Modality.IMAGE
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return Modality.IMAGE
    if head.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return Modality.AUDIO
    if head.startswith((b"fLaC", b"OggS", b"ID3")) or head[:2] in (b"\xff\xfb", b"\xff\xf3"):
        return Modality.AUDIO
    if data[4:8] == b"ftyp" or head.startswith(b"\x1aE\xdf\xa3"):
        return Modality.VIDEO
    if head.startswith(b"\x93NUMPY"):
        return Modality.EMBEDDING
    return None


def infer_modality(obj: Any) -> Modality:
    """The modality a Python object encodes to."""
    from PIL import Image

    if isinstance(obj, str):
        return Modality.TEXT
    if isinstance(obj, Image.Image):
        return Modality.IMAGE
    if isinstance(obj, Audio):
        return Modality.AUDIO
    if isinstance(obj, Video):
        return Modality.VIDEO
    if isinstance(obj, np.ndarray):
        return Modality.IMAGE if obj.dtype == np.uint8 and obj.ndim == 3 else Modality.EMBEDDING
    if isinstance(obj, (dict, list, int, float, bool)) or obj is None:
        return Modality.JSON
    raise TypeError(f"cannot infer a modality for {type(obj).__name__}; pass modality= explicitly")


# ---------------------------------------------------------------- encode


def encode(obj: Any, modality: Modality | str | None = None) -> tuple[bytes, ArtifactMeta]:
    """Encode a Python object to canonical bytes plus media metadata."""
    modality = Modality(modality) if modality is not None else infer_modality(obj)
    try:
        return _ENCODERS[modality](obj)
    except (TypeError, ValueError) as exc:
        raise ArtifactDecodeError(f"cannot encode {type(obj).__name__} as {modality}: {exc}") from exc


def _encode_text(obj: Any) -> tuple[bytes, ArtifactMeta]:
    if not isinstance(obj, str):
        raise TypeError("text must be str")
    return obj.encode("utf-8"), ArtifactMeta()


def _encode_image(obj: Any) -> tuple[bytes, ArtifactMeta]:
    from PIL import Image

    if isinstance(obj, np.ndarray):
        obj = Image.fromarray(obj)
    if not isinstance(obj, Image.Image):
        raise TypeError("image must be a PIL.Image or a uint8 (H, W, C) array")
    if obj.mode not in ("RGB", "RGBA", "L", "LA", "I;16", "I"):
        obj = obj.convert("RGBA" if "A" in obj.getbands() else "RGB")
    buf = io.BytesIO()
    obj.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), ArtifactMeta(width=obj.width, height=obj.height)


def _encode_audio(obj: Any) -> tuple[bytes, ArtifactMeta]:
    import soundfile as sf

    if not isinstance(obj, Audio):
        raise TypeError("audio must be an Audio(samples, sample_rate)")
    samples = np.nan_to_num(obj.samples, nan=0.0, posinf=1.0, neginf=-1.0)
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), obj.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue(), ArtifactMeta(sample_rate=obj.sample_rate, channels=obj.channels, duration=round(obj.duration, 6))


def _encode_video(obj: Any) -> tuple[bytes, ArtifactMeta]:
    import av

    if not isinstance(obj, Video):
        raise TypeError("video must be a Video(frames, fps, audio=None)")
    if len(obj.frames) == 0:
        raise ValueError("a video needs at least one frame")
    frames = obj.frames
    h, w = frames.shape[1], frames.shape[2]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1], frames.shape[2]
    rate = Fraction(obj.fps).limit_denominator(1001)
    # a real file: faststart (moov atom first, for players streaming by Range) rewrites it
    tmp = tempfile.NamedTemporaryFile(suffix=".mp4", delete=False)
    tmp.close()
    try:
        _write_mp4(tmp.name, frames, rate, obj.audio)
        data = Path(tmp.name).read_bytes()
    finally:
        os.unlink(tmp.name)
    meta = ArtifactMeta(
        width=w, height=h, fps=float(rate), frames=len(frames), duration=round(len(frames) / float(rate), 6),
        has_audio=obj.audio is not None,
    )
    return data, meta


def _write_mp4(path: str, frames: np.ndarray, rate: Fraction, audio: Audio | None) -> None:
    import av

    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "18", "threads": "1", "flags": "+bitexact"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=audio.sample_rate, options={"flags": "+bitexact"})
            astream.layout = "mono" if audio.channels == 1 else "stereo"
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
        if astream is not None and audio is not None:
            _mux_audio(container, astream, audio)


def _mux_audio(container: Any, astream: Any, audio: Audio) -> None:
    import av

    samples = audio.samples if audio.samples.ndim == 2 else audio.samples[:, None]
    samples = np.clip(samples, -1, 1).astype(np.float32)
    if samples.shape[1] > 2:
        samples = samples[:, :2]
    frame_size = astream.codec_context.frame_size or 1024
    planar = np.ascontiguousarray(samples.T)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    for start in range(0, planar.shape[1], frame_size):
        chunk = np.ascontiguousarray(planar[:, start : start + frame_size])
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        af.sample_rate = audio.sample_rate
        af.pts = start
        container.mux(astream.encode(af))
    container.mux(astream.encode())


def _encode_embedding(obj: Any) -> tuple[bytes, ArtifactMeta]:
    arr = np.asarray(obj, dtype=np.float32)
    if arr.ndim == 0:
        raise ValueError("an embedding must have at least one dimension")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue(), ArtifactMeta(shape=list(arr.shape))


def _encode_json(obj: Any) -> tuple[bytes, ArtifactMeta]:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8"), ArtifactMeta()


_ENCODERS = {
    Modality.TEXT: _encode_text,
    Modality.IMAGE: _encode_image,
    Modality.AUDIO: _encode_audio,
    Modality.VIDEO: _encode_video,
    Modality.EMBEDDING: _encode_embedding,
    Modality.JSON: _encode_json,
}


# ---------------------------------------------------------------- decode


def decode(data: bytes, modality: Modality | str, *, limits: Limits = DEFAULT_LIMITS, artifact_id: str | None = None) -> Any:
    """Decode canonical (or foreign but supported) bytes to the modality's Python type."""
    modality = Modality(modality)
    _check_basic(data, modality, limits, artifact_id)
    try:
        return _DECODERS[modality](data, limits, artifact_id)
    except (ArtifactDecodeError, ArtifactTooLarge):
        raise
    except Exception as exc:  # a library error deep in PIL / libsndfile / ffmpeg
        raise ArtifactDecodeError(f"cannot decode {modality}: {exc}", artifact_id=artifact_id) from exc


def _check_basic(data: bytes, modality: Modality, limits: Limits, artifact_id: str | None) -> None:
    if len(data) > limits.max_bytes:
        raise ArtifactTooLarge(
            f"{modality} is {len(data)} bytes, over the {limits.max_bytes}-byte limit", artifact_id=artifact_id
        )
    if not data and modality is not Modality.TEXT:
        raise ArtifactDecodeError(f"{modality} is empty (zero bytes)", artifact_id=artifact_id)
    sniffed = sniff(data)
    if sniffed is not None and sniffed is not modality and modality is not Modality.TEXT:
        raise ArtifactDecodeError(f"declared {modality} but the bytes are {sniffed}", artifact_id=artifact_id)
    if modality in (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO, Modality.EMBEDDING) and sniffed is None:
        raise ArtifactDecodeError(f"declared {modality} but the bytes are no known {modality} format", artifact_id=artifact_id)


def _decode_text(data: bytes, limits: Limits, aid: str | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactDecodeError(f"text is not valid UTF-8 at byte {exc.start}", artifact_id=aid) from exc


def _decode_image(data: bytes, limits: Limits, aid: str | None) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as probe:
        w, h = probe.size
    if w * h > limits.max_pixels:
        raise ArtifactTooLarge(f"image is {w}x{h} = {w * h} pixels, over the {limits.max_pixels}-pixel limit", artifact_id=aid)
    img = Image.open(io.BytesIO(data))
    img.load()  # forces full decode: truncated files fail here
    return img


def _decode_audio(data: bytes, limits: Limits, aid: str | None) -> Audio:
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(data)) as f:
        if f.samplerate <= 0 or f.frames < 0:
            raise ArtifactDecodeError("audio header is invalid", artifact_id=aid)
        seconds = f.frames / f.samplerate
        if seconds > limits.max_audio_seconds:
            raise ArtifactTooLarge(f"audio is {seconds:.1f}s, over the {limits.max_audio_seconds:.0f}s limit", artifact_id=aid)
        samples = f.read(dtype="float32", always_2d=False)
        if data[:4] == b"RIFF" and len(samples) < f.frames:
            raise ArtifactDecodeError("audio is truncated", artifact_id=aid)
        return Audio(samples, f.samplerate)


def _decode_video(data: bytes, limits: Limits, aid: str | None) -> Video:
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise ArtifactDecodeError("video has no video stream", artifact_id=aid)
        vs = container.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 0) or 25.0
        _check_video_duration(container, vs, limits, aid)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(vs)]
    if not frames:
        raise ArtifactDecodeError("video has no decodable frames", artifact_id=aid)
    audio = _decode_video_audio(data)
    return Video(np.stack(frames), fps, audio)


def _check_video_duration(container: Any, vs: Any, limits: Limits, aid: str | None) -> None:
    seconds = float(container.duration / 1_000_000) if container.duration else 0.0
    if seconds > limits.max_video_seconds:
        raise ArtifactTooLarge(f"video is {seconds:.1f}s, over the {limits.max_video_seconds:.0f}s limit", artifact_id=aid)
    if vs.width * vs.height > limits.max_pixels:
        raise ArtifactTooLarge(f"video frames are {vs.width}x{vs.height}, over the pixel limit", artifact_id=aid)


def _decode_video_audio(data: bytes) -> Audio | None:
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        rate = astream.rate or astream.codec_context.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono" if astream.channels == 1 else "stereo", rate=rate)
        chunks = []
        for frame in container.decode(astream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1, astream.channels if astream.channels <= 2 else 2))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1, astream.channels if astream.channels <= 2 else 2))
    if not chunks:
        return None
    samples = np.concatenate(chunks)
    return Audio(samples[:, 0] if samples.shape[1] == 1 else samples, rate)


def _decode_embedding(data: bytes, limits: Limits, aid: str | None) -> np.ndarray:
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _decode_json(data: bytes, limits: Limits, aid: str | None) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactDecodeError(f"JSON is malformed: {exc}", artifact_id=aid) from exc


_DECODERS = {
    Modality.TEXT: _decode_text,
    Modality.IMAGE: _decode_image,
    Modality.AUDIO: _decode_audio,
    Modality.VIDEO: _decode_video,
    Modality.EMBEDDING: _decode_embedding,
    Modality.JSON: _decode_json,
}


# ---------------------------------------------------------------- canonicalize


def canonicalize(
    data: bytes, modality: Modality | str, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes, ArtifactMeta, Any]:
    """Validate incoming bytes and return ``(canonical_bytes, meta, decoded_object)``.

    Already-canonical bytes are kept as they are (so their id does not change);
    foreign formats (JPEG, FLAC, OGG, WebM …) are converted.
    """
    modality = Modality(modality)
    obj = decode(data, modality, limits=limits)
    if _is_canonical(data, modality):
        return data, _meta_of(obj, modality), obj
    canonical, meta = encode(obj, modality)
    return canonical, meta, obj


def _is_canonical(data: bytes, modality: Modality) -> bool:
    if modality is Modality.IMAGE:
        return data.startswith(b"\x89PNG")
    if modality is Modality.AUDIO:
        return data[:4] == b"RIFF"
    if modality is Modality.VIDEO:
        return data[4:8] == b"ftyp"
    # text is kept byte for byte; embeddings and JSON are re-encoded (dtype, key order)
    return modality is Modality.TEXT


def _meta_of(obj: Any, modality: Modality) -> ArtifactMeta:
    if modality is Modality.IMAGE:
        return ArtifactMeta(width=obj.width, height=obj.height)
    if modality is Modality.AUDIO:
        return ArtifactMeta(sample_rate=obj.sample_rate, channels=obj.channels, duration=round(obj.duration, 6))
    if modality is Modality.VIDEO:
        w, h = obj.size
        return ArtifactMeta(
            width=w, height=h, fps=obj.fps, frames=len(obj.frames), duration=round(obj.duration, 6),
            has_audio=obj.audio is not None,
        )
    if modality is Modality.EMBEDDING:
        return ArtifactMeta(shape=list(obj.shape))
    return ArtifactMeta()


def approx_nbytes(obj: Any) -> int:
    """Rough in-memory size of a decoded object, for the decoded-object cache."""
    if isinstance(obj, str):
        return len(obj) * 2 + 50
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, Audio):
        return int(obj.samples.nbytes)
    if isinstance(obj, Video):
        return int(obj.frames.nbytes) + (int(obj.audio.samples.nbytes) if obj.audio else 0)
    if hasattr(obj, "width") and hasattr(obj, "getbands"):
        return obj.width * obj.height * len(obj.getbands())
    return 1024

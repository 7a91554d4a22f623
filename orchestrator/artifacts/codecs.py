"""Codecs: Python objects <-> canonical bytes, with validation on the way in.

Canonical encodings: text UTF-8, image PNG, audio WAV (16-bit PCM, sample rate
kept), video MP4 (H.264 yuv420p, optional AAC track, fps kept), embedding
float32 little-endian ``.npy``, JSON (sorted keys, compact). Foreign encodings
handed to :func:`canonicalize` (JPEG, GIF, FLAC, OGG, MP3, WebM, MPEG-4 part 2,
MOV …) are validated and converted; anything empty, truncated, mislabelled or
over a limit raises an :class:`~orchestrator.errors.ArtifactError` that says
which artifact and why.

Python types per modality: ``str``; ``PIL.Image.Image``; :class:`Audio`;
:class:`Video`; ``numpy.ndarray`` (float32); ``dict``/``list`` (any JSON value).
Decoded arrays may be read-only views of the bytes: copy before changing them.

>>> data, meta = encode({"b": 1, "a": [1, 2]})
>>> data
b'{"a":[1,2],"b":1}'
>>> decode(data, "json")
{'a': [1, 2], 'b': 1}
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from orchestrator.errors import ArtifactDecodeError, ArtifactError, ArtifactTooLarge

from ._ref import ArtifactMeta, Modality

__all__ = [
    "Audio",
    "Encoded",
    "Limits",
    "Video",
    "canonicalize",
    "decode",
    "encode",
    "encode_object",
    "infer_modality",
    "sniff",
]


@dataclass(frozen=True)
class Limits:
    """What encoding and decoding accept. The store passes the settings' values.

    ``max_audio_samples`` (channels x rate x duration) and ``max_video_pixels``
    (width x height x frames) bound what a file decodes to, whatever it weighs: they
    are checked from the container's metadata before decoding, and again while
    decoding (metadata can lie).
    """

    max_bytes: int = 1 << 30
    max_pixels: int = 64_000_000
    max_audio_seconds: float = 3600.0
    max_video_seconds: float = 1800.0
    max_audio_samples: int = 32_000_000
    max_video_pixels: int = 256_000_000

    @classmethod
    def from_settings(cls, s: Any) -> Limits:
        """The limits an :class:`~orchestrator.settings.Settings` names."""
        return cls(max_bytes=s.max_artifact_bytes, max_pixels=s.max_image_pixels, max_audio_seconds=s.max_audio_seconds,
                   max_video_seconds=s.max_video_seconds,
                   max_audio_samples=getattr(s, "max_audio_samples", cls.max_audio_samples),
                   max_video_pixels=getattr(s, "max_video_pixels", cls.max_video_pixels))


DEFAULT_LIMITS = Limits()


class Encoded(NamedTuple):
    """Canonical bytes, the media facts read off them, and the object they decode to
    (``None`` for audio or video converted block by block, which is not kept decoded)."""

    data: bytes
    meta: ArtifactMeta
    obj: Any


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
    """Frames as uint8 ``(T, H, W, 3)``, frames per second, and an optional audio track.

    Accepts a list of PIL images or arrays, gray ``(T, H, W)`` / ``(T, H, W, 1)``
    and RGBA frames (alpha dropped), and floats in [0, 1].
    """

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
        if frames.ndim == 3:
            frames = frames[..., None]
        if frames.ndim == 4 and frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=3)
        elif frames.ndim == 4 and frames.shape[-1] == 4:
            frames = frames[..., :3]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"video frames must be (T, H, W, 3), got shape {frames.shape}")
        if not self.fps or not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        self.frames = frames

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def _to_rgb_array(img: Any) -> np.ndarray:
    from PIL import Image

    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    return np.asarray(img)


# ---------------------------------------------------------------- sniffing

_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"}
_AUDIO_BRANDS = {b"M4A ", b"M4B "}


def sniff(data: bytes) -> Modality | None:
    """Guess the modality from magic bytes; ``None`` for plain text, JSON or unknown."""
    head = bytes(data[:16])
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")):
        return Modality.IMAGE
    if head.startswith(b"BM") and len(data) > 26 and int.from_bytes(head[2:6], "little") in (0, len(data)):
        return Modality.IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Modality.IMAGE
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return Modality.AUDIO
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return Modality.AUDIO
    if head.startswith((b"fLaC", b"OggS", b"ID3")) or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xf1", b"\xff\xf9"):
        return Modality.AUDIO
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return Modality.IMAGE
        return Modality.AUDIO if brand in _AUDIO_BRANDS else Modality.VIDEO
    if head.startswith(b"\x1aE\xdf\xa3"):
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
    if isinstance(obj, (dict, list, tuple, int, float, bool)) or obj is None or hasattr(obj, "model_dump"):
        return Modality.JSON
    raise TypeError(f"cannot infer a modality for {type(obj).__name__}; pass modality= explicitly")


# ---------------------------------------------------------------- encode


def encode(obj: Any, modality: Modality | str | None = None, *, limits: Limits | None = None) -> tuple[bytes, ArtifactMeta]:
    """Encode a Python object to canonical bytes plus media metadata.

    With ``limits`` the object is checked against them first (pixels, duration, size).
    """
    data, meta, _ = encode_object(obj, modality, limits=limits)
    return data, meta


def encode_object(obj: Any, modality: Modality | str | None = None, *, limits: Limits | None = None) -> Encoded:
    """Like :func:`encode`, also returning the object the bytes decode to (a private copy).

    The store caches that object, so it must not share mutable state with the caller.
    """
    if not isinstance(modality, Modality):
        modality = Modality(modality) if modality is not None else infer_modality(obj)
    try:
        encoded = _ENCODERS[modality](obj, limits)
    except ArtifactError:
        raise
    except Exception as exc:  # TypeError/ValueError from us, or a library error (PIL, libsndfile, ffmpeg)
        raise ArtifactDecodeError(f"cannot encode {type(obj).__name__} as {modality}: {exc}") from exc
    if limits is not None and len(encoded.data) > limits.max_bytes:
        raise ArtifactTooLarge(f"{modality} encodes to {len(encoded.data)} bytes, over the {limits.max_bytes}-byte limit")
    return encoded


def _encode_text(obj: Any, limits: Limits | None) -> Encoded:
    if not isinstance(obj, str):
        raise TypeError("text must be str")
    try:
        data = obj.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise ValueError(f"text has a character UTF-8 cannot encode at index {exc.start}") from exc
    return Encoded(data, ArtifactMeta(), obj)


_PNG_MODES = ("RGB", "RGBA", "L", "LA", "1", "I;16")


def _encode_image(obj: Any, limits: Limits | None) -> Encoded:
    from PIL import Image

    if isinstance(obj, np.ndarray):
        obj = Image.fromarray(_image_array(obj))
    elif not isinstance(obj, Image.Image):
        raise TypeError("image must be a PIL.Image or an (H, W[, C]) array")
    if limits is not None:
        _check_pixels(obj.width, obj.height, limits, None)
    if obj.mode == "I":  # 32-bit gray: PNG holds 16 bits
        obj = Image.fromarray(np.clip(np.asarray(obj), 0, 65535).astype(np.uint16))
    elif obj.mode not in _PNG_MODES:
        obj = obj.convert("RGBA" if obj.has_transparency_data else "RGB")
    else:
        obj = obj.copy()  # the cached object must not follow later edits of the caller's image
    buf = io.BytesIO()
    obj.save(buf, format="PNG", compress_level=1)
    return Encoded(buf.getvalue(), ArtifactMeta(width=obj.width, height=obj.height), obj)


def _image_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"an image array must be uint8 or float in [0, 1], got {arr.dtype}")
        arr = (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _encode_audio(obj: Any, limits: Limits | None) -> Encoded:
    import soundfile as sf

    if not isinstance(obj, Audio):
        raise TypeError("audio must be an Audio(samples, sample_rate)")
    if limits is not None:
        _check_seconds("audio", obj.duration, limits.max_audio_seconds, None)
    samples = np.clip(np.nan_to_num(obj.samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)  # a new array
    buf = io.BytesIO()
    sf.write(buf, samples, obj.sample_rate, format="WAV", subtype="PCM_16")
    clean = Audio(samples, obj.sample_rate)
    meta = ArtifactMeta(sample_rate=obj.sample_rate, channels=clean.channels, duration=round(clean.duration, 6))
    return Encoded(buf.getvalue(), meta, clean)


# sample rates the AAC encoder takes; others are resampled to 48 kHz inside the MP4
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _encode_video(obj: Any, limits: Limits | None) -> Encoded:
    if not isinstance(obj, Video):
        raise TypeError("video must be a Video(frames, fps, audio=None)")
    if len(obj.frames) == 0:
        raise ValueError("a video needs at least one frame")
    if limits is not None:
        _check_seconds("video", obj.duration, limits.max_video_seconds, None)
        _check_pixels(obj.size[0], obj.size[1], limits, None)
    frames = obj.frames
    h, w = frames.shape[1], frames.shape[2]
    if h % 2 or w % 2:  # yuv420p needs even sides: repeat the last row/column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1], frames.shape[2]
    else:
        frames = frames.copy()
    rate = Fraction(obj.fps).limit_denominator(1001)
    audio = _mp4_audio(obj.audio)
    data = _mp4_bytes(frames, rate, None if audio is None else (audio.sample_rate, audio.channels), lambda: audio)
    meta = ArtifactMeta(
        width=w, height=h, fps=float(rate), frames=len(frames), duration=round(len(frames) / float(rate), 6),
        has_audio=audio is not None,
    )
    return Encoded(data, meta, Video(frames, float(rate), audio))


def _mp4_audio(audio: Audio | None) -> Audio | None:
    """The track as the MP4 carries it: at most two channels, finite samples in [-1, 1]."""
    if audio is None:
        return None
    samples = audio.samples if audio.samples.ndim == 1 else audio.samples[:, :2]
    return Audio(np.clip(np.nan_to_num(samples), -1.0, 1.0), audio.sample_rate)


def _mp4_bytes(frames: Iterable[np.ndarray], rate: Fraction, audio_format: tuple[int, int] | None,
               audio: Callable[[], Audio | None]) -> bytes:
    """Encode to canonical MP4 bytes. ``frames`` may be a generator (nothing holds them all);
    ``audio`` is asked for its track after the last frame, ``audio_format`` (rate, channels) before."""
    # a real file: faststart (moov atom first, for players streaming by Range) rewrites it
    fd, name = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        _write_mp4(name, frames, rate, audio_format, audio)
        return Path(name).read_bytes()
    finally:
        os.unlink(name)


def _write_mp4(path: str, frames: Iterable[np.ndarray], rate: Fraction, audio_format: tuple[int, int] | None,
               audio: Callable[[], Audio | None]) -> None:
    import av

    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"}) as container:
        stream = container.add_stream(
            "libx264", rate=rate, options={"preset": "veryfast", "crf": "18", "threads": "1", "flags": "+bitexact"}
        )
        astream = None
        if audio_format is not None:
            sample_rate, channels = audio_format
            arate = sample_rate if sample_rate in _AAC_RATES else 48000
            astream = container.add_stream("aac", rate=arate, options={"flags": "+bitexact"})
            astream.layout = "mono" if channels == 1 else "stereo"
        for i, frame in enumerate(frames):
            if i == 0:
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
        track = audio() if astream is not None else None
        if astream is not None and track is not None:
            _mux_audio(container, astream, track)


def _mux_audio(container: Any, astream: Any, audio: Audio) -> None:
    import av

    layout = "mono" if audio.channels == 1 else "stereo"
    planar = np.ascontiguousarray((audio.samples if audio.samples.ndim == 2 else audio.samples[:, None]).T)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=astream.rate, frame_size=astream.codec_context.frame_size or 1024)
    step = 4096
    for start in range(0, planar.shape[1], step):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start : start + step]), format="fltp", layout=layout)
        af.sample_rate = audio.sample_rate
        af.pts = start
        for out in resampler.resample(af):
            container.mux(astream.encode(out))
    for out in resampler.resample(None):
        container.mux(astream.encode(out))
    container.mux(astream.encode())


_NPY_DTYPE = np.dtype("<f4")


def _encode_embedding(obj: Any, limits: Limits | None) -> Encoded:
    arr = np.asarray(obj)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"an embedding must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("an embedding must have at least one dimension")
    arr = np.ascontiguousarray(arr, dtype=_NPY_DTYPE)
    header = _npy_header(arr.shape)
    data = b"".join((header, arr.data.cast("B") if arr.size else b""))
    view = np.frombuffer(data, dtype=_NPY_DTYPE, offset=len(header)).reshape(arr.shape)  # not the caller's array
    return Encoded(data, ArtifactMeta(shape=list(arr.shape)), view)


@functools.lru_cache(maxsize=256)
def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(_NPY_DTYPE), "fortran_order": False, "shape": shape})
    return buf.getvalue()  # magic, version 1.0, header length, padded header


def _encode_json(obj: Any, limits: Limits | None) -> Encoded:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    data = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return Encoded(data, ArtifactMeta(), json.loads(data))  # the cached object is the canonical, unshared form


_ENCODERS = {
    Modality.TEXT: _encode_text,
    Modality.IMAGE: _encode_image,
    Modality.AUDIO: _encode_audio,
    Modality.VIDEO: _encode_video,
    Modality.EMBEDDING: _encode_embedding,
    Modality.JSON: _encode_json,
}


# ---------------------------------------------------------------- limits


def _check_pixels(w: int, h: int, limits: Limits, aid: str | None, what: str = "image") -> None:
    if w * h > limits.max_pixels:
        raise ArtifactTooLarge(
            f"{what} is {w}x{h} = {w * h} pixels, over the {limits.max_pixels}-pixel limit", artifact_id=aid
        )


def _check_samples(channels: int, rate: float, seconds: float, limits: Limits, aid: str | None) -> None:
    total = channels * rate * seconds
    if total > limits.max_audio_samples:
        raise ArtifactTooLarge(
            f"audio decodes to {channels} channel(s) x {rate:g} Hz x {seconds:.1f} s = {int(total)} samples, over the "
            f"limit max_audio_samples={limits.max_audio_samples}", artifact_id=aid, limit="max_audio_samples",
        )


def _check_video_pixels(w: int, h: int, frames: float, limits: Limits, aid: str | None) -> None:
    total = w * h * frames
    if total > limits.max_video_pixels:
        raise ArtifactTooLarge(
            f"video decodes to {w}x{h} x {int(frames)} frames = {int(total)} pixels, over the limit "
            f"max_video_pixels={limits.max_video_pixels}", artifact_id=aid, limit="max_video_pixels",
        )


def _check_seconds(what: str, seconds: float, limit: float, aid: str | None) -> None:
    if seconds > limit:
        raise ArtifactTooLarge(f"{what} is {seconds:.1f}s long, over the {limit:g}s duration limit", artifact_id=aid)


# ---------------------------------------------------------------- decode


def decode(data: bytes, modality: Modality | str, *, limits: Limits = DEFAULT_LIMITS, artifact_id: str | None = None) -> Any:
    """Decode canonical (or foreign but supported) bytes to the modality's Python type.

    Raises :class:`ArtifactDecodeError` for empty, truncated, corrupt or mislabelled
    bytes and :class:`ArtifactTooLarge` for anything over ``limits``.
    """
    modality = Modality(modality)
    _check_basic(data, modality, limits, artifact_id)
    try:
        return _DECODERS[modality](data, limits, artifact_id)
    except ArtifactError:
        raise
    except Exception as exc:  # a library error deep in PIL / numpy / libsndfile / ffmpeg
        raise ArtifactDecodeError(f"{modality} is truncated or corrupt: {exc}", artifact_id=artifact_id) from exc


def _check_basic(data: bytes, modality: Modality, limits: Limits, artifact_id: str | None) -> None:
    if len(data) > limits.max_bytes:
        raise ArtifactTooLarge(
            f"{modality} is {len(data)} bytes, over the {limits.max_bytes}-byte limit", artifact_id=artifact_id
        )
    if not data and modality is not Modality.TEXT:
        raise ArtifactDecodeError(f"{modality} is empty (zero bytes)", artifact_id=artifact_id)
    if modality is Modality.TEXT:
        return
    sniffed = sniff(data)
    # a video container (WebM from a browser's recorder, MP4) may hold sound only: audio takes its sound track
    if sniffed is not None and sniffed is not modality and not (modality is Modality.AUDIO and sniffed is Modality.VIDEO):
        raise ArtifactDecodeError(f"declared {modality} but the bytes are {sniffed}", artifact_id=artifact_id)
    if modality is not Modality.JSON and sniffed is None:
        raise ArtifactDecodeError(f"declared {modality} but the bytes are no known {modality} format", artifact_id=artifact_id)


def _decode_text(data: bytes, limits: Limits, aid: str | None) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactDecodeError(f"text is not valid UTF-8 at byte {exc.start}", artifact_id=aid) from exc


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _decode_image(data: bytes, limits: Limits, aid: str | None) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            _check_pixels(probe.width, probe.height, limits, aid)
            if probe.format == "PNG":
                probe.verify()  # walks every chunk and its CRC: catches a cut anywhere before the IEND
    except Image.DecompressionBombError as exc:
        raise ArtifactTooLarge(f"image is over Pillow's decompression-bomb limit: {exc}", artifact_id=aid) from exc
    except UnidentifiedImageError as exc:
        raise ArtifactDecodeError("image is truncated or corrupt: Pillow cannot identify it", artifact_id=aid) from exc
    if data[:8] == _PNG_SIGNATURE and not 0 < data.rfind(b"IEND") <= len(data) - 8:
        raise ArtifactDecodeError("image is truncated: the PNG's IEND chunk is cut", artifact_id=aid)
    img = Image.open(io.BytesIO(data))
    img.load()  # forces the full decode: truncated data fails here
    return img


def _decode_audio(data: bytes, limits: Limits, aid: str | None) -> Audio:
    import soundfile as sf

    if data[:4] in (b"RIFF", b"RF64"):
        _check_wav_chunks(data, aid)
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError:
        return _decode_audio_av(data, limits, aid)  # M4A/AAC and the like
    with f:
        if f.samplerate <= 0 or f.frames < 0 or f.channels <= 0:
            raise ArtifactDecodeError("audio header is invalid", artifact_id=aid)
        _check_seconds("audio", f.frames / f.samplerate, limits.max_audio_seconds, aid)
        _check_samples(f.channels, f.samplerate, f.frames / f.samplerate, limits, aid)
        samples = f.read(dtype="float32", always_2d=False)
        if len(samples) < f.frames:
            raise ArtifactDecodeError(f"audio is truncated: header says {f.frames} frames, {len(samples)} present", artifact_id=aid)
        return Audio(samples, f.samplerate)


def _check_wav_chunks(data: bytes, aid: str | None) -> None:
    """A WAV's data chunk must hold as many bytes as it declares (libsndfile silently shortens)."""
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"data":
            have = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and size > have and data[:4] == b"RIFF":
                raise ArtifactDecodeError(
                    f"audio is truncated: the WAV data chunk declares {size} bytes, {have} present", artifact_id=aid
                )
            return
        pos += 8 + size + (size & 1)
    raise ArtifactDecodeError("audio is truncated: the WAV has no data chunk", artifact_id=aid)


def _decode_audio_av(data: bytes, limits: Limits, aid: str | None) -> Audio:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise ArtifactDecodeError("audio has no audio stream", artifact_id=aid)
        astream = container.streams.audio[0]
        audio = _AudioCollector(astream, limits, aid)
        if container.duration:
            _check_seconds("audio", container.duration / 1_000_000, limits.max_audio_seconds, aid)
            _check_samples(audio.channels, audio.rate, container.duration / 1_000_000, limits, aid)
        for frame in container.decode(astream):
            audio.add(frame)
    track = audio.result()
    if track is None:
        raise ArtifactDecodeError("audio has no decodable samples", artifact_id=aid)
    return track


class _AudioCollector:
    """Decoded audio frames -> one float32 :class:`Audio` (mono or stereo), within the duration limit."""

    def __init__(self, astream: Any, limits: Limits, aid: str | None, *, max_seconds: float | None = None) -> None:
        import av

        self.rate = int(astream.rate or astream.codec_context.sample_rate)
        self.channels = 1 if astream.channels == 1 else 2
        self.resampler = av.AudioResampler(format="flt", layout="mono" if self.channels == 1 else "stereo", rate=self.rate)
        self.max_seconds = limits.max_audio_seconds if max_seconds is None else max_seconds
        self.limits = limits
        self.chunks: list[np.ndarray] = []
        self.n = 0
        self.aid = aid

    def add(self, frame: Any) -> None:
        for out in self.resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1, self.channels)
            self.chunks.append(chunk)
            self.n += len(chunk)
        if self.n > (self.max_seconds + 1) * self.rate:  # a header that lied about the duration
            _check_seconds("audio", self.n / self.rate, self.max_seconds, self.aid)
        _check_samples(self.channels, self.rate, self.n / self.rate, self.limits, self.aid)

    def result(self) -> Audio | None:
        for out in self.resampler.resample(None):
            self.chunks.append(out.to_ndarray().reshape(-1, self.channels))
        if not self.chunks:
            return None
        samples = np.concatenate(self.chunks)
        return Audio(samples[:, 0] if self.channels == 1 else samples, self.rate)


class _VideoReader:
    """A video's frames one at a time (RGB arrays), within the limits.

    Opening checks the container's metadata (duration, frame size, width x height x
    frames) before anything is decoded; :meth:`frames` checks again as frames come,
    and collects the first audio track on the way. Used by :func:`decode` (which
    keeps the frames) and by :func:`canonicalize` (which does not).
    """

    def __init__(self, data: bytes, limits: Limits, aid: str | None) -> None:
        import av

        self.limits, self.aid = limits, aid
        self.container = av.open(io.BytesIO(data), mode="r")
        try:
            if not self.container.streams.video:
                raise ArtifactDecodeError("video has no video stream", artifact_id=aid)
            self.vs = self.container.streams.video[0]
            self.fps = float(self.vs.average_rate or self.vs.guessed_rate or 0) or 25.0
            seconds = (self.container.duration or 0) / 1_000_000
            if seconds:
                _check_seconds("video", seconds, limits.max_video_seconds, aid)
            width, height = self.vs.codec_context.width, self.vs.codec_context.height
            _check_pixels(width, height, limits, aid, what="video frames")
            self.promised = int(self.vs.frames or 0)
            _check_video_pixels(width, height, self.promised or seconds * self.fps, limits, aid)
            self.max_frames = int(limits.max_video_seconds * self.fps) + 1
            self.astream = self.container.streams.audio[0] if self.container.streams.audio else None
            self.audio = (_AudioCollector(self.astream, limits, aid, max_seconds=limits.max_video_seconds)
                          if self.astream is not None else None)
        except BaseException:
            self.container.close()
            raise
        self.count = 0

    def __enter__(self) -> _VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def frames(self) -> Iterator[np.ndarray]:
        import av

        streams = [s for s in (self.vs, self.astream) if s is not None]
        pixels = 0
        try:
            for packet in self.container.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        self.count += 1
                        pixels += frame.width * frame.height
                        if self.count > self.max_frames:
                            _check_seconds("video", self.count / self.fps, self.limits.max_video_seconds, self.aid)
                        if pixels > self.limits.max_video_pixels:
                            _check_video_pixels(frame.width, frame.height, self.count, self.limits, self.aid)
                        yield frame.to_ndarray(format="rgb24")
                    elif isinstance(frame, av.AudioFrame) and self.audio is not None:
                        self.audio.add(frame)
        except av.error.FFmpegError as exc:
            raise ArtifactDecodeError(f"video is truncated or corrupt ({self.count} frames decoded): {exc}",
                                      artifact_id=self.aid) from exc

    def finish(self) -> Audio | None:
        """Check the frame count after :meth:`frames` is exhausted; the audio track, if any."""
        if not self.count:
            raise ArtifactDecodeError("video is truncated or corrupt: no decodable frames", artifact_id=self.aid)
        if self.promised and self.count < self.promised:
            raise ArtifactDecodeError(f"video is truncated: {self.promised} frames declared, {self.count} decodable",
                                      artifact_id=self.aid)
        return self.audio.result() if self.audio is not None else None


def _decode_video(data: bytes, limits: Limits, aid: str | None) -> Video:
    with _VideoReader(data, limits, aid) as reader:
        frames = list(reader.frames())
        audio = reader.finish()
    return Video(np.stack(frames), reader.fps, audio)


def _decode_embedding(data: bytes, limits: Limits, aid: str | None) -> np.ndarray:
    canonical = _canonical_npy(data, aid)
    if canonical is not None:
        return canonical
    _check_npy_size(data, aid)
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ArtifactDecodeError(f"embedding must hold real numbers, the .npy holds {arr.dtype}", artifact_id=aid)
    if arr.ndim == 0:
        raise ArtifactDecodeError("embedding must have at least one dimension", artifact_id=aid)
    return arr.astype(np.float32, copy=False)


def _check_npy_size(data: bytes, aid: str | None) -> None:
    """The header's shape must match the data (numpy allocates what the header claims first)."""
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    if version not in ((1, 0), (2, 0)):
        return  # np.load checks the rest
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(buf)
    if dtype.hasobject:
        raise ArtifactDecodeError("embedding .npy holds Python objects (pickled data is refused)", artifact_id=aid)
    need = math.prod(shape) * dtype.itemsize
    if len(data) - buf.tell() != need:
        raise ArtifactDecodeError(
            f"embedding is truncated or padded: shape {shape} needs {need} data bytes, {len(data) - buf.tell()} present",
            artifact_id=aid,
        )


_NPY_CANONICAL = re.compile(rb"\{'descr': '<f4', 'fortran_order': False, 'shape': \(([0-9, ]+)\), \} *\n")


def _canonical_npy(data: bytes, aid: str | None = None) -> np.ndarray | None:
    """A zero-copy view when the bytes are exactly what :func:`encode` writes, else ``None``."""
    if len(data) < 10 or data[:8] != b"\x93NUMPY\x01\x00":
        return None
    hlen = 10 + int.from_bytes(data[8:10], "little")
    match = _NPY_CANONICAL.fullmatch(data, 10, hlen)
    if match is None:
        return None
    shape = tuple(int(x) for x in match.group(1).split(b",") if x.strip())
    if not shape or data[:hlen] != _npy_header(shape):
        return None
    count = math.prod(shape)
    if len(data) != hlen + 4 * count:
        raise ArtifactDecodeError(
            f"embedding is truncated or padded: shape {shape} needs {4 * count} data bytes, {len(data) - hlen} present",
            artifact_id=aid,
        )
    return np.frombuffer(data, dtype=_NPY_DTYPE, offset=hlen, count=count).reshape(shape)


def _decode_json(data: bytes, limits: Limits, aid: str | None) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(str(data, "utf-8"), parse_constant=reject)
    except UnicodeDecodeError as exc:
        raise ArtifactDecodeError(f"JSON is not valid UTF-8 at byte {exc.start}", artifact_id=aid) from exc
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
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


def canonicalize(data: bytes, modality: Modality | str, *, limits: Limits = DEFAULT_LIMITS) -> Encoded:
    """Validate incoming bytes and return ``(canonical_bytes, meta, decoded_object)``.

    Already-canonical bytes are kept as they are (so their id does not change);
    foreign formats (JPEG, FLAC, OGG, WebM, MPEG-4 part 2 …) are converted, and
    JSON and embeddings are re-serialized to their one canonical form.
    """
    modality = Modality(modality)
    if modality is Modality.EMBEDDING:  # the common large case: validated from the header alone
        _check_basic(data, modality, limits, None)
        view = _canonical_npy(data)
        if view is not None:
            return Encoded(data, ArtifactMeta(shape=list(view.shape)), view)
    if modality is Modality.VIDEO or (modality is Modality.AUDIO and not _is_canonical(data, modality)):
        _check_basic(data, modality, limits, None)
        try:
            streamed = (_canonicalize_video(data, limits) if modality is Modality.VIDEO
                        else _canonicalize_audio(data, limits))
        except ArtifactError:
            raise
        except Exception as exc:  # a library error deep in libsndfile or ffmpeg
            raise ArtifactDecodeError(f"{modality} is truncated or corrupt: {exc}") from exc
        if streamed is not None:
            return streamed
    obj = decode(data, modality, limits=limits)
    if _is_canonical(data, modality):
        return Encoded(data, _meta_of(obj, modality), obj)
    if modality is Modality.IMAGE:
        from PIL import ImageOps

        obj = ImageOps.exif_transpose(obj)  # a photo's orientation tag becomes real pixels
    return encode_object(obj, modality, limits=limits)


_AUDIO_BLOCK_FRAMES = 1 << 16


def _canonicalize_audio(data: bytes, limits: Limits) -> Encoded | None:
    """FLAC, OGG, MP3, AIFF … to WAV block by block (``None``: not a libsndfile format, decode it
    whole). The same bytes as decoding then encoding, without holding every sample at once."""
    import soundfile as sf

    try:
        source = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError:
        return None
    with source:
        rate, channels, declared = source.samplerate, source.channels, source.frames
        if rate <= 0 or declared < 0 or channels <= 0:
            raise ArtifactDecodeError("audio header is invalid")
        _check_seconds("audio", declared / rate, limits.max_audio_seconds, None)
        _check_samples(channels, rate, declared / rate, limits, None)
        out = io.BytesIO()
        n = 0
        with sf.SoundFile(out, "w", samplerate=rate, channels=channels, format="WAV", subtype="PCM_16") as sink:
            for block in source.blocks(blocksize=_AUDIO_BLOCK_FRAMES, dtype="float32", always_2d=True):
                n += len(block)
                if n > declared + rate:  # a header that lied about the length
                    _check_samples(channels, rate, n / rate, limits, None)
                sink.write(np.clip(np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0))
    if n < declared:
        raise ArtifactDecodeError(f"audio is truncated: header says {declared} frames, {n} present")
    meta = ArtifactMeta(sample_rate=rate, channels=channels, duration=round(n / rate, 6))
    return Encoded(out.getvalue(), meta, None)


def _canonicalize_video(data: bytes, limits: Limits) -> Encoded:
    """Validate (canonical MP4) or transcode (anything else) frame by frame: memory stays at a
    few frames whatever the length. The decoded object is left out (``None``): a tool that needs
    the frames decodes them when it runs."""
    canonical = _is_canonical_mp4(data)
    with _VideoReader(data, limits, None) as reader:
        size = (0, 0)
        if canonical:
            for frame in reader.frames():
                size = (frame.shape[1], frame.shape[0])
            audio = reader.finish()
            fps = reader.fps
        else:
            rate = Fraction(reader.fps).limit_denominator(1001)
            fps = float(rate)
            track: list[Audio | None] = []

            def even(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
                nonlocal size
                for frame in frames:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2:  # yuv420p needs even sides: repeat the last row/column
                        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                    size = (frame.shape[1], frame.shape[0])
                    yield frame

            def finished() -> Audio | None:
                track.append(_mp4_audio(reader.finish()))
                return track[0]

            fmt = None if reader.audio is None else (reader.audio.rate, reader.audio.channels)
            data = _mp4_bytes(even(reader.frames()), rate, fmt, finished)
            audio = track[0] if track else _mp4_audio(reader.finish())
    n = reader.count
    meta = ArtifactMeta(width=size[0], height=size[1], fps=fps, frames=n, duration=round(n / fps, 6),
                        has_audio=audio is not None)
    return Encoded(data, meta, None)


def _is_canonical(data: bytes, modality: Modality) -> bool:
    if modality is Modality.TEXT:
        return True
    if modality is Modality.IMAGE:
        return data.startswith(_PNG_SIGNATURE) and data.endswith(_PNG_IEND)  # else: trailing bytes, re-encoded
    if modality is Modality.AUDIO:
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if modality is Modality.VIDEO:
        return _is_canonical_mp4(data)
    if modality is Modality.EMBEDDING:
        return _canonical_npy(data) is not None
    return False  # JSON: key order and spacing are normalized


def _is_canonical_mp4(data: bytes) -> bool:
    """MP4 (not QuickTime) with one H.264 yuv420p video stream and at most one AAC audio stream."""
    import av

    if data[4:8] != b"ftyp" or data[8:12] == b"qt  ":
        return False
    with av.open(io.BytesIO(data), mode="r") as container:
        streams = container.streams
        if len(streams.video) != 1 or len(streams.audio) > 1 or len(streams) != len(streams.video) + len(streams.audio):
            return False
        vcc = streams.video[0].codec_context
        if vcc.name != "h264" or vcc.pix_fmt != "yuv420p":
            return False
        return not streams.audio or streams.audio[0].codec_context.name == "aac"


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
    if isinstance(obj, (dict, list)):
        return 1024 + 64 * len(obj)
    return 1024

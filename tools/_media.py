"""Shared private helpers for the media tools: input coercion, limits, DSP.

Everything here works on numpy arrays and the codec types (:class:`Audio`,
:class:`Video`, ``PIL.Image``). The DSP pieces (STFT, phase-vocoder time
stretch, pitch shift, cepstral formant warp, phase-correlation shift) are small
and numpy/scipy only, so the media tools need no extra dependency.
Inputs that cannot be used raise :class:`~orchestrator.errors.ToolInputError`
naming the tool and the port; nothing here lets a raw numpy error escape for
input that a user could plausibly send.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from orchestrator.artifacts import Audio, Modality, Video
from orchestrator.artifacts.codecs import Limits, decode
from orchestrator.errors import ToolInputError

__all__ = [
    "as_2d",
    "as_audio",
    "as_image",
    "as_list",
    "as_text",
    "as_video",
    "check_audio_seconds",
    "check_pixels",
    "check_video",
    "estimate_f0",
    "fft_size",
    "fit_image",
    "fit_length",
    "formant_shift",
    "from_2d",
    "is_silent",
    "istft",
    "limit_peak",
    "limits_of",
    "parse_color",
    "parse_speed",
    "peak",
    "per_channel",
    "phase_correlation",
    "pitch_shift",
    "resample",
    "rms",
    "settings_of",
    "shift_frame",
    "spectral_envelope",
    "stft",
    "time_stretch",
    "to_channels",
]

logger = logging.getLogger("orchestrator.tools.media")

MAX_VIDEO_MEMORY_BYTES = 2 << 30
"""Largest decoded frame buffer a tool builds (T*H*W*3 bytes)."""


# ---------------------------------------------------------------- settings and limits


def settings_of(ctx: Any) -> Any:
    """The settings a tool runs under: ``ctx.settings``, else the process settings."""
    s = getattr(ctx, "settings", None) if ctx is not None else None
    if s is None:
        from orchestrator.settings import get_settings

        s = get_settings()
    return s


def limits_of(ctx: Any) -> Limits:
    return Limits.from_settings(settings_of(ctx))


def check_pixels(width: int, height: int, ctx: Any, *, tool: str, what: str = "output image", verb: str = "would be") -> None:
    """Refuse an image (or video frame) larger than the configured pixel limit."""
    limit = settings_of(ctx).max_image_pixels
    if width * height > limit:
        raise ToolInputError(
            f"{what} {verb} {width}x{height} = {width * height} pixels, over the {limit}-pixel limit "
            "(ORCHESTRATOR_MAX_IMAGE_PIXELS)",
            tool=tool,
        )


def check_audio_seconds(seconds: float, ctx: Any, *, tool: str, what: str = "output audio", verb: str = "would last") -> None:
    limit = settings_of(ctx).max_audio_seconds
    if seconds > limit:
        raise ToolInputError(f"{what} {verb} {seconds:.1f}s, over the {limit:.0f}s limit", tool=tool)


def check_video(n_frames: int, width: int, height: int, fps: float, ctx: Any, *, tool: str) -> None:
    """Refuse an output video over the duration, pixel or memory limit before building it."""
    s = settings_of(ctx)
    check_pixels(width, height, ctx, tool=tool, what="video frames")
    seconds = n_frames / fps
    if seconds > s.max_video_seconds:
        raise ToolInputError(f"output video would last {seconds:.1f}s, over the {s.max_video_seconds:.0f}s limit", tool=tool)
    nbytes = n_frames * width * height * 3
    if nbytes > MAX_VIDEO_MEMORY_BYTES:
        raise ToolInputError(
            f"output video would hold {n_frames} frames of {width}x{height} ({nbytes >> 20} MiB decoded), "
            f"over the {MAX_VIDEO_MEMORY_BYTES >> 20} MiB working limit; lower fps, size or duration",
            tool=tool,
        )


# ---------------------------------------------------------------- input coercion


def _decode_bytes(obj: bytes, modality: Modality, ctx: Any, tool: str, port: str) -> Any:
    from orchestrator.errors import ArtifactDecodeError

    try:
        return decode(bytes(obj), modality, limits=limits_of(ctx))
    except ArtifactDecodeError as exc:
        raise ArtifactDecodeError(f"port {port!r}: {exc.message}", tool=tool, port=port) from exc


def as_text(obj: Any, *, tool: str, port: str) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, (bytes, bytearray)):
        try:
            return bytes(obj).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolInputError(f"port {port!r}: text is not valid UTF-8", tool=tool, port=port) from exc
    raise ToolInputError(f"port {port!r} expects text, got {_kind(obj)}", tool=tool, port=port)


def as_image(obj: Any, *, tool: str, port: str, ctx: Any = None) -> Any:
    """A ``PIL.Image`` in RGB or RGBA mode (palette, CMYK, 16-bit … converted)."""
    from PIL import Image

    if isinstance(obj, (bytes, bytearray)):
        obj = _decode_bytes(obj, Modality.IMAGE, ctx, tool, port)
    if isinstance(obj, np.ndarray):
        try:
            obj = Image.fromarray(_to_uint8(obj))
        except (TypeError, ValueError) as exc:
            raise ToolInputError(f"port {port!r}: array of shape {obj.shape} is not an image", tool=tool) from exc
    if not isinstance(obj, Image.Image):
        raise ToolInputError(f"port {port!r} expects an image, got {_kind(obj)}", tool=tool, port=port)
    if obj.width == 0 or obj.height == 0:
        raise ToolInputError(f"port {port!r}: image is empty ({obj.width}x{obj.height})", tool=tool, port=port)
    check_pixels(obj.width, obj.height, ctx, tool=tool, what=f"input image on port {port!r}", verb="is")
    if obj.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(obj, dtype=np.float64)
        scale = 255.0 / max(float(arr.max()), 1.0)
        obj = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8))
    if obj.mode not in ("RGB", "RGBA"):
        obj = obj.convert("RGBA" if "A" in obj.getbands() or obj.info.get("transparency") is not None else "RGB")
    return obj


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    return np.clip(arr, 0, 255).astype(np.uint8)


def as_audio(obj: Any, *, tool: str, port: str, ctx: Any = None, allow_empty: bool = False) -> Audio:
    """An :class:`Audio` with finite samples; zero-length audio is refused unless allowed."""
    if isinstance(obj, (bytes, bytearray)):
        obj = _decode_bytes(obj, Modality.AUDIO, ctx, tool, port)
    if not isinstance(obj, Audio):
        raise ToolInputError(f"port {port!r} expects audio, got {_kind(obj)}", tool=tool, port=port)
    if obj.samples.shape[0] == 0 and not allow_empty:
        raise ToolInputError(f"port {port!r}: audio is empty (zero samples)", tool=tool, port=port)
    if obj.samples.ndim == 2 and obj.samples.shape[1] == 0:
        raise ToolInputError(f"port {port!r}: audio has zero channels", tool=tool, port=port)
    check_audio_seconds(obj.duration, ctx, tool=tool, what=f"input audio on port {port!r}", verb="lasts")
    if not np.isfinite(obj.samples).all():
        obj = Audio(np.nan_to_num(obj.samples, nan=0.0, posinf=1.0, neginf=-1.0), obj.sample_rate)
    return obj


def as_video(obj: Any, *, tool: str, port: str, ctx: Any = None) -> Video:
    if isinstance(obj, (bytes, bytearray)):
        obj = _decode_bytes(obj, Modality.VIDEO, ctx, tool, port)
    if not isinstance(obj, Video):
        raise ToolInputError(f"port {port!r} expects a video, got {_kind(obj)}", tool=tool, port=port)
    if len(obj.frames) == 0:
        raise ToolInputError(f"port {port!r}: video has no frames", tool=tool, port=port)
    if obj.frames.shape[1] == 0 or obj.frames.shape[2] == 0:
        raise ToolInputError(f"port {port!r}: video frames are empty ({obj.frames.shape[2]}x{obj.frames.shape[1]})", tool=tool)
    check_pixels(obj.size[0], obj.size[1], ctx, tool=tool, what=f"input video frames on port {port!r}", verb="are")
    return obj


def as_list(obj: Any, *, tool: str, port: str, minimum: int = 1) -> list[Any]:
    """The items of a ``many`` port (a single item is accepted as a list of one)."""
    if obj is None:
        items: list[Any] = []
    elif isinstance(obj, (list, tuple)):
        items = [x for x in obj if x is not None]
    else:
        items = [obj]
    if len(items) < minimum:
        raise ToolInputError(
            f"port {port!r} needs at least {minimum} input(s), got {len(items)}", tool=tool, port=port
        )
    return items


def _kind(obj: Any) -> str:
    return "nothing (the port is unbound)" if obj is None else type(obj).__name__


# ---------------------------------------------------------------- audio basics


def as_2d(samples: np.ndarray) -> np.ndarray:
    """``(n, channels)`` view of mono or multichannel samples."""
    return samples[:, None] if samples.ndim == 1 else samples


def from_2d(samples: np.ndarray) -> np.ndarray:
    return samples[:, 0] if samples.shape[1] == 1 else samples


def to_channels(samples: np.ndarray, channels: int) -> np.ndarray:
    """Up- or down-mix to ``channels`` (1 or more), returned as ``(n, channels)``."""
    x = as_2d(samples)
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return x.mean(axis=1, keepdims=True)
    if x.shape[1] == 1:
        return np.repeat(x, channels, axis=1)
    if x.shape[1] > channels:
        return x[:, :channels]
    return np.concatenate([x, np.repeat(x[:, -1:], channels - x.shape[1], axis=1)], axis=1)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling (scipy ``resample_poly``), any channel layout."""
    if src_rate == dst_rate or samples.shape[0] == 0:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(src_rate), int(dst_rate))
    up, down = int(dst_rate) // g, int(src_rate) // g
    if up > 1000 or down > 1000:  # awkward ratio: approximate it to keep the filter small
        frac = Fraction(int(dst_rate), int(src_rate)).limit_denominator(1000)
        up, down = frac.numerator, frac.denominator
    out = resample_poly(samples, up, down, axis=0)
    want = int(round(samples.shape[0] * dst_rate / src_rate))
    return fit_length(out.astype(np.float32), want)


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad (at the end) to exactly ``n`` samples."""
    if samples.shape[0] >= n:
        return samples[:n]
    pad = [(0, n - samples.shape[0])] + [(0, 0)] * (samples.ndim - 1)
    return np.pad(samples, pad)


def peak(samples: np.ndarray) -> float:
    return float(np.max(np.abs(samples))) if samples.size else 0.0


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


def is_silent(samples: np.ndarray, threshold: float = 1e-4) -> bool:
    return peak(samples) < threshold


def limit_peak(samples: np.ndarray, ceiling: float = 0.99) -> np.ndarray:
    """Scale down (never up) so the peak stays under ``ceiling``: no clipping."""
    p = peak(samples)
    return (samples * (ceiling / p)).astype(np.float32) if p > ceiling else samples.astype(np.float32, copy=False)


def per_channel(fn: Any, samples: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    """Apply a mono function to every channel and restack (lengths may change)."""
    if samples.ndim == 1:
        return fn(samples, *args, **kwargs)
    outs = [fn(np.ascontiguousarray(samples[:, c]), *args, **kwargs) for c in range(samples.shape[1])]
    n = min(len(o) for o in outs)
    return np.stack([o[:n] for o in outs], axis=1)


# ---------------------------------------------------------------- STFT


def fft_size(sample_rate: int, seconds: float = 0.064) -> int:
    """A power-of-two FFT size covering about ``seconds`` (1024 at 16 kHz, 4096 at 48 kHz)."""
    return int(2 ** max(8, round(math.log2(max(sample_rate * seconds, 256)))))


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed STFT of a mono signal, centred (padded by ``n_fft // 2``); shape ``(bins, frames)``."""
    from numpy.lib.stride_tricks import sliding_window_view

    pad = n_fft // 2
    x = np.pad(np.asarray(x, dtype=np.float32), (pad, pad + n_fft))  # float32: complex64 spectra, half the memory
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    frames = sliding_window_view(x, n_fft)[::hop]
    n_frames = 1 + (len(x) - n_fft - n_fft) // hop
    return np.fft.rfft(frames[: max(n_frames, 1)] * window, axis=1).T


def istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of :func:`stft` by weighted overlap-add, trimmed to ``length`` samples."""
    window = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec.T, n=n_fft, axis=1) * window
    n_frames = frames.shape[0]
    total = n_fft + hop * (n_frames - 1)
    out = np.zeros(total)
    norm = np.zeros(total)
    idx = (np.arange(n_frames) * hop)[:, None] + np.arange(n_fft)[None, :]
    np.add.at(out, idx, frames)
    np.add.at(norm, idx, np.broadcast_to(window**2, frames.shape))
    out = out / np.maximum(norm, 1e-8 * norm.max(initial=1.0) + 1e-12)
    pad = n_fft // 2
    return fit_length(out[pad:], length).astype(np.float32)


# ---------------------------------------------------------------- time stretch, pitch, formants


def time_stretch(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Change duration by ``1 / factor`` keeping pitch (phase vocoder); ``factor > 1`` is faster.

    Mono or multichannel; the output has ``round(n / factor)`` samples.
    """
    if abs(factor - 1.0) < 1e-6 or x.shape[0] == 0:
        return x.astype(np.float32, copy=False)
    return per_channel(_time_stretch_mono, x, factor, sample_rate)


def _time_stretch_mono(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    n_fft = fft_size(sample_rate, 0.046)
    hop = n_fft // 4
    out_len = max(1, int(round(len(x) / factor)))
    if len(x) < n_fft:  # too short for a vocoder: plain interpolation is as good
        return np.interp(np.linspace(0, len(x) - 1, out_len), np.arange(len(x)), x).astype(np.float32)
    spec = stft(x, n_fft, hop)
    spec = np.concatenate([spec, np.zeros((spec.shape[0], 1), dtype=spec.dtype)], axis=1)
    steps = np.arange(0, spec.shape[1] - 1, factor)
    i0 = steps.astype(int)
    frac = steps - i0
    mag = (1 - frac) * np.abs(spec[:, i0]) + frac * np.abs(spec[:, i0 + 1])
    advance = np.linspace(0, np.pi * hop, spec.shape[0])[:, None]
    dphase = np.angle(spec[:, i0 + 1]) - np.angle(spec[:, i0]) - advance
    dphase = dphase - 2 * np.pi * np.round(dphase / (2 * np.pi))
    phase = np.angle(spec[:, :1]) + np.concatenate(
        [np.zeros((spec.shape[0], 1)), np.cumsum(advance + dphase, axis=1)[:, :-1]], axis=1
    )
    return istft(mag * np.exp(1j * phase), n_fft, hop, out_len)


def pitch_shift(x: np.ndarray, semitones: float, sample_rate: int) -> np.ndarray:
    """Shift pitch (and with it the formants) by ``semitones``, keeping the duration."""
    if abs(semitones) < 1e-3 or x.shape[0] == 0:
        return x.astype(np.float32, copy=False)
    ratio = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(x, 1.0 / ratio, sample_rate)  # ratio times longer
    # play the longer signal ratio times faster: FFT-resample it back to the original length
    from scipy.signal import resample as fft_resample

    out = fft_resample(stretched, x.shape[0], axis=0)
    return out.astype(np.float32)


def formant_shift(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Move the spectral envelope (formants) up by ``factor`` without changing pitch.

    Each STFT frame is split into a smooth envelope (low-quefrency cepstrum) and
    fine structure (the harmonics); the envelope is stretched along frequency and
    the two are recombined. ``factor > 1`` sounds smaller / more feminine.
    """
    if abs(factor - 1.0) < 1e-3 or x.shape[0] == 0:
        return x.astype(np.float32, copy=False)
    return per_channel(_formant_shift_mono, x, factor, sample_rate)


def _formant_shift_mono(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    n_fft = fft_size(sample_rate, 0.046)
    hop = n_fft // 4
    if len(x) < n_fft:
        return x.astype(np.float32)
    spec = stft(x, n_fft, hop)
    mag = np.abs(spec) + 1e-9
    env = spectral_envelope(mag, sample_rate)
    bins = np.arange(mag.shape[0], dtype=np.float64)
    src = bins / factor  # the new envelope at bin k is the old one at k / factor
    warped = np.empty_like(env)
    for t in range(env.shape[1]):
        warped[:, t] = np.interp(src, bins, env[:, t], right=env[-1, t])
    gain = np.clip(warped / env, 0.0, 10.0)
    return istft(spec * gain, n_fft, hop, len(x))


def spectral_envelope(mag: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cepstrally smoothed magnitude envelope per frame (``mag`` is ``(bins, frames)``)."""
    n_fft = 2 * (mag.shape[0] - 1)
    cep = np.fft.irfft(np.log(mag), n=n_fft, axis=0)
    cutoff = max(8, int(sample_rate / 600))  # keep quefrencies below a 600 Hz pitch period
    cep[cutoff : n_fft - cutoff + 1] = 0.0
    return np.exp(np.fft.rfft(cep, axis=0).real)


def estimate_f0(x: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 500.0) -> float:
    """Median fundamental frequency of the voiced frames (YIN), 0.0 if none is voiced."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(x if x.ndim == 1 else x.mean(axis=1), dtype=np.float64)
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin) + 1
    width = max(hi, int(0.025 * sample_rate))
    level = rms(x)
    f0s = []
    for start in range(0, len(x) - width - hi, width // 2):
        seg = x[start : start + width + hi]
        if rms(seg) < 0.5 * level:
            continue
        lagged = sliding_window_view(seg, width)[: hi + 1]
        diff = np.sum((lagged - seg[:width]) ** 2, axis=1)
        cmnd = diff[1:] * np.arange(1, hi + 1) / np.maximum(np.cumsum(diff[1:]), 1e-12)
        below = np.nonzero(cmnd[lo - 1 :] < 0.15)[0]
        if not below.size:
            continue
        tau = lo - 1 + int(below[0])
        while tau + 1 < len(cmnd) and cmnd[tau + 1] < cmnd[tau]:
            tau += 1
        f0s.append(sample_rate / (tau + 1))
    return float(np.median(f0s)) if f0s else 0.0


# ---------------------------------------------------------------- images and frames


def phase_correlation(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer ``(dy, dx)`` such that ``b`` is ``a`` shifted by it (grayscale 2-D arrays)."""
    h, w = a.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.rfft2((a - a.mean()) * window)
    fb = np.fft.rfft2((b - b.mean()) * window)
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-9
    corr = np.fft.irfft2(cross, s=(h, w))
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(dy - h if dy > h // 2 else dy), int(dx - w if dx > w // 2 else dx)


def shift_frame(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate a ``(H, W, C)`` frame by whole pixels, filling the uncovered border by edge replication."""
    h, w = frame.shape[:2]
    dy = int(np.clip(dy, -(h - 1), h - 1))
    dx = int(np.clip(dx, -(w - 1), w - 1))
    padded = np.pad(frame, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
    y0 = abs(dy) - dy
    x0 = abs(dx) - dx
    return padded[y0 : y0 + h, x0 : x0 + w]


def fit_image(img: Any, width: int, height: int, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Scale ``img`` to fit inside ``width``x``height`` keeping its aspect, letterboxed; RGB array."""
    from PIL import Image

    img = img.convert("RGB")
    scale = min(width / img.width, height / img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (width, height), background)
    canvas.paste(img.resize((w, h), Image.Resampling.LANCZOS), ((width - w) // 2, (height - h) // 2))
    return np.asarray(canvas)


def parse_color(value: str | Sequence[int], *, tool: str, param: str = "background") -> tuple[int, int, int]:
    from PIL import ImageColor

    if isinstance(value, str):
        try:
            rgb = ImageColor.getrgb(value)
        except ValueError as exc:
            raise ToolInputError(f"param {param!r}: unknown colour {value!r}", tool=tool) from exc
        return int(rgb[0]), int(rgb[1]), int(rgb[2])
    return tuple(int(np.clip(v, 0, 255)) for v in list(value)[:3])  # type: ignore[return-value]



# ---------------------------------------------------------------- instructions


_NUM = r"(\d+(?:\.\d+)?)"


def parse_speed(text: str) -> float | None:
    """A playback-speed factor from an instruction ("1.5x", "slow it down by 50%", "75% of the original
    speed", "twice as fast", "speed up"); ``None`` when the text names no speed change.

    Bare "speed up" means 1.5x, "slow down" 0.75x and "slow motion" 0.5x.
    """
    t = text.lower().replace(",", ".")
    slow = bool(re.search(r"\bslow|\bslower|decreas|reduc", t))
    fast = bool(re.search(r"speed(?:s|ing)?\s+(?:it\s+|the\s+\w+\s+)?up|faster|fast[- ]forward|accelerat|quicker|increas", t))
    m = re.search(_NUM + r"\s*[x×]\b|\b[x×]\s*" + _NUM, t)
    if m:
        value = float(m.group(1) or m.group(2))
        return 1.0 / value if slow and value > 1 else value
    m = re.search(_NUM + r"\s*(?:%|percent)", t)
    if m:
        pct = float(m.group(1)) / 100.0
        around = t[max(0, m.start() - 12) : m.end() + 16]
        if re.search(r"\bof\b|\bto\b|\bat\b", around) and not re.search(r"\bby\b", around):
            return pct
        if slow:
            return max(1.0 - pct, 0.01)
        if fast:
            return 1.0 + pct
        return pct
    m = re.search(_NUM + r"\s*times", t)
    if m:
        value = float(m.group(1))
        return 1.0 / value if slow and value > 1 else value
    if re.search(r"\btwice\b|\bdouble", t):
        return 0.5 if slow else 2.0
    if re.search(r"\bhalf\b", t):
        return 0.5
    m = re.search(r"(?:speed|by|to|of|at|factor(?: of)?)\s+" + _NUM, t)
    if m:
        value = float(m.group(1))
        if value > 0:
            return 1.0 / value if slow and value > 1 else value
    if "slow motion" in t or "slow-motion" in t:
        return 0.5
    if fast:
        return 1.5
    if slow:
        return 0.75
    return None

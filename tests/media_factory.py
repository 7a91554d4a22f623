"""Real test media made in code: espeak-ng speech, tones, noise, generated images and video frames.

Tests import it as ``from media_factory import tone`` (pytest puts tests/ on the path).
Everything is deterministic and tiny, so tests stay fast.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from orchestrator.artifacts import Audio, Modality, Video, decode, encode

__all__ = [
    "burst_audio",
    "color_image",
    "counter_video",
    "gradient_image",
    "noise",
    "roundtrip",
    "shaky_video",
    "spectral_centroid",
    "speech",
    "texture",
    "tone",
    "voiced",
]


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = 16000, amplitude: float = 0.5,
         channels: int = 1) -> Audio:
    """A sine tone; ``channels > 1`` repeats it on every channel."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return Audio(np.repeat(x[:, None], channels, axis=1) if channels > 1 else x, rate)


def noise(seconds: float = 1.0, rate: int = 16000, amplitude: float = 0.05, seed: int = 0) -> Audio:
    """White Gaussian noise with standard deviation ``amplitude``."""
    rng = np.random.default_rng(seed)
    return Audio((amplitude * rng.standard_normal(int(round(seconds * rate)))).astype(np.float32), rate)


def voiced(f0: float = 120.0, seconds: float = 1.0, rate: int = 16000, formants: tuple[float, ...] = (700.0, 1200.0, 2600.0)) -> Audio:
    """A steady synthetic vowel: a harmonic pulse train at ``f0`` through formant resonators."""
    from scipy.signal import lfilter

    t = np.arange(int(round(seconds * rate))) / rate
    k = np.arange(1, int(rate / 2 / f0))
    source = (np.sin(2 * np.pi * f0 * np.outer(t, k)) / k).sum(axis=1)
    out = np.zeros_like(source)
    for fc in formants:
        r = np.exp(-np.pi * 80.0 / rate)  # 80 Hz bandwidth
        out += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / rate), r * r], source)
    return Audio((0.5 * out / np.abs(out).max()).astype(np.float32), rate)


def spectral_centroid(audio: Audio) -> float:
    x = audio.mono()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / audio.sample_rate)
    return float((spec * freqs).sum() / (spec.sum() + 1e-12))


def burst_audio(rate: int = 16000, freq: float = 600.0, on: float = 0.4, off: float = 0.4, bursts: int = 3) -> Audio:
    """Tone bursts separated by digital silence (clean reference for denoising)."""
    seg_on = tone(freq, on, rate, 0.5).samples
    ramp = np.minimum(1.0, np.minimum(np.arange(len(seg_on)), np.arange(len(seg_on))[::-1]) / (0.01 * rate))
    seg_on = (seg_on * ramp).astype(np.float32)
    seg_off = np.zeros(int(off * rate), dtype=np.float32)
    return Audio(np.concatenate([seg_off] + [np.concatenate([seg_on, seg_off]) for _ in range(bursts)]), rate)


@lru_cache(maxsize=16)
def _speech(text: str, voice: str, rate: int) -> Audio:
    from decoders.speech_espeak import synthesize

    return synthesize(text, voice=voice, rate=rate)


def speech(text: str = "Hello world, this is a test.", voice: str = "en", rate: int = 175) -> Audio:
    """Real speech from espeak-ng (cached per text; a fresh copy each call)."""
    a = _speech(text, voice, rate)
    return Audio(a.samples.copy(), a.sample_rate)


def color_image(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> Any:
    from PIL import Image

    return Image.new("RGB", (width, height), color)


def gradient_image(width: int = 64, height: int = 48) -> Any:
    """Red grows left to right, green top to bottom: every pixel position is identifiable."""
    from PIL import Image

    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 80)], axis=2).astype(np.uint8))


def counter_video(frames: int = 10, fps: float = 10.0, width: int = 32, height: int = 32,
                  audio: Audio | None = None) -> Video:
    """Frame ``i`` is a flat gray of level ``20 + 20 * i`` (mod 240): the frame index survives H.264."""
    levels = (20 + 20 * np.arange(frames)) % 240
    data = np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).astype(np.uint8).copy()
    return Video(data, fps, audio)


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (blurred noise): good for motion estimation."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.random((height, width)), 3)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    return (np.stack([base, base[::-1], base[:, ::-1]], axis=2) * 255).astype(np.uint8)


def shaky_video(frames: int = 24, size: int = 64, jitter: int = 4, seed: int = 1, fps: float = 12.0) -> tuple[Video, np.ndarray]:
    """A static scene seen by a shaking camera: each frame a crop of a texture at a random offset.

    Returns the video and the ``(frames, 2)`` offsets (dy, dx) used.
    """
    rng = np.random.default_rng(seed)
    scene = texture(size + 2 * jitter + 2, size + 2 * jitter + 2, seed)
    offsets = rng.integers(-jitter, jitter + 1, size=(frames, 2))
    data = np.stack([
        scene[jitter + 1 + dy : jitter + 1 + dy + size, jitter + 1 + dx : jitter + 1 + dx + size] for dy, dx in offsets
    ])
    return Video(data, fps), offsets


def roundtrip(obj: Any, modality: Modality | str | None = None) -> Any:
    """Encode to canonical bytes and decode back, as the engine and store would."""
    data, meta = encode(obj, modality)
    return decode(data, modality or _modality(obj))


def _modality(obj: Any) -> Modality:
    from orchestrator.artifacts import infer_modality

    return infer_modality(obj)


# ---------------------------------------------------------------------- media bombs: small files, large decodes
def silent_flac(channels: int, rate: int, seconds: int) -> bytes:
    """FLAC of silence: a few dozen KiB that decode to ``channels x rate x seconds`` samples."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((rate, channels), dtype=np.int16)
        for _ in range(int(seconds)):
            f.write(block)
    return buf.getvalue()


def black_mp4(side: int, frames: int) -> bytes:
    """H.264 MP4 of black ``side x side`` frames: tiny on disk, ``side^2 x frames`` pixels decoded."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast", "threads": "1"})
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        black = np.zeros((side, side, 3), dtype=np.uint8)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(black, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()

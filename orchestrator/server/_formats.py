"""The byte formats OpenAI clients ask for: speech audio (wav/mp3/opus/flac/aac/pcm) and
transcripts (json/text/srt/vtt/verbose_json).

Audio is encoded with PyAV (FFmpeg's encoders); artifacts stay canonical WAV in the
store and are converted on the way out.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from orchestrator.artifacts import Audio, encode

__all__ = ["AUDIO_FORMATS", "PCM_RATE", "TRANSCRIPT_FORMATS", "export_audio", "subtitles"]

# format -> (MIME type, container, codec, sample format of the codec)
AUDIO_FORMATS: dict[str, tuple[str, str | None, str | None, str | None]] = {
    "wav": ("audio/wav", None, None, None),
    "mp3": ("audio/mpeg", "mp3", "libmp3lame", "s16p"),
    "opus": ("audio/ogg", "ogg", "libopus", "s16"),
    "flac": ("audio/flac", "flac", "flac", "s16"),
    "aac": ("audio/aac", "adts", "aac", "fltp"),
    "pcm": ("audio/pcm", None, None, None),
}
PCM_RATE = 24000
"""OpenAI's ``pcm``: raw 16-bit little-endian mono samples at 24 kHz, no header."""
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")

_RATES = {"libopus": (48000, 24000, 16000, 12000, 8000), "libmp3lame": (48000, 44100, 32000, 24000, 22050, 16000)}


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or samples.size == 0:
        return samples
    n = max(1, int(round(samples.shape[0] * target / rate)))
    x = np.linspace(0.0, samples.shape[0] - 1, n)
    return np.interp(x, np.arange(samples.shape[0]), samples).astype(np.float32)


def export_audio(audio: Audio, fmt: str) -> tuple[bytes, str]:
    """``audio`` as ``fmt`` bytes, with the MIME type. ``fmt`` must be in :data:`AUDIO_FORMATS`."""
    mime, container, codec, sample_fmt = AUDIO_FORMATS[fmt]
    mono = np.clip(audio.mono().astype(np.float32), -1.0, 1.0)
    if fmt == "wav":
        return encode(audio, "audio")[0], mime
    if fmt == "pcm":
        return (_resample(mono, audio.sample_rate, PCM_RATE) * 32767).astype("<i2").tobytes(), mime
    import av

    assert container is not None and codec is not None and sample_fmt is not None
    rate = audio.sample_rate
    allowed = _RATES.get(codec)
    if allowed and rate not in allowed:
        target = min(allowed, key=lambda r: (r < rate, abs(r - rate)))
        mono, rate = _resample(mono, rate, target), target
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        pcm = (mono * 32767).astype(np.int16)
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=rate)
        pts = 0
        for start in range(0, pcm.shape[0], frame_size):
            chunk = pcm[start:start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                converted.pts = pts
                pts += converted.samples
                out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return buf.getvalue(), mime


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(segments: list[dict[str, Any]], fmt: str, *, text: str, duration: float) -> str:
    """A transcript as SRT or WebVTT cues; without timed segments, one cue for the whole clip."""
    cues = [(float(s.get("start") or 0.0), float(s.get("end") or duration), str(s.get("text", "")).strip())
            for s in segments if str(s.get("text", "")).strip()]
    if not cues and text.strip():
        cues = [(0.0, duration, text.strip())]
    if fmt == "srt":
        return "".join(f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n\n" for i, (a, b, t) in enumerate(cues, 1))
    return "WEBVTT\n\n" + "".join(f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n\n" for a, b, t in cues)

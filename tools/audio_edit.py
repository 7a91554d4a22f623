"""Audio tools with numpy/scipy: TaskBench's Audio Splicer, Audio Effects, Audio Noise Reduction,
Voice Changer and Audio-to-Image.

Tools that take an ``instruction`` text port (effects, voice changer) read simple
keywords from it ("add reverb", "make it sound like a female voice"), so a plan
can pass the user's words straight through; explicit params always win over the
instruction. Outputs are peak-limited (scaled down, never clipped).

>>> import numpy as np
>>> from orchestrator import Audio, get_tool
>>> tone = Audio(np.sin(np.arange(16000) * 0.1).astype(np.float32) * 0.3, 16000)
>>> out = get_tool("audio.effects").call({"audio": tone, "instruction": "add reverb"})["audio"]
>>> out.duration > tone.duration    # the reverb tail
True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio
from orchestrator.errors import ToolInputError
from orchestrator.tool import tool

from ._media import (
    as_audio,
    as_list,
    as_text,
    check_audio_seconds,
    fft_size,
    fit_length,
    formant_shift,
    from_2d,
    is_silent,
    istft,
    limit_peak,
    parse_color,
    parse_speed,
    peak,
    per_channel,
    pitch_shift,
    resample,
    stft,
    time_stretch,
    to_channels,
)

__all__ = [
    "ConcatParams",
    "DenoiseParams",
    "EffectsParams",
    "VisualizeParams",
    "VoiceParams",
    "apply_effects",
    "concat",
    "denoise",
    "parse_effects",
    "parse_voice",
    "visualize",
]


# ---------------------------------------------------------------- Audio Splicer


class ConcatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crossfade: float = Field(default=0.0, ge=0, le=10, description="seconds of overlap between clips (clamped to half the shorter clip)")
    gap: float = Field(default=0.0, ge=0, le=60, description="seconds of silence between clips (ignored with crossfade)")
    sample_rate: int | None = Field(default=None, ge=8000, le=192000, description="output rate; default: the highest input rate")
    channels: int | None = Field(default=None, ge=1, le=8, description="output channels; default: the most among the inputs")


def concat(clips: list[Audio], params: ConcatParams, ctx: Any = None) -> Audio:
    """Join clips end to end, resampling and up/down-mixing each to a common rate and layout."""
    name = "audio.concat"
    clips = [c for c in clips if c.samples.shape[0] > 0]  # an empty clip contributes nothing
    if not clips:
        raise ToolInputError("every clip given to the splicer is empty (zero samples)", tool=name, port="clips")
    rate = params.sample_rate or max(c.sample_rate for c in clips)
    channels = params.channels or max(c.channels for c in clips)
    parts = [to_channels(resample(c.samples, c.sample_rate, rate), channels) for c in clips]
    total = sum(p.shape[0] for p in parts) + int(params.gap * rate) * (len(parts) - 1)
    check_audio_seconds(total / rate, ctx, tool=name)
    out = parts[0]
    for part in parts[1:]:
        fade = min(int(params.crossfade * rate), out.shape[0] // 2, part.shape[0] // 2)
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)[:, None]
            mixed = out[-fade:] * (1 - ramp) + part[:fade] * ramp
            out = np.concatenate([out[:-fade], mixed, part[fade:]])
        else:
            silence = np.zeros((int(params.gap * rate), channels), dtype=np.float32)
            out = np.concatenate([out, silence, part])
    return Audio(from_2d(limit_peak(out)), rate)


@tool(
    "audio.concat",
    task="audio-splicer",
    description="Splice audio clips end to end (optional crossfade or gap); mismatched rates/channels are converted.",
    inputs={"clips": {"modality": "audio", "many": True}},
    outputs={"audio": "audio"},
    params=ConcatParams,
)
def audio_splicer(clips: Any, *, params: ConcatParams, ctx: Any = None) -> Audio:
    items = as_list(clips, tool="audio.concat", port="clips")
    return concat([as_audio(c, tool="audio.concat", port="clips", ctx=ctx, allow_empty=True) for c in items], params, ctx)


# ---------------------------------------------------------------- Audio Effects


class EffectsParams(BaseModel):
    """Each effect is off at its default; several combine (order: EQ, pitch, speed, chorus, echo, reverb, gain, fades)."""

    model_config = ConfigDict(extra="forbid")

    reverb: float = Field(default=0.0, ge=0, le=1, description="reverb amount (wet level and room size)")
    echo_delay: float = Field(default=0.0, ge=0, le=2, description="echo delay in seconds (0: no echo)")
    echo_decay: float = Field(default=0.5, ge=0, le=0.95, description="level of each repeat relative to the previous")
    chorus: float = Field(default=0.0, ge=0, le=1, description="chorus depth")
    bass_db: float = Field(default=0.0, ge=-24, le=24, description="low-shelf gain below ~200 Hz")
    treble_db: float = Field(default=0.0, ge=-24, le=24, description="high-shelf gain above ~4 kHz")
    gain_db: float = Field(default=0.0, ge=-60, le=40, description="overall gain (the result is still peak-limited)")
    speed: float = Field(default=1.0, ge=0.25, le=4, description="tempo factor, pitch kept (2: twice as fast)")
    pitch_semitones: float = Field(default=0.0, ge=-24, le=24, description="pitch shift, duration kept")
    fade_in: float = Field(default=0.0, ge=0, le=60, description="seconds")
    fade_out: float = Field(default=0.0, ge=0, le=60, description="seconds")
    normalize: bool = Field(default=False, description="scale the peak to -1 dBFS")


_EFFECT_WORDS = (
    "reverb, echo, chorus, equalization/eq, bass, treble, louder/quieter or N dB, speed up/slow down or Nx, "
    "higher/lower pitch or N semitones, fade in/out, normalize"
)


def parse_effects(instruction: str) -> dict[str, Any]:
    """Effect params named by an instruction ("add reverb and some echo", "boost the bass 6 dB").

    Returns only the params the text mentions; an empty dict when it names none.
    """
    t = instruction.lower()
    out: dict[str, Any] = {}
    strong = r"(?:heavy|lots of|a lot of|strong|big|large|much|hall|cathedral)"
    light = r"(?:light|slight|subtle|little|small|bit of|touch of|some)"
    if re.search(r"reverb|reverberation|\broom\b|\bhall\b|cathedral", t):
        out["reverb"] = 0.75 if re.search(strong + r"\W+(?:\w+\W+)?reverb|cathedral|\bhall\b", t) else (
            0.25 if re.search(light + r"\W+(?:\w+\W+)?reverb", t) else 0.45)
    if re.search(r"\becho", t):
        m = re.search(r"(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?)\b", t)
        delay = 0.3
        if m:
            delay = float(m.group(1)) / (1000.0 if m.group(2).startswith("m") else 1.0)
        out["echo_delay"] = float(np.clip(delay, 0.02, 2.0))
        out["echo_decay"] = 0.5
    if "chorus" in t:
        out["chorus"] = 0.6
    if re.search(r"equali[sz]|\beq\b", t):
        out["bass_db"], out["treble_db"] = 4.0, 3.0
    db = re.search(r"([+-]?\d+(?:\.\d+)?)\s*db", t)
    if "bass" in t:
        cut = re.search(r"(?:reduce|cut|less|lower|remove|decrease)\w*\W+(?:\w+\W+)?bass", t)
        out["bass_db"] = (-1 if cut else 1) * (abs(float(db.group(1))) if db else 6.0)
    if "treble" in t or "brighter" in t or "crisp" in t:
        cut = re.search(r"(?:reduce|cut|less|lower|remove|decrease)\w*\W+(?:\w+\W+)?treble", t)
        out["treble_db"] = (-1 if cut else 1) * (abs(float(db.group(1))) if db and "bass" not in t else 6.0)
    if re.search(r"louder|amplif|boost the volume|increase (?:the )?volume|raise (?:the )?volume|volume up", t):
        out["gain_db"] = abs(float(db.group(1))) if db and "bass" not in t and "treble" not in t else 6.0
    elif re.search(r"quieter|softer|decrease (?:the )?volume|lower (?:the )?volume|reduce (?:the )?volume|volume down", t):
        out["gain_db"] = -abs(float(db.group(1))) if db and "bass" not in t and "treble" not in t else -6.0
    elif db and "bass" not in t and "treble" not in t and re.search(r"gain|volume", t):
        out["gain_db"] = float(db.group(1))
    if re.search(r"speed|faster|slower|slow down|tempo|\d\s*x\b", t):
        factor = parse_speed(t)
        if factor is not None:
            out["speed"] = float(np.clip(factor, 0.25, 4.0))
    m = re.search(r"([+-]?\d+(?:\.\d+)?)\s*semitones?", t)
    if m:
        value = float(m.group(1))
        out["pitch_semitones"] = -abs(value) if re.search(r"down|lower|deeper", t) else value
    elif re.search(r"higher pitch|pitch(?: it)? up|raise the pitch|high-pitched|higher-pitched", t):
        out["pitch_semitones"] = 3.0
    elif re.search(r"lower pitch|pitch(?: it)? down|lower the pitch|deeper|low-pitched", t):
        out["pitch_semitones"] = -3.0
    m = re.search(r"fade[- ]?in(?:\s+(?:of|over|for)?\s*(\d+(?:\.\d+)?)\s*s)?", t)
    if m:
        out["fade_in"] = float(m.group(1)) if m.group(1) else 1.0
    m = re.search(r"fade[- ]?out(?:\s+(?:of|over|for)?\s*(\d+(?:\.\d+)?)\s*s)?", t)
    if m:
        out["fade_out"] = float(m.group(1)) if m.group(1) else 1.0
    if re.search(r"normali[sz]", t):
        out["normalize"] = True
    return out


def apply_effects(audio: Audio, p: EffectsParams) -> Audio:
    """Run the effect chain of :class:`EffectsParams` over ``audio``."""
    rate = audio.sample_rate
    x = audio.samples.astype(np.float32)
    if p.bass_db or p.treble_db:
        x = _shelves(x, rate, p.bass_db, p.treble_db)
    if p.pitch_semitones:
        x = pitch_shift(x, p.pitch_semitones, rate)
    if p.speed != 1.0:
        x = time_stretch(x, p.speed, rate)
    if p.chorus:
        x = per_channel(_chorus, x, rate, p.chorus)
    if p.echo_delay > 0 and p.echo_decay > 0:
        x = _echo(x, rate, p.echo_delay, p.echo_decay)
    if p.reverb:
        x = _reverb(x, rate, p.reverb)
    if p.gain_db:
        x = x * np.float32(10 ** (p.gain_db / 20))
    n = x.shape[0]
    if p.fade_in:
        k = min(n, int(p.fade_in * rate))
        x[:k] *= np.linspace(0, 1, k, dtype=np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    if p.fade_out:
        k = min(n, int(p.fade_out * rate))
        if k:
            x[n - k :] *= np.linspace(1, 0, k, dtype=np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    if p.normalize and peak(x) > 0:
        x = x * np.float32(10 ** (-1 / 20) / peak(x))
    return Audio(limit_peak(x), rate)


def _shelves(x: np.ndarray, rate: int, bass_db: float, treble_db: float) -> np.ndarray:
    from scipy.signal import sosfilt

    sos = []
    if bass_db:
        sos.append(_shelf(rate, min(200.0, rate * 0.2), bass_db, low=True))
    if treble_db:
        sos.append(_shelf(rate, min(4000.0, rate * 0.35), treble_db, low=False))
    return sosfilt(np.array(sos), x, axis=0).astype(np.float32)


def _shelf(rate: int, freq: float, gain_db: float, *, low: bool) -> list[float]:
    """RBJ audio-EQ-cookbook shelving biquad (slope 1) as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / rate
    cos, alpha = np.cos(w0), np.sin(w0) / 2 * np.sqrt(2)
    sq = 2 * np.sqrt(a) * alpha
    if low:
        b = [a * ((a + 1) - (a - 1) * cos + sq), 2 * a * ((a - 1) - (a + 1) * cos), a * ((a + 1) - (a - 1) * cos - sq)]
        den = [(a + 1) + (a - 1) * cos + sq, -2 * ((a - 1) + (a + 1) * cos), (a + 1) + (a - 1) * cos - sq]
    else:
        b = [a * ((a + 1) + (a - 1) * cos + sq), -2 * a * ((a - 1) + (a + 1) * cos), a * ((a + 1) + (a - 1) * cos - sq)]
        den = [(a + 1) - (a - 1) * cos + sq, 2 * ((a - 1) - (a + 1) * cos), (a + 1) - (a - 1) * cos - sq]
    return [v / den[0] for v in b] + [1.0] + [v / den[0] for v in den[1:]]


def _chorus(x: np.ndarray, rate: int, depth: float) -> np.ndarray:
    """Two voices, each a copy delayed by 15-25 ms with the delay slowly modulated."""
    n = np.arange(x.shape[0], dtype=np.float64)
    out = x.astype(np.float64).copy()
    for lfo_hz, base_ms, phase in ((0.8, 20.0, 0.0), (1.3, 24.0, 1.7)):
        delay = (base_ms + 6.0 * depth * np.sin(2 * np.pi * lfo_hz * n / rate + phase)) * rate / 1000.0
        out += 0.5 * depth * np.interp(n - delay, n, x, left=0.0)
    return (out / (1 + depth)).astype(np.float32)


def _echo(x: np.ndarray, rate: int, delay: float, decay: float) -> np.ndarray:
    """Repeats at multiples of ``delay``, each ``decay`` times the last, until below -40 dB."""
    d = max(1, int(delay * rate))
    repeats = max(1, min(20, int(np.ceil(np.log(0.01) / np.log(decay)))))
    out = np.zeros((x.shape[0] + d * repeats, *x.shape[1:]), dtype=np.float32)
    out[: x.shape[0]] += x
    for k in range(1, repeats + 1):
        out[k * d : k * d + x.shape[0]] += x * np.float32(decay**k)
    return out


def _reverb(x: np.ndarray, rate: int, amount: float) -> np.ndarray:
    """Convolution with a synthetic room response: exponentially decaying, darkening noise.

    ``amount`` sets both the wet level and the decay time (RT60 0.3-2.3 s); the
    output keeps the reverb tail, so it is longer than the input.
    """
    from scipy.signal import fftconvolve, lfilter

    rt60 = 0.3 + 2.0 * amount
    n = int(rt60 * rate)
    rng = np.random.default_rng(1234)  # a fixed room: the effect is deterministic
    t = np.arange(n) / rate
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir = lfilter([0.4], [1, -0.6], ir)  # high frequencies die faster
    ir[: int(0.01 * rate)] = 0.0  # 10 ms pre-delay
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12
    x2 = x if x.ndim == 2 else x[:, None]
    wet = np.stack([fftconvolve(x2[:, c], ir) for c in range(x2.shape[1])], axis=1)
    dry = np.zeros_like(wet)
    dry[: x2.shape[0]] = x2
    mix = amount * 0.8
    out = (1 - mix * 0.5) * dry + mix * wet * (np.sqrt(np.mean(x2**2)) / (np.sqrt(np.mean(wet**2)) + 1e-12))
    return from_2d(out.astype(np.float32)) if x.ndim == 1 else out.astype(np.float32)


_P = TypeVar("_P", bound=BaseModel)


def _with_instruction(params: _P, instruction: Any, parse: Callable[[str], dict[str, Any]], *, tool: str,
                      unknown: str) -> _P:
    """``params`` completed by what a free-text instruction names; explicitly set params win.

    An instruction that names nothing ``parse`` knows, with no params set either, is a
    ToolInputError ("the instruction '...' <unknown>").
    """
    text = "" if instruction is None else as_text(instruction, tool=tool, port="instruction")
    if not text.strip():
        return params
    found = parse(text)
    if not found and not params.model_fields_set:
        raise ToolInputError(f"the instruction {text[:80]!r} {unknown}", tool=tool, port="instruction")
    return type(params).model_validate({**found, **params.model_dump(include=params.model_fields_set)})


@tool(
    "audio.effects",
    task="audio-effects",
    description="Apply audio effects (reverb, echo, chorus, bass/treble EQ, gain, speed, pitch, fades) set by params "
    "or by an instruction such as 'add reverb'.",
    inputs={"audio": "audio", "instruction": {"modality": "text", "optional": True}},
    outputs={"audio": "audio"},
    params=EffectsParams,
)
def audio_effects(audio: Any, instruction: Any = None, *, params: EffectsParams, ctx: Any = None) -> Audio:
    name = "audio.effects"
    clip = as_audio(audio, tool=name, port="audio", ctx=ctx)
    params = _with_instruction(params, instruction, parse_effects, tool=name,
                               unknown=f"names no effect this tool knows; use one of: {_EFFECT_WORDS}")
    out_seconds = clip.duration / params.speed + (2.3 if params.reverb else 0) + 20 * params.echo_delay
    check_audio_seconds(out_seconds, ctx, tool=name)
    return apply_effects(clip, params)


# ---------------------------------------------------------------- Audio Noise Reduction


class DenoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strength: float = Field(default=1.0, ge=0, le=1, description="how much of the noise to remove (1: all the gate can)")
    threshold_std: float = Field(default=1.5, ge=0, le=6, description="gate threshold: noise mean + this many std devs (dB)")
    noise_percentile: float = Field(default=10.0, ge=1, le=50, description="the quietest N%% of frames form the noise profile")
    noise_seconds: float | None = Field(default=None, gt=0, le=60, description="use the first N seconds as noise profile instead")
    smoothing_ms: float = Field(default=60.0, ge=0, le=500, description="time smoothing of the gate, against musical noise")


def denoise(audio: Audio, p: DenoiseParams) -> Audio:
    """Spectral gating (as in noisereduce): a per-frequency threshold learned from the noise
    profile; STFT bins under it are attenuated by ``strength``, the mask smoothed over time and frequency.

    Silent audio is returned unchanged.
    """
    if is_silent(audio.samples, 1e-6):
        return Audio(audio.samples.copy(), audio.sample_rate)
    return Audio(limit_peak(per_channel(_denoise_mono, audio.samples, audio.sample_rate, p)), audio.sample_rate)


def _denoise_mono(x: np.ndarray, rate: int, p: DenoiseParams) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    n_fft = fft_size(rate, 0.032)
    hop = n_fft // 4
    if len(x) < n_fft:
        return x.astype(np.float32)
    spec = stft(x, n_fft, hop)
    db = 20 * np.log10(np.abs(spec) + 1e-10)
    if p.noise_seconds is not None:
        k = max(2, int(p.noise_seconds * rate / hop))
        noise = db[:, :k]
    else:
        energy = db.mean(axis=0)
        noise = db[:, energy <= np.percentile(energy, p.noise_percentile)]
        if noise.shape[1] < 2:
            noise = db[:, np.argsort(energy)[:2]]
    threshold = noise.mean(axis=1, keepdims=True) + p.threshold_std * noise.std(axis=1, keepdims=True)
    mask = (db > threshold).astype(np.float64)
    t_frames = max(1, int(round(p.smoothing_ms / 1000 * rate / hop)))
    mask = uniform_filter(mask, size=(3, t_frames), mode="nearest")
    gain = 1.0 - p.strength * (1.0 - mask)
    return istft(spec * gain, n_fft, hop, len(x))


@tool(
    "audio.denoise",
    task="audio-noise-reduction",
    description="Reduce steady background noise (hiss, hum, fan) by spectral gating.",
    inputs={"audio": "audio"},
    outputs={"audio": "audio"},
    params=DenoiseParams,
)
def audio_noise_reduction(audio: Any, *, params: DenoiseParams, ctx: Any = None) -> Audio:
    return denoise(as_audio(audio, tool="audio.denoise", port="audio", ctx=ctx), params)


# ---------------------------------------------------------------- Voice Changer


class VoiceParams(BaseModel):
    """Pitch and formant shifts (independent), plus a robot effect. Explicit params win over the instruction."""

    model_config = ConfigDict(extra="forbid")

    pitch_semitones: float = Field(default=0.0, ge=-24, le=24, description="voice pitch; +12 is an octave up")
    formant_factor: float = Field(default=1.0, ge=0.5, le=2.0, description="vocal-tract size: >1 smaller (feminine/child), <1 larger")
    robot: bool = Field(default=False, description="metallic ring-modulated voice")


_VOICE_PRESETS: tuple[tuple[str, float, float], ...] = (
    (r"chipmunk|cartoon|helium|squeaky", 10.0, 1.3),
    (r"\bchild|\bkid|\bchildren|young(?:er)? (?:voice|boy|girl)|little (?:boy|girl)", 7.0, 1.25),
    (r"\bfemale|\bwoman|\bwomen|feminine|\bgirl|\blady", 5.0, 1.18),
    (r"\bmale|\bman\b|\bmen\b|masculine|\bguy\b|\bboy", -5.0, 0.86),
    (r"\bmonster|\bgiant|\bdemon|\bogre", -9.0, 0.75),
)
_VOICE_WORDS = "female, male, child, chipmunk, monster, robot, higher/lower (deeper) pitch, N semitones"


def parse_voice(instruction: str) -> dict[str, Any]:
    """Voice params named by an instruction ("a female voice", "deeper", "robotic", "+3 semitones")."""
    t = instruction.lower()
    out: dict[str, Any] = {}
    for pattern, semitones, formant in _VOICE_PRESETS:
        if re.search(pattern, t) and not (pattern.startswith(r"\bmale") and re.search(r"\bfemale", t)):
            out["pitch_semitones"], out["formant_factor"] = semitones, formant
            break
    m = re.search(r"([+-]?\d+(?:\.\d+)?)\s*semitones?", t)
    octave = re.search(r"\boctave", t)
    up = re.search(r"higher|high-pitched|high pitch|raise|\bup\b", t)
    down = re.search(r"lower|deeper|\bdeep\b|low-pitched|low pitch|\bdown\b", t)
    if m or octave:
        value = abs(float(m.group(1))) if m else 12.0
        out["pitch_semitones"] = -value if down and not up else value
    elif up or down:
        delta = 3.0 if up else -3.0
        if "pitch_semitones" in out:
            out["pitch_semitones"] = float(np.clip(out["pitch_semitones"] + delta / 1.5, -24, 24))
        else:
            out["pitch_semitones"], out["formant_factor"] = delta, 1.05 if up else 0.93
    if re.search(r"robot|robotic|metallic|dalek", t):
        out["robot"] = True
    return out


def change_voice(audio: Audio, p: VoiceParams) -> Audio:
    """Pitch shift (phase vocoder + resampling, formants move with it), then move the formants
    by ``formant_factor / pitch ratio`` so they end where asked; optional ring modulation."""
    rate = audio.sample_rate
    x = audio.samples
    ratio = 2 ** (p.pitch_semitones / 12)
    if p.pitch_semitones:
        x = pitch_shift(x, p.pitch_semitones, rate)
    correction = p.formant_factor / ratio
    if abs(correction - 1) > 1e-3:
        x = formant_shift(x, correction, rate)
    if p.robot:
        t = np.arange(x.shape[0]) / rate
        carrier = np.sin(2 * np.pi * 50.0 * t).astype(np.float32)
        x = 0.25 * x + 0.9 * x * (carrier if x.ndim == 1 else carrier[:, None])
    return Audio(limit_peak(fit_length(x, audio.samples.shape[0])), rate)


@tool(
    "audio.voice_change",
    task="voice-changer",
    description="Change a voice's pitch and formants (female, male, child, deeper, robot …) by params or an instruction.",
    inputs={"audio": "audio", "instruction": {"modality": "text", "optional": True}},
    outputs={"audio": "audio"},
    params=VoiceParams,
)
def voice_changer(audio: Any, instruction: Any = None, *, params: VoiceParams, ctx: Any = None) -> Audio:
    name = "audio.voice_change"
    clip = as_audio(audio, tool=name, port="audio", ctx=ctx)
    params = _with_instruction(params, instruction, parse_voice, tool=name,
                               unknown=f"names no voice change this tool knows; use: {_VOICE_WORDS}")
    return change_voice(clip, params)


# ---------------------------------------------------------------- Audio-to-Image


class VisualizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["waveform", "spectrogram"] = "waveform"
    width: int = Field(default=800, ge=16, le=8192)
    height: int = Field(default=240, ge=16, le=4096)
    color: str = Field(default="#1f6fb4", description="waveform colour")
    background: str = Field(default="white", description="waveform background")
    db_range: float = Field(default=80.0, ge=20, le=160, description="spectrogram dynamic range in dB")
    max_freq: float | None = Field(default=None, gt=0, description="spectrogram top frequency in Hz (default: Nyquist)")


# a perceptual dark-to-bright ramp (close to matplotlib's "magma")
_MAGMA = np.array([
    [0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129], [181, 54, 122],
    [229, 80, 100], [251, 135, 97], [254, 194, 135], [252, 253, 191],
], dtype=np.float64)


def visualize(audio: Audio, p: VisualizeParams) -> Any:
    """A waveform (min/max per pixel column, channels mixed) or a log-frequency-power spectrogram
    (low frequencies at the bottom). Silent audio gives a flat line or a dark image."""
    from PIL import Image

    x = audio.mono().astype(np.float64)
    if p.kind == "waveform":
        if len(x) >= p.width:  # min and max of the samples under each pixel column
            edges = np.linspace(0, len(x), p.width + 1).astype(int)[:-1]
            lo, hi = np.minimum.reduceat(x, edges), np.maximum.reduceat(x, edges)
        else:  # fewer samples than pixels: sample the signal at each column
            lo = hi = np.interp(np.linspace(0, len(x) - 1, p.width), np.arange(len(x)), x)
        half = (p.height - 1) / 2
        y_top = np.floor(half - np.clip(hi, -1, 1) * half).astype(int)
        y_bot = np.ceil(half - np.clip(lo, -1, 1) * half).astype(int)
        rows = np.arange(p.height)[:, None]
        ink = (rows >= y_top[None, :]) & (rows <= y_bot[None, :])
        bg = np.array(parse_color(p.background, tool="audio.visualize"), dtype=np.uint8)
        fg = np.array(parse_color(p.color, tool="audio.visualize", param="color"), dtype=np.uint8)
        img = np.where(ink[:, :, None], fg, bg).astype(np.uint8)
        return Image.fromarray(img)
    rate = audio.sample_rate
    n_fft = fft_size(rate, 0.032)
    hop = max(1, min(n_fft // 4, len(x) // p.width or 1))
    power = np.abs(stft(x, n_fft, hop)) ** 2
    freqs = np.linspace(0, rate / 2, power.shape[0])
    if p.max_freq is not None:
        power = power[freqs <= p.max_freq]
    db = 10 * np.log10(power + 1e-20)
    top = db.max()
    level = np.zeros_like(db) if top <= -190 else np.clip((db - (top - p.db_range)) / p.db_range, 0, 1)
    small = Image.fromarray((level[::-1] * 255).astype(np.uint8), mode="L")
    level = np.asarray(small.resize((p.width, p.height), Image.Resampling.BILINEAR), dtype=np.float64) / 255
    pos = level * (len(_MAGMA) - 1)
    i = np.minimum(pos.astype(int), len(_MAGMA) - 2)
    frac = (pos - i)[..., None]
    rgb = _MAGMA[i] * (1 - frac) + _MAGMA[i + 1] * frac
    return Image.fromarray(rgb.round().astype(np.uint8))


@tool(
    "audio.visualize",
    task="audio-to-image",
    description="Draw an audio clip as an image: its waveform or its spectrogram.",
    inputs={"audio": "audio"},
    outputs={"image": "image"},
    params=VisualizeParams,
)
def audio_to_image(audio: Any, *, params: VisualizeParams, ctx: Any = None) -> Any:
    return visualize(as_audio(audio, tool="audio.visualize", port="audio", ctx=ctx), params)

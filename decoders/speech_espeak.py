"""Text-to-speech with eSpeak NG: small, fast, offline, deterministic.

eSpeak NG is a formant synthesizer (robotic, but intelligible and needs no model
download), so it is the speech backend that works on every machine. It runs as
the Debian binary ``espeak-ng``, reading the text on stdin and writing a WAV to
stdout; nothing goes through a shell.

>>> from decoders.speech_espeak import synthesize
>>> audio = synthesize("Hello world", voice="en-us", rate=160)   # doctest: +SKIP
>>> audio.sample_rate                                               # doctest: +SKIP
22050

Profiles can name it as a model: ``espeak-ng`` (default voice) or
``espeak-ng:<voice>`` such as ``espeak-ng:en+f3``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio
from orchestrator.errors import BackendUnavailable, ParamError, ToolInputError
from orchestrator.tool import tool

__all__ = ["EspeakParams", "espeak_binary", "synthesize", "voice_for_model"]

logger = logging.getLogger("orchestrator.decoders.espeak")

TOOL = "speech.espeak"
INSTALL_HINT = "install it with: sudo apt-get install -y espeak-ng"
MAX_TEXT_CHARS = 100_000
_VOICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*(\+[A-Za-z0-9_\-]+)?$")
_MODEL_PREFIXES = ("espeak-ng", "espeak")


def espeak_binary() -> str:
    """Path of the ``espeak-ng`` binary (``ORCHESTRATOR_ESPEAK_BINARY`` overrides the search)."""
    override = os.environ.get("ORCHESTRATOR_ESPEAK_BINARY")
    candidates = [override] if override else [shutil.which("espeak-ng"), "/usr/bin/espeak-ng"]
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    raise BackendUnavailable(f"the espeak-ng binary was not found; {INSTALL_HINT}", model="espeak-ng", task="text-to-speech")


def voice_for_model(model: str | None, default: str = "en") -> str:
    """Map a profile model name (``espeak-ng``, ``espeak-ng:en-us``) to an espeak voice."""
    if model is None:
        return default
    name, _, voice = model.partition(":")
    if name.lower() not in _MODEL_PREFIXES:
        raise ParamError(
            f"model {model!r} is not an espeak-ng voice; use 'espeak-ng' or 'espeak-ng:<voice>' (e.g. espeak-ng:en-us)",
            model=model, task="text-to-speech", param="model",
        )
    return voice or default


def synthesize(text: str, *, voice: str = "en", rate: int = 175, pitch: int = 50, amplitude: int = 100,
               word_gap: int = 0) -> Audio:
    """Speak ``text``; returns mono 16-bit-quality :class:`Audio` at espeak's rate (22.05 kHz).

    ``rate`` is in words per minute (80-450), ``pitch`` 0-99 (50 is neutral),
    ``voice`` an espeak voice such as ``en``, ``en-us``, ``fr`` or ``en+f3`` (a variant).
    """
    # 1. Check inputs
    if not isinstance(text, str) or not text.strip():
        raise ToolInputError("text to speak is empty", tool=TOOL, port="text")
    if len(text) > MAX_TEXT_CHARS:
        raise ToolInputError(f"text is {len(text)} characters, over the {MAX_TEXT_CHARS}-character limit", tool=TOOL)
    if not _VOICE_RE.match(voice):
        raise ParamError(f"voice {voice!r} is not a valid espeak-ng voice name", param="voice", task="text-to-speech")
    binary = espeak_binary()
    # 2. Run espeak-ng: text on stdin (never parsed as options), WAV on stdout
    cmd = [binary, "--stdin", "--stdout", "-b", "1", "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)),
           "-a", str(int(amplitude)), "-g", str(int(word_gap))]
    try:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolInputError("espeak-ng took more than 300 s; the text is too long", tool=TOOL) from exc
    except OSError as exc:
        raise BackendUnavailable(f"cannot run {binary}: {exc}; {INSTALL_HINT}", model="espeak-ng") from exc
    if proc.returncode != 0 or not proc.stdout:
        message = proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        if "voice" in message.lower():
            raise ParamError(f"espeak-ng refused voice {voice!r}: {message}", param="voice", task="text-to-speech")
        raise ToolInputError(f"espeak-ng failed: {message}", tool=TOOL)
    # 3. Parse the streamed WAV (its size fields are placeholders, so read the chunks by hand)
    return _parse_stream_wav(proc.stdout)


def _parse_stream_wav(data: bytes) -> Audio:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ToolInputError("espeak-ng did not write a WAV stream", tool=TOOL)
    pos, rate, channels, bits = 12, 22050, 1, 16
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
        elif cid == b"data":
            payload = data[pos + 8 :]  # streamed: the declared size is bogus, the data runs to the end
            if bits != 16:
                raise ToolInputError(f"espeak-ng wrote {bits}-bit audio; expected 16-bit", tool=TOOL)
            payload = payload[: len(payload) - len(payload) % (2 * channels)]
            samples = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
            if channels > 1:
                samples = samples.reshape(-1, channels)
            if samples.shape[0] == 0:
                raise ToolInputError("espeak-ng produced no audio for this text", tool=TOOL)
            return Audio(samples, rate)
        pos += 8 + size + (size & 1)
    raise ToolInputError("espeak-ng output has no data chunk", tool=TOOL)


class EspeakParams(BaseModel):
    """Voice settings for :func:`speak`."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="'espeak-ng' or 'espeak-ng:<voice>'; sets the voice")
    voice: str = Field(default="en", pattern=_VOICE_RE.pattern, description="espeak-ng voice, e.g. en, en-us, fr, de, en+f3 (female variant)")
    rate: int = Field(default=175, ge=80, le=450, description="speaking rate in words per minute")
    pitch: int = Field(default=50, ge=0, le=99, description="base pitch, 50 is neutral")
    amplitude: int = Field(default=100, ge=0, le=200, description="volume, 100 is normal")


@tool(
    TOOL,
    task="text-to-speech",
    description="Speak a text with eSpeak NG (offline formant synthesizer; many languages, robotic voice).",
    inputs={"text": "text"},
    outputs={"audio": "audio"},
    params=EspeakParams,
)
def speak(text: str, *, params: EspeakParams) -> Audio:
    voice = voice_for_model(params.model, default=params.voice) if params.model else params.voice
    return synthesize(text, voice=voice, rate=params.rate, pitch=params.pitch, amplitude=params.amplitude)

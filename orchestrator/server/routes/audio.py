"""OpenAI's audio endpoints: ``/v1/audio/speech`` (read aloud), ``/v1/audio/transcriptions``
(dictation) and ``/v1/audio/translations`` (speech to English text).

Speech runs the profile's ``text-to-speech`` tool and answers raw audio bytes in the
asked ``response_format`` (``mp3`` by default, as OpenAI does; ``wav``, ``opus``,
``flac``, ``aac``, ``pcm``). OpenAI's voice names (``alloy``, ``nova`` …) map to
voice variants of tools that have voices (eSpeak NG: ``en+f3`` …); such tools also
take their own voice names (``fr``, ``de``, ``en-us``). ``speed`` sets the speaking rate.

Transcriptions run the ``automatic-speech-recognition`` tool on an uploaded file
(any format the store decodes: WAV, MP3, FLAC, OGG, WebM …) and answer ``json``,
``text``, ``srt``, ``vtt`` or ``verbose_json``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio, Modality

from .._errors import ApiError
from .._formats import AUDIO_FORMATS, TRANSCRIPT_FORMATS, export_audio, subtitles
from .._media import Call, call_tool, pick_tool, validate_params
from .._state import ServerState, get_state
from .images import multipart_form, read_upload

__all__ = ["OPENAI_VOICES", "SpeechRequest", "router"]

router = APIRouter(prefix="/v1/audio", tags=["openai media"])

OPENAI_VOICES = {
    "alloy": "en", "ash": "en-us", "ballad": "en+m3", "coral": "en+f2", "echo": "en+m2", "fable": "en-gb",
    "nova": "en+f3", "onyx": "en+m1", "sage": "en+f4", "shimmer": "en+f5", "verse": "en+m4",
}
"""OpenAI voice name -> the voice used by tools that take a ``voice`` (eSpeak NG variants)."""

_BASE_RATE = 175  # eSpeak NG's default words per minute: speed 1.0


class SpeechRequest(BaseModel):
    """OpenAI's speech request; ``instructions`` and ``stream_format`` are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    input: str = Field(min_length=1)
    model: str | None = None
    voice: str = "alloy"
    response_format: str = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


def speech_params(state: ServerState, tool: str, voice: str | None, speed: float) -> dict[str, Any]:
    """The tool's params for an OpenAI ``voice`` and ``speed`` (by the params the tool has)."""
    fields = state.registry.get(tool).spec.params.model_fields
    params: dict[str, Any] = {}
    if voice:
        if "voice" in fields:
            params["voice"] = OPENAI_VOICES.get(voice.lower(), voice)
        elif voice.lower() not in OPENAI_VOICES:
            raise ApiError(400, f"voice {voice!r} is not known; {tool} has one voice (use one of "
                           f"{sorted(OPENAI_VOICES)}, which all mean it)", type="invalid_request_error", param="voice")
    if speed != 1.0:
        if "rate" in fields:
            params["rate"] = max(80, min(450, round(_BASE_RATE * speed)))
        elif "speaking_rate" in fields:
            params["speaking_rate"] = speed
    return params


@router.post("/speech", summary="Read a text aloud (OpenAI-compatible); raw audio bytes back",
             responses={200: {"content": {"audio/mpeg": {}, "audio/wav": {}}}})
async def speech(body: SpeechRequest, state: ServerState = Depends(get_state)) -> Response:
    # 1. Check inputs
    if len(body.input) > state.settings.max_speech_chars:
        raise ApiError(400, f"input is {len(body.input)} characters; the limit is {state.settings.max_speech_chars}",
                       type="invalid_request_error", param="input")
    if not body.input.strip():
        raise ApiError(400, "input is blank", type="invalid_request_error", param="input")
    fmt = body.response_format.lower()
    if fmt not in AUDIO_FORMATS:
        raise ApiError(400, f"response_format {body.response_format!r} is not supported; use one of "
                       f"{sorted(AUDIO_FORMATS)}", type="invalid_request_error", param="response_format")
    tool = pick_tool(state, "/v1/audio/speech", body.model)
    params = speech_params(state, tool, body.voice, body.speed)
    validate_params(state, tool, params, param_of={"voice": "voice", "rate": "speed", "speaking_rate": "speed"})
    # 2. Synthesize, then convert
    results, run_id = await call_tool(state, path="/v1/audio/speech", tool=tool,
                                      calls=[Call({"text": body.input}, params)], outputs=["audio"])
    ref = results[0]["audio"]
    audio: Audio = await state.store.aload(ref)
    data, mime = await asyncio.to_thread(export_audio, audio, fmt)
    return Response(data, media_type=mime, headers={"X-Run-Id": run_id, "X-Artifact-Id": ref.id})


async def _transcribe(request: Request, state: ServerState, *, task: str) -> Response:
    path = "/v1/audio/transcriptions"
    # 1. Check inputs
    form = await multipart_form(request, max_files=1)
    file = form.get("file")
    if file is None or isinstance(file, str):
        raise ApiError(400, "an audio file is required (field 'file')", type="invalid_request_error", param="file")
    fmt = str(form.get("response_format") or "json")
    if fmt not in TRANSCRIPT_FORMATS:
        raise ApiError(400, f"response_format {fmt[:40]!r} is not supported; use one of {list(TRANSCRIPT_FORMATS)}",
                       type="invalid_request_error", param="response_format")
    model = form.get("model")
    tool = pick_tool(state, path, model if isinstance(model, str) else None)
    fields = state.registry.get(tool).spec.params.model_fields
    params: dict[str, Any] = {}
    language = form.get("language")
    if isinstance(language, str) and language.strip() and "language" in fields:
        params["language"] = language.strip()
    if task == "translate":
        if "task" not in fields:
            raise ApiError(400, f"{tool} cannot translate", type="invalid_request_error", param="model")
        params["task"] = "translate"
    validate_params(state, tool, params, param_of={"language": "language"})
    audio_ref = await read_upload(state, file, Modality.AUDIO, param="file")
    # 2. Transcribe
    outputs = ["text", "segments"] if any(p.name == "segments" for p in state.registry.get(tool).spec.outputs) \
        else ["text"]
    results, run_id = await call_tool(state, path=path, tool=tool, calls=[Call({"audio": audio_ref}, params)],
                                      outputs=outputs)
    text = str(await state.store.aload(results[0]["text"]))
    timing: dict[str, Any] = await state.store.aload(results[0]["segments"]) if "segments" in results[0] else {}
    duration = float(timing.get("duration") or audio_ref.meta.duration or 0.0)
    segments = list(timing.get("segments") or [])
    headers = {"X-Run-Id": run_id}
    # 3. Answer in the asked format
    if fmt == "text":
        return PlainTextResponse(text, headers=headers)
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(subtitles(segments, fmt, text=text, duration=duration),
                                 media_type="text/vtt" if fmt == "vtt" else "application/x-subrip", headers=headers)
    if fmt == "verbose_json":
        return JSONResponse({
            "task": "translate" if task == "translate" else "transcribe", "language": timing.get("language"),
            "duration": duration, "text": text,
            "segments": [{"id": i, "start": s.get("start"), "end": s.get("end"), "text": s.get("text", "")}
                         for i, s in enumerate(segments)],
        }, headers=headers)
    return JSONResponse({"text": text}, headers=headers)


@router.post("/transcriptions", summary="Transcribe an audio file (OpenAI-compatible, multipart)")
async def transcriptions(request: Request, state: ServerState = Depends(get_state)) -> Response:
    """Fields: ``file``, optional ``model``, ``language``, ``response_format`` (json, text, srt,
    vtt, verbose_json). ``prompt`` and ``temperature`` are accepted and ignored."""
    return await _transcribe(request, state, task="transcribe")


@router.post("/translations", summary="Transcribe an audio file into English text (OpenAI-compatible)")
async def translations(request: Request, state: ServerState = Depends(get_state)) -> Response:
    return await _transcribe(request, state, task="translate")

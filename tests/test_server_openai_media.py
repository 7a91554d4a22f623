"""OpenAI's media endpoints, driven by the official ``openai`` client against a real server.

The server runs the tiny profile (random diffusion weights, espeak-ng speech, tiny
whisper, tiny CLIP), so images are noise and transcripts gibberish: the tests check
formats, shapes, determinism and the errors, which is what the endpoints own.
"""

from __future__ import annotations

import base64
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from server_proc import ServerProcess

from orchestrator.artifacts import decode
from tools._media import estimate_f0

pytestmark = pytest.mark.slow

UPLOAD_LIMIT = 400_000


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    with ServerProcess(redis_url=redis_url, env={"ORCHESTRATOR_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url("/v1"), api_key="not-needed", max_retries=0, timeout=300)


def _png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _espeak_wav(tmp_path: Path, text: str) -> bytes:
    out = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-w", str(out), text], check=True, capture_output=True)
    return out.read_bytes()


def test_models_list_media_tools(client: openai.OpenAI) -> None:
    by_id = {m.id: m.model_extra or {} for m in client.models.list()}
    assert "/v1/images/generations" in by_id["image.generate"]["endpoints"]
    assert "/v1/audio/speech" in by_id["speech.espeak"]["endpoints"]
    assert "/v1/audio/transcriptions" in by_id["speech.transcribe"]["endpoints"]
    assert "/v1/embeddings" in by_id["text.embed"]["endpoints"]
    assert "orchestrator" in by_id  # the chat models are still there


def test_images_generate_b64_and_url(client: openai.OpenAI, server: ServerProcess) -> None:
    raw = client.images.with_raw_response.generate(prompt="a lighthouse at dusk", n=2, size="64x48",
                                                   response_format="b64_json", extra_body={"seed": 11})
    result = raw.parse()
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in result.data]
    assert [im.format for im in images] == ["PNG", "PNG"] and all(im.size == (64, 48) for im in images)
    assert images[0].tobytes() != images[1].tobytes()  # two seeds, two images
    run = httpx.get(server.url(f"/v1/runs/{raw.headers['x-run-id']}")).json()
    assert run["status"] == "succeeded" and run["request"]["endpoint"] == "/v1/images/generations"
    # url: a link that downloads the same PNG the seed makes
    again = client.images.generate(prompt="a lighthouse at dusk", size="64x48", extra_body={"seed": 11})
    downloaded = httpx.get(again.data[0].url)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(downloaded.content))), np.asarray(images[0]))


def test_images_edit_multipart(client: openai.OpenAI) -> None:
    result = client.images.edit(image=("photo.png", _png((40, 32), (0, 0, 255)), "image/png"),
                                prompt="make it red", response_format="b64_json", size="48x40")
    edited = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert edited.format == "PNG" and edited.size == (48, 40)


def test_speech_wav_voices_speed_and_formats(client: openai.OpenAI) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    wav = client.audio.speech.create(model="tts-1", voice="nova", input=text, response_format="wav").content
    audio = decode(wav, "audio")
    assert audio.sample_rate == 22050 and 1.0 < audio.duration < 6.0 and np.abs(audio.samples).max() > 0.05
    low = decode(client.audio.speech.create(model="tts-1", voice="onyx", input=text, response_format="wav").content,
                 "audio")
    assert estimate_f0(audio.mono(), 22050) > 1.2 * estimate_f0(low.mono(), 22050)  # nova is a higher voice
    fast = decode(client.audio.speech.create(model="speech.espeak", voice="nova", input=text, speed=2.0,
                                             response_format="wav").content, "audio")
    assert fast.duration < 0.75 * audio.duration
    mp3 = client.audio.speech.create(model="tts-1", voice="nova", input=text)  # OpenAI's default format: mp3
    with av.open(io.BytesIO(mp3.content)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name.startswith("mp3")
        samples = sum(frame.samples for frame in container.decode(stream))
    assert abs(samples / stream.rate - audio.duration) < 0.2
    pcm = client.audio.speech.create(model="tts-1", voice="nova", input=text, response_format="pcm").content
    assert abs(len(pcm) / 2 / 24000 - audio.duration) < 0.05  # 16-bit mono at 24 kHz, no header
    for fmt, codec in (("opus", "opus"), ("flac", "flac")):
        data = client.audio.speech.create(model="tts-1", voice="alloy", input="hello", response_format=fmt).content
        with av.open(io.BytesIO(data)) as container:
            assert container.streams.audio[0].codec_context.name == codec


def test_transcriptions_of_espeak_speech(client: openai.OpenAI, tmp_path: Path) -> None:
    wav = _espeak_wav(tmp_path, "Hello from the dictation test.")
    duration = decode(wav, "audio").duration
    text = client.audio.transcriptions.create(model="whisper-1", file=("said.wav", wav, "audio/wav"))
    assert isinstance(text.text, str)
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("said.wav", wav, "audio/wav"),
                                                 response_format="verbose_json")
    assert verbose.text == text.text and abs(verbose.duration - duration) < 0.1
    srt = client.audio.transcriptions.create(model="whisper-1", file=("said.wav", wav, "audio/wav"),
                                             response_format="srt")
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("said.wav", wav, "audio/wav"),
                                             response_format="vtt")
    plain = client.audio.transcriptions.create(model="whisper-1", file=("said.wav", wav, "audio/wav"),
                                               response_format="text")
    assert vtt.startswith("WEBVTT") and plain.strip() == text.text.strip()
    if text.text.strip():
        assert srt.startswith("1\n00:00:") and " --> " in srt and " --> " in vtt
    # what a browser's recorder uploads: Opus in WebM (a "video" container holding sound only)
    webm = client.audio.transcriptions.create(model="whisper-1", response_format="verbose_json",
                                              file=("dictation.webm", _webm_opus(decode(wav, "audio")), "audio/webm"))
    assert abs(webm.duration - duration) < 0.1


def _webm_opus(audio: Any) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray((audio.mono() * 32767).astype(np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = audio.sample_rate
        pts = 0
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for piece in range(0, chunk.samples, 960):
                part = av.AudioFrame.from_ndarray(chunk.to_ndarray()[:, piece:piece + 960], format="s16", layout="mono")
                part.sample_rate, part.pts = 48000, pts
                pts += part.samples
                out.mux(stream.encode(part))
        out.mux(stream.encode(None))
    return buf.getvalue()


def test_embeddings_shape_and_determinism(client: openai.OpenAI) -> None:
    texts = ["a red square", "a blue circle", "a red square"]
    first = client.embeddings.create(model="text-embedding-3-small", input=texts)  # the client asks for base64
    vectors = np.array([d.embedding for d in first.data])
    assert [d.index for d in first.data] == [0, 1, 2] and vectors.shape[0] == 3 and vectors.shape[1] >= 8
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # the same text gives the same vector (to float rounding: concurrent model calls may use different
    # torch thread counts), another text a different one
    assert np.allclose(vectors[0], vectors[2], atol=1e-6) and not np.allclose(vectors[0], vectors[1], atol=1e-3)
    floats = client.embeddings.create(model="text.embed", input="a blue circle", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[1], atol=1e-6)
    short = client.embeddings.create(model="text.embed", input="a blue circle", dimensions=4)
    assert len(short.data[0].embedding) == 4 and abs(np.linalg.norm(short.data[0].embedding) - 1) < 1e-4
    image = "data:image/png;base64," + base64.b64encode(_png((32, 32), (200, 10, 10))).decode()
    mixed = client.embeddings.create(model="text.embed", input=["a red square", image])
    assert len(mixed.data[1].embedding) == vectors.shape[1]  # one shared space
    assert np.allclose(mixed.data[0].embedding, vectors[0], atol=1e-6)


def test_a_media_tool_as_the_chat_model(client: openai.OpenAI) -> None:
    """A chat UI that lists /v1/models may pick a tool: the message runs that tool once."""
    drawn = client.chat.completions.create(model="image.generate", messages=[{"role": "user", "content": "a kite"}])
    images = [a for a in drawn.model_extra["artifacts"] if a["modality"] == "image"]
    assert len(images) == 1 and images[0]["url"] in drawn.choices[0].message.content
    assert decode(httpx.get(images[0]["url"]).content, "image").size == (64, 64)  # the profile's size
    spoken = client.audio.speech.create(model="speech.espeak", voice="alloy", input="testing", response_format="wav")
    heard = client.chat.completions.create(model="speech.transcribe", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(spoken.content).decode(), "format": "wav"}}]}])
    assert heard.choices[0].message.content.startswith("text:")
    with pytest.raises(openai.UnprocessableEntityError):  # the tool needs audio, the message has none
        client.chat.completions.create(model="speech.transcribe", messages=[{"role": "user", "content": "hi"}])


def _wav_of_size(n: int) -> bytes:
    return b"RIFF" + b"\0" * (n - 4)


@pytest.mark.parametrize("method, path, kwargs, status", [
    ("post", "/v1/images/generations", {"json": {"prompt": "x", "size": "65x64"}}, 400),
    ("post", "/v1/images/generations", {"json": {"prompt": "x", "size": "big"}}, 400),
    ("post", "/v1/images/generations", {"json": {"prompt": "x", "n": 9}}, 400),
    ("post", "/v1/images/generations", {"json": {"prompt": "x", "model": "no-such-model"}}, 404),
    ("post", "/v1/images/generations", {"json": {"prompt": ""}}, 422),
    ("post", "/v1/images/generations", {"json": {"prompt": "x", "response_format": "gif"}}, 422),
    ("post", "/v1/images/edits", {"json": {"prompt": "x"}}, 415),
    ("post", "/v1/images/edits", {"data": {"prompt": "x"}, "files": {"other": ("a.txt", b"hi")}}, 400),
    ("post", "/v1/images/edits", {"data": {"prompt": "x"}, "files": {"image": ("a.png", b"not a png")}}, 422),
    ("post", "/v1/images/edits", {"data": {"prompt": "x"},
                                  "files": {"image": ("a.png", _png((8, 8), (0, 0, 0))), "mask": ("m.png", b"x")}}, 400),
    ("post", "/v1/audio/speech", {"json": {"input": "hi", "response_format": "midi"}}, 400),
    ("post", "/v1/audio/speech", {"json": {"input": "x" * 5000}}, 400),
    ("post", "/v1/audio/speech", {"json": {"input": "  "}}, 400),
    ("post", "/v1/audio/speech", {"json": {"input": "hi", "speed": 9}}, 422),
    ("post", "/v1/audio/speech", {"json": {"input": "hi", "voice": "bad voice!"}}, 400),
    ("post", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", b"definitely not audio")}}, 422),
    ("post", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", _wav_of_size(2 * UPLOAD_LIMIT))}}, 413),
    ("post", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"response_format": "doc"}},
     400),
    ("post", "/v1/embeddings", {"json": {"input": [[1, 2, 3]]}}, 400),
    ("post", "/v1/embeddings", {"json": {"input": []}}, 400),
    ("post", "/v1/embeddings", {"json": {"input": ["ok", ""]}}, 400),
    ("post", "/v1/embeddings", {"json": {"input": ["x"] * 65}}, 400),
    ("post", "/v1/embeddings", {"json": {"input": "x", "dimensions": 100000}}, 400),
    ("post", "/v1/embeddings", {"json": {"input": "x", "model": "gpt-4o"}}, 404),
])
def test_bad_media_requests(server: ServerProcess, method: str, path: str, kwargs: dict[str, Any], status: int) -> None:
    response = httpx.request(method, server.url(path), timeout=120, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["code"] == status

"""The OpenAI-compatible endpoint, driven by the official ``openai`` client.

The server's agent talks to a scripted LLM behind a real OpenAI-compatible HTTP
server (tests/llm_server.py), so planning, answering and signal-span chat run the
real client and the real tools (espeak speech, media graphs).
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from llm_server import Reply, ScriptedLLMServer
from PIL import Image
from server_proc import ServerProcess

from orchestrator.artifacts import Audio, decode, encode

_REF = re.compile(r"\[(\w+): (sha256:[0-9a-f]{64})\]")


def _script(body: dict[str, Any]) -> Reply:
    """Answer by stage, recognised from the system prompt."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    last = body["messages"][-1]["content"]
    last = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
    if system.startswith("You are the task planner"):
        return Reply('[{"task": "text-to-speech", "id": 0, "dep": [-1], "args": {"text": "hello from the plan"}}]')
    if system.startswith("You are a multimodal assistant. Tools have just run"):
        refs = " ".join(m.group(0) for m in _REF.finditer(last))
        return Reply(f"Here is your speech: {refs}", chunk_chars=6)
    if system.startswith("You are a multimodal chat assistant"):
        return Reply("Sure! <speech>hello from chat</speech> That was me talking.", chunk_chars=5)
    return Reply("ok")


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer([_script], repeat_last=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(redis_url: str, llm: ScriptedLLMServer) -> Iterator[ServerProcess]:
    env = {"ORCHESTRATOR_LLM": f"openai:scripted@{llm.base_url}", "ORCHESTRATOR_LLM_API_KEY": "unused",
           "ORCHESTRATOR_ALLOW_PRIVATE_URLS": "1"}
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url("/v1"), api_key="not-needed", max_retries=0, timeout=60)


def _wav(seconds: float = 0.6, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode(Audio((0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate))[0]


def _png_data_url(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _download(url: str, modality: str) -> Any:
    r = httpx.get(url)
    assert r.status_code == 200
    return decode(r.content, modality)


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"orchestrator", "orchestrator-chat", "graph:clean-and-visualize"} <= set(ids)
    assert client.models.retrieve("orchestrator").id == "orchestrator"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_plan_mode_non_stream(client: openai.OpenAI, server: ServerProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="orchestrator", messages=[{"role": "user", "content": "Please say hello out loud"}])
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop" and completion.object == "chat.completion"
    artifacts = completion.model_extra["artifacts"]
    audio = [a for a in artifacts if a["modality"] == "audio"]
    assert len(audio) == 1
    assert f"[audio]({audio[0]['url']})" in text or audio[0]["url"] in text  # the ref became a link
    assert "sha256:" not in text.replace(audio[0]["url"], "")
    speech = _download(audio[0]["url"], "audio")
    assert speech.sample_rate == 22050 and speech.duration > 0.3 and np.abs(speech.samples).max() > 0.05
    assert completion.choices[0].message.model_extra["artifacts"] == artifacts
    run = httpx.get(server.url(f"/v1/runs/{raw.headers['x-run-id']}")).json()
    assert run["kind"] == "chat" and run["status"] == "succeeded"
    assert run["plan"]["tasks"][0]["task"] == "text-to-speech"
    # streamed: the answer arrives in pieces, refs split across pieces still become the same link
    chunks = list(client.chat.completions.create(
        model="orchestrator", stream=True, messages=[{"role": "user", "content": "Please say hello out loud"}]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert streamed.strip() == text.strip()


def test_chat_mode_stream_with_spans(client: openai.OpenAI, server: ServerProcess) -> None:
    stream = client.chat.completions.create(
        model="orchestrator-chat", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "greet me with your voice"}], extra_headers={"X-Session-Id": "s-stream"})
    pieces: list[str] = []
    finish = None
    last_extra: dict[str, Any] = {}
    usage = None
    count = 0
    for chunk in stream:
        count += 1
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        if chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
            last_extra = chunk.model_extra or {}
    text = "".join(pieces)
    assert finish == "stop" and count > 4 and usage is not None and usage.completion_tokens > 0
    assert "Sure!" in text and "That was me talking." in text and "<speech>" not in text
    artifacts = last_extra["artifacts"]
    assert [a["modality"] for a in artifacts] == ["audio"]
    assert artifacts[0]["url"] in text
    assert _download(artifacts[0]["url"], "audio").duration > 0.3
    events = httpx.get(server.url(f"/v1/runs/{last_extra['run_id']}/events"),
                       headers={"Accept": "application/json"}).json()["events"]
    kinds = [e["type"] for e in events]
    assert "span_dispatched" in kinds and "span_finished" in kinds and kinds[-1] == "run_finished"
    # the same session remembers the exchange
    again = client.chat.completions.create(model="orchestrator-chat", extra_headers={"X-Session-Id": "s-stream"},
                                           messages=[{"role": "user", "content": "once more"}])
    assert again.model_extra["artifacts"][0]["modality"] == "audio"


def test_graph_model_with_input_audio(client: openai.OpenAI) -> None:
    wav = _wav(0.6)
    completion = client.chat.completions.create(model="graph:clean-and-visualize", messages=[{"role": "user", "content": [
        {"type": "text", "text": "add reverb"},
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}},
    ]}])
    artifacts = {a["name"]: a for a in completion.model_extra["artifacts"]}
    assert set(artifacts) == {"audio", "waveform"}
    cleaned = _download(artifacts["audio"]["url"], "audio")
    assert cleaned.sample_rate == 16000 and cleaned.duration >= 0.6 - 1e-3
    waveform = _download(artifacts["waveform"]["url"], "image")
    assert waveform.size[0] > 0 and waveform.size[1] > 0
    text = completion.choices[0].message.content
    assert f"![waveform]({artifacts['waveform']['url']})" in text and artifacts["audio"]["url"] in text


def test_graph_model_with_image_urls_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="graph:narrated-slideshow", stream=True, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _png_data_url((255, 0, 0))}},
        {"type": "image_url", "image_url": {"url": _png_data_url((0, 0, 255))}},
        {"type": "text", "text": "red then blue"},
    ]}])
    chunks = list(stream)
    artifacts = chunks[-1].model_extra["artifacts"]
    assert [a["modality"] for a in artifacts] == ["video"]
    video = _download(artifacts[0]["url"], "video")
    assert video.frames.shape[1:] == (24, 32, 3) and video.audio is not None
    first, last = video.frames[0].mean(axis=(0, 1)), video.frames[-1].mean(axis=(0, 1))
    assert first[0] > first[2] and last[2] > last[0]  # red first, blue last


@pytest.mark.parametrize("kwargs, error", [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, openai.NotFoundError),
    ({"model": "orchestrator", "messages": [{"role": "system", "content": "only system"}]},
     openai.UnprocessableEntityError),
    ({"model": "orchestrator", "messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
     openai.UnprocessableEntityError),
    ({"model": "graph:clean-and-visualize", "messages": [{"role": "user", "content": "no audio here"}]},
     openai.UnprocessableEntityError),
    ({"model": "orchestrator", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]}]},
     openai.UnprocessableEntityError),
])
def test_bad_chat_requests(client: openai.OpenAI, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        client.chat.completions.create(**kwargs)


def test_http_url_inputs_are_fetched_by_the_run(server: ServerProcess, client: openai.OpenAI) -> None:
    """URLs go through the downloader when the run starts (private addresses allowed for this server)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    png = base64.b64decode(_png_data_url((0, 200, 0)).split(",", 1)[1])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/green.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            else:
                self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        wf = {"name": "gray", "inputs": [{"name": "photo", "modality": "image"}],
              "nodes": [{"id": "g", "tool": "image.grayscale", "inputs": {"image": "photo"}}],
              "outputs": [{"name": "image", "source": "g.image"}]}
        with server.client() as http:
            run = http.post("/v1/runs", json={"workflow": wf, "inputs": {"photo": {"url": f"{base}/green.png"}}}).json()
            missing = http.post("/v1/runs", json={"workflow": wf, "inputs": {"photo": {"url": f"{base}/nope.png"}}}).json()
            for _ in range(200):
                done = http.get(f"/v1/runs/{run['id']}").json()
                failed = http.get(f"/v1/runs/{missing['id']}").json()
                if done["status"] not in ("queued", "running") and failed["status"] not in ("queued", "running"):
                    break
                time.sleep(0.05)
        assert done["status"] == "succeeded", done
        assert done["inputs"]["photo"]["modality"] == "image" and done["inputs"]["photo"]["meta"]["width"] == 32
        gray = _download(done["outputs"]["image"]["url"], "image")
        assert gray.size == (32, 24)
        assert failed["status"] == "failed" and "404" in failed["error"]["message"]
        completion = client.chat.completions.create(model="graph:narrated-slideshow", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"{base}/green.png"}},
            {"type": "image_url", "image_url": {"url": f"{base}/green.png"}},
            {"type": "text", "text": "green twice"}]}])
        video = _download(completion.model_extra["artifacts"][0]["url"], "video")
        assert video.frames[0].mean(axis=(0, 1))[1] > 150
    finally:
        httpd.shutdown()

"""Chat completions take the client's whole ``messages`` history; spoken answers; UI background prompts.

A scripted LLM behind a real HTTP server plans: it grays the session image the planner
is told about ("the previous image" is ``image-N``), so the test sees which image the
server resolved from the history, by looking at the pixels of the result.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from llm_server import Reply, ScriptedLLMServer
from PIL import Image
from server_proc import ServerProcess

from orchestrator.artifacts import RedisArtifactStore, decode

pytestmark = pytest.mark.slow

_REF = re.compile(r"\[(\w+): (sha256:[0-9a-f]{64})\]")
_HINT = re.compile(r'\b(image-\d+)\b')  # the agent names the session's image in the request


def _text(content: Any) -> str:
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def _script(body: dict[str, Any]) -> Reply:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    last = _text(body["messages"][-1]["content"])
    if system.startswith("You are the task planner"):
        hint = _HINT.search(last)
        if "black and white" in last and hint:
            return Reply(f'[{{"task": "image-grayscale", "id": 0, "dep": [-1], "args": {{"image": "{hint.group(1)}"}}}}]')
        if "say" in last:
            return Reply('[{"task": "text-to-speech", "id": 0, "dep": [-1], "args": {"text": "spoken by the plan"}}]')
        return Reply("[]")
    if system.startswith("You are a multimodal assistant. Tools have just run"):
        refs = " ".join(m.group(0) for m in _REF.finditer(last))
        return Reply(f"Done. {refs}".strip())
    if system.startswith("You are a multimodal chat assistant"):  # chat mode: say what history it was given
        said = [m["role"] + ":" + _text(m["content"]).split("\n")[0] for m in body["messages"][1:]]
        return Reply("I saw " + " | ".join(said))
    return Reply("ok")


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer([_script], repeat_last=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(redis_url: str, llm: ScriptedLLMServer) -> Iterator[ServerProcess]:
    env = {"ORCHESTRATOR_LLM": f"openai:scripted@{llm.base_url}", "ORCHESTRATOR_LLM_API_KEY": "unused"}
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url("/v1"), api_key="none", max_retries=0, timeout=120)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _upload(server: ServerProcess, data: bytes) -> dict[str, Any]:
    r = httpx.post(server.url("/v1/artifacts"), content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 201
    return r.json()


def _gray_result(completion: Any) -> np.ndarray:
    images = [a for a in completion.model_extra["artifacts"] if a["modality"] == "image"]
    assert len(images) == 1, (completion.choices[0].message.content, completion.model_extra)
    return np.asarray(decode(httpx.get(images[0]["url"]).content, "image"))


def _sessions(server: ServerProcess, redis_url: str) -> list[str]:
    store = RedisArtifactStore(redis_url, prefix=server.prefix)
    try:
        return store.list_records("agent.chat_sessions")
    finally:
        store.close()


def test_three_turn_history_resolves_the_first_image(client: openai.OpenAI, server: ServerProcess,
                                                     redis_url: str) -> None:
    red = _upload(server, _png((200, 0, 0)))
    blue = _upload(server, _png((0, 0, 200), (8, 8)))
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "draw a red card"},
        {"role": "assistant", "content": f"Here it is:\n\n![image]({red['url']})"},
        {"role": "user", "content": "what colour is the sky?"},
        {"role": "assistant", "content": "Blue, on a clear day."},
        {"role": "user", "content": "make the previous image black and white"},
    ]
    completion = client.chat.completions.create(model="orchestrator", messages=messages)
    gray = _gray_result(completion)
    assert gray.shape[:2] == (12, 16)  # the red card's size, not the blue one's
    assert np.ptp(gray.reshape(-1, gray.shape[-1] if gray.ndim == 3 else 1), axis=0).max() == 0
    assert 40 < gray.mean() < 80  # luminance of (200, 0, 0)
    # a later answer link wins over an earlier one: the last image is the previous image
    messages[4] = {"role": "assistant", "content": f"Blue: {blue['url']}"}
    assert _gray_result(client.chat.completions.create(model="orchestrator", messages=messages)).shape[:2] == (8, 8)
    assert not [s for s in _sessions(server, redis_url) if s.startswith("history-")]  # nothing left behind


def test_history_with_an_uploaded_image_part(client: openai.OpenAI) -> None:
    photo = "data:image/png;base64," + base64.b64encode(_png((0, 180, 0), (24, 20))).decode()
    completion = client.chat.completions.create(model="orchestrator", stream=False, messages=[
        {"role": "user", "content": [{"type": "text", "text": "here is my photo"},
                                     {"type": "image_url", "image_url": {"url": photo}}]},
        {"role": "assistant", "content": "Nice photo."},
        {"role": "user", "content": "make the previous image black and white please"},
    ])
    gray = _gray_result(completion)
    assert gray.shape[:2] == (20, 24) and 90 < gray.mean() < 120  # luminance of (0, 180, 0)


def test_chat_mode_gets_the_history_too(client: openai.OpenAI, server: ServerProcess, redis_url: str) -> None:
    red = _upload(server, _png((200, 0, 0)))
    reply = client.chat.completions.create(model="orchestrator-chat", messages=[
        {"role": "user", "content": "draw a red card"},
        {"role": "assistant", "content": f"Here: ![image]({red['url']})"},
        {"role": "user", "content": "thanks, what next?"},
    ]).choices[0].message.content
    assert reply.startswith("I saw user:draw a red card | assistant:Here: | user:thanks, what next?")
    assert not [s for s in _sessions(server, redis_url) if s.startswith("history-")]


def test_modalities_audio_gives_message_audio(client: openai.OpenAI) -> None:
    # the run made speech: that clip is the answer's audio
    spoken = client.chat.completions.create(model="orchestrator", modalities=["text", "audio"],
                                            audio={"voice": "alloy", "format": "wav"},
                                            messages=[{"role": "user", "content": "say something"}])
    audio = spoken.choices[0].message.audio
    made = [a for a in spoken.model_extra["artifacts"] if a["modality"] == "audio"]
    assert audio is not None and audio.model_extra["artifact_id"] == made[0]["id"]
    assert decode(base64.b64decode(audio.data), "audio").duration > 0.3
    # no speech made: the answer text is read aloud
    plain = client.chat.completions.create(model="orchestrator", modalities=["text", "audio"],
                                           audio={"voice": "nova", "format": "wav"},
                                           messages=[{"role": "user", "content": "hello there"}])
    message = plain.choices[0].message
    assert message.audio.transcript == message.content.strip() and message.content.strip()
    assert decode(base64.b64decode(message.audio.data), "audio").duration > 0.2
    chunks = list(client.chat.completions.create(model="orchestrator", stream=True, modalities=["text", "audio"],
                                                 audio={"voice": "nova", "format": "mp3"},
                                                 messages=[{"role": "user", "content": "hello again"}]))
    audio_chunks = [c.choices[0].delta.to_dict()["audio"] for c in chunks
                    if c.choices and "audio" in c.choices[0].delta.to_dict()]
    assert len(audio_chunks) == 1 and base64.b64decode(audio_chunks[0]["data"])[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="orchestrator", modalities=["text", "audio"], audio={"format": "midi"},
                                       messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("prompt, stream, check", [
    ("### Task:\nGenerate a short title for this chat, answer in JSON format { \"title\": \"...\" }\n"
     "<chat_history>\nUSER: paint a windmill at sunrise please\nASSISTANT: ![image](x)\n</chat_history>", False,
     lambda text: text == '{"title": "Paint a windmill at sunrise please"}'),
    ("### Task:\nGenerate 1-3 broad tags for the chat history, as JSON {\"tags\": []}\n<chat_history>\n"
     "USER: paint a windmill\n</chat_history>", True, lambda text: text == '{"tags": ["Images"]}'),
    ("### Task:\nSuggest 3-5 follow-up questions, JSON {\"follow_ups\": []}\n<chat_history>\nUSER: hi\n"
     "</chat_history>", False, lambda text: text == '{"follow_ups": []}'),
    ("### Task:\nDecide whether search queries are needed; JSON {\"queries\": []}", False,
     lambda text: text == '{"queries": []}'),
    ("Please write a concise title for the conversation below, five words or less.\n\nUser: draw me a cat\n",
     False, lambda text: text == "Draw me a cat"),
])
def test_background_prompts_are_answered_without_a_run(client: openai.OpenAI, server: ServerProcess, prompt: str,
                                                       stream: bool, check: Any) -> None:
    before = len(httpx.get(server.url("/v1/runs?limit=500")).json()["runs"])
    if stream:
        chunks = list(client.chat.completions.create(model="orchestrator", stream=True,
                                                     messages=[{"role": "user", "content": prompt}]))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model="orchestrator",
                                              messages=[{"role": "user", "content": prompt}]).choices[0].message.content
    assert check(text), text
    assert len(httpx.get(server.url("/v1/runs?limit=500")).json()["runs"]) == before  # no run started

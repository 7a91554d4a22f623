"""The streaming signal-span parser: rules, and chunking never changes the result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.agent.spans import Span, SpanIssue, SpanOverLimit, SpanParser, TextPiece, parse_spans, render_ref


def text_of(items: list) -> str:
    return "".join(i.text for i in items if isinstance(i, TextPiece))


def spans_of(items: list) -> list[Span]:
    return [i for i in items if isinstance(i, Span)]


def test_span_dispatched_the_moment_it_closes() -> None:
    p = SpanParser()
    assert p.feed("Look: <ima") == [TextPiece("Look: ")]      # a possible tag is held back
    assert p.feed('ge seed=3 duration="2.5">a red') == []
    assert p.in_span
    out = p.feed(" fox</image> and more")
    assert out[0] == Span(index=0, kind="image", content="a red fox", attrs={"seed": "3", "duration": "2.5"},
                          raw='<image seed=3 duration="2.5">a red fox</image>')
    assert out[1] == TextPiece(" and more")                  # text after the span flows on at once


def test_unknown_tags_and_lone_brackets_are_text() -> None:
    msg = "if a < b then <b>bold</b> and <imagine> <br/> <video-ish>"
    assert parse_spans(msg) == [TextPiece(msg)]


def test_nested_stray_unclosed_empty() -> None:
    items = parse_spans("A <image>a <video>cat</video> sat</image> B </audio> C <image></image> D <speech>never")
    assert spans_of(items) == [Span(0, "image", "a cat sat", {}, "<image>a <video>cat</video> sat</image>")]
    assert text_of(items) == "A  B  C  D never"
    kinds = [i.kind for i in items if isinstance(i, SpanIssue)]
    assert kinds == ["nested", "nested", "stray_close", "empty", "unclosed"]


def test_span_limit_and_case() -> None:
    items = parse_spans("<IMAGE>one</IMAGE><music>two</music><video>three</video>", max_spans=2)
    assert [(s.kind, s.index) for s in spans_of(items)] == [("image", 0), ("music", 1)]
    assert items[-1] == SpanOverLimit("video", "three", 2)


def test_too_long_span_is_released_as_text() -> None:
    items = parse_spans("<image>" + "x" * 50 + " tail", max_span_chars=20)
    assert not spans_of(items) and any(isinstance(i, SpanIssue) and i.kind == "too_long" for i in items)
    assert text_of(items).replace(" tail", "") == "x" * len(text_of(items).replace(" tail", ""))


def test_render_ref_forms() -> None:
    assert render_ref("image", "sha256:" + "a" * 64) == "[image: sha256:" + "a" * 64 + "]"
    assert render_ref("audio", error="model missing") == "[audio failed: model missing]"
    assert render_ref("video", error="not generated: limit") == "[video not generated: limit]"


PIECES = st.lists(st.one_of(
    st.text(alphabet="abc <>/=\"' \n", max_size=12),
    st.sampled_from(["<image>", "</image>", "<audio seed=1>", "</audio>", "<music>", "</music>", "<b>", "</b>",
                     "<video x='1 2'>", "</video>", "<speech", ">", "</"]),
), max_size=20)


@settings(max_examples=150, deadline=None)
@given(PIECES, st.data())
def test_any_chunking_gives_the_same_items(pieces: list[str], data: st.DataObject) -> None:
    message = "".join(pieces)
    whole = parse_spans(message)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(message)), max_size=8)))
    parser = SpanParser()
    items: list = []
    last = 0
    for c in [*cuts, len(message)]:
        items += parser.feed(message[last:c])
        last = c
    items += parser.close()
    merged = parse_spans("")  # empty
    assert merged == []
    assert spans_of(items) == spans_of(whole)
    assert text_of(items) == text_of(whole)
    assert [i for i in items if not isinstance(i, TextPiece)] == [i for i in whole if not isinstance(i, TextPiece)]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="<"), max_size=60))
def test_text_without_tags_passes_through_unchanged(text: str) -> None:
    assert text_of(parse_spans(text)) == text

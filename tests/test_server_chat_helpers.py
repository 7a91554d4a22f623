"""The pure parts behind chat UIs' needs: link signing, reading a client's history, recognising
background prompts, subtitle and audio formats. No server here; the HTTP behaviour is tested
in test_server_openai_media.py, test_server_signed_links.py and test_server_chat_history.py."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.artifacts import Audio, decode
from orchestrator.server._background import answer, recognize
from orchestrator.server._formats import AUDIO_FORMATS, PCM_RATE, export_audio, subtitles
from orchestrator.server._history import parse_messages
from orchestrator.server._signing import BadSignature, UrlSigner, artifact_id_of_path, signer_for
from orchestrator.server.schemas import ChatMessage

AID = "sha256:" + "ab" * 32


# ---------------------------------------------------------------------- signing
def test_signatures_round_trip_and_break_when_anything_changes() -> None:
    signer = UrlSigner(b"k", ttl=100)
    q = signer.query(AID, now=1_000)
    signer.check(AID, q["expires"], q["sig"], now=1_050)
    signer.check(AID.removeprefix("sha256:"), q["expires"], q["sig"], now=1_050)  # bare hex is the same id
    with pytest.raises(BadSignature, match="expired"):
        signer.check(AID, q["expires"], q["sig"], now=1_101)
    for aid, expires, sig in [("sha256:" + "cd" * 32, q["expires"], q["sig"]), (AID, "1101", q["sig"]),
                              (AID, q["expires"], q["sig"].upper()[:-1] + "0"), (AID, "soon", q["sig"]),
                              (AID, None, q["sig"]), (AID, q["expires"], "")]:
        with pytest.raises(BadSignature):
            signer.check(aid, expires, sig, now=1_050)
    with pytest.raises(BadSignature):
        UrlSigner(b"other", ttl=100).check(AID, q["expires"], q["sig"], now=1_050)


@given(st.text(min_size=1, max_size=40))
def test_only_artifact_downloads_are_signed_paths(path: str) -> None:
    assert artifact_id_of_path("/" + path) is None or path.startswith("v1/artifacts/")
    assert artifact_id_of_path(f"/v1/artifacts/{AID}") == AID
    assert artifact_id_of_path(f"/v1/artifacts/{AID}/meta") is None


def test_signer_for_keys() -> None:
    assert signer_for([], None, 60) is None
    a, b = signer_for(["k1", "k2"], None, 60), signer_for(["k2", "k1"], None, 60)
    assert a is not None and b is not None
    q = a.query(AID)
    b.check(AID, q["expires"], q["sig"])  # the same keys, in any order, accept the same links
    with pytest.raises(BadSignature):
        signer_for(["k3"], None, 60).check(AID, q["expires"], q["sig"])  # type: ignore[union-attr]
    assert signer_for([], "explicit", 60) is not None
    assert a.check_request("/v1/runs", b"sig=x") is None
    assert a.check_request(f"/v1/artifacts/{AID}", b"") is None
    assert a.check_request(f"/v1/artifacts/{AID}", f"expires={q['expires']}&sig={q['sig']}".encode()) is True


# ---------------------------------------------------------------------- history
def _m(role: str, content: object) -> ChatMessage:
    return ChatMessage.model_validate({"role": role, "content": content})


def test_history_takes_links_media_and_the_last_user_turn() -> None:
    other = "ef" * 32
    conv = parse_messages([
        _m("system", "be brief"),
        _m("user", [{"type": "text", "text": "my photo"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}]),
        _m("assistant", f"Done: ![image](http://h:1/v1/artifacts/{AID}?expires=9&sig=abc) and [audio](/v1/artifacts/{other})"),
        _m("user", [{"type": "video_url", "video_url": {"url": f"http://h:1/v1/artifacts/{AID}"}},
                    {"type": "text", "text": "now this"}]),
    ], max_media=4)
    assert conv.text == "now this"
    assert [v.artifact_id for v in conv.media] == [AID]  # our own link: taken by id, not fetched
    assert [t.role for t in conv.earlier] == ["user", "assistant"]  # no system message
    user, assistant = conv.earlier
    assert [v.url[:10] for v in user.media] == ["data:image"]  # foreign http(s) URLs of old turns: not refetched
    assert assistant.artifact_ids == [AID, f"sha256:{other}"]
    assert assistant.text == "Done:  and"


def test_history_errors() -> None:
    with pytest.raises(Exception, match="at least one user message"):
        parse_messages([_m("assistant", "hi")], max_media=4)
    with pytest.raises(Exception, match="limit is 1"):
        parse_messages([_m("user", [{"type": "image_url", "image_url": {"url": "data:,a"}}] * 2)], max_media=1)
    with pytest.raises(Exception, match="not supported"):
        parse_messages([_m("user", [{"type": "file", "file": {}}])], max_media=4)


# ---------------------------------------------------------------------- background prompts
@pytest.mark.parametrize("text", [
    "draw a title card for my chat app",
    "make the previous image darker",
    "write a story about a conversation between two robots",
    "Task: paint a lighthouse",
    "what are good tags for a photo of a cat?",
])
def test_real_requests_are_not_background(text: str) -> None:
    assert recognize([_m("user", text)]) is None


def test_background_kinds() -> None:
    title = recognize([_m("user", "hello"), _m("assistant", "hi"),
                       _m("user", "Generate a concise title for the conversation above, no punctuation.")])
    assert title is not None and title.kind == "title" and answer(title) == "Hello"
    lobe = recognize([_m("system", "Summarize the user's conversation into a title of at most ten words."),
                      _m("user", "user: play some calm piano music\nassistant: done")])
    assert lobe is not None and answer(lobe) == "Play some calm piano music"
    tags = recognize([_m("user", "### Task:\nGenerate tags, JSON {\"tags\": []}\nUSER: film a video of waves")])
    assert tags is not None and answer(tags) == '{"tags": ["Video"]}'
    emoji = recognize([_m("user", "### Task:\nReply with one emoji for the mood")])
    assert emoji is not None and emoji.kind == "emoji"


# ---------------------------------------------------------------------- formats
def test_subtitles() -> None:
    segments = [{"start": 0.0, "end": 1.25, "text": " hello "}, {"start": 61.5, "end": 3723.004, "text": "world"}]
    srt = subtitles(segments, "srt", text="hello world", duration=4000)
    assert srt == "1\n00:00:00,000 --> 00:00:01,250\nhello\n\n2\n00:01:01,500 --> 01:02:03,004\nworld\n\n"
    vtt = subtitles([], "vtt", text="only text", duration=2.0)
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nonly text\n\n"


def test_audio_export_formats() -> None:
    t = np.arange(16000) / 16000
    audio = Audio((0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    assert decode(export_audio(audio, "wav")[0], "audio").duration == pytest.approx(1.0, abs=1e-3)
    pcm, mime = export_audio(audio, "pcm")
    assert mime == "audio/pcm" and len(pcm) == 2 * PCM_RATE
    for fmt in ("mp3", "opus", "flac", "aac"):
        data, mime = export_audio(audio, fmt)
        assert mime == AUDIO_FORMATS[fmt][0]
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
            assert abs(samples.shape[0] / stream.rate - 1.0) < 0.1, fmt
            assert np.abs(samples.astype(np.float32)).max() > 0, fmt

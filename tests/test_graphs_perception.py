"""Prebuilt graphs that chain encoders into decoders, run end to end on the tiny profile."""

from __future__ import annotations

import numpy as np
import pytest
from media_factory import gradient_image, speech

from graphs import get_graph, list_graphs
from orchestrator.artifacts import Audio
from orchestrator.errors import ArtifactDecodeError, WorkflowInputError
from orchestrator.runtime import build_zoo, get_profile

PERCEPTION = {"photo-to-speech", "speech-to-image", "describe-and-detect"}


@pytest.fixture(scope="module", autouse=True)
def zoo() -> None:
    build_zoo(["tiny-blip-caption", "tiny-whisper", "tiny-detr", "tiny-sd"])


@pytest.fixture(scope="module")
def tiny():
    return get_profile("tiny")


def test_perception_graphs_are_listed_and_compile() -> None:
    infos = {g.name: g for g in list_graphs()}
    assert PERCEPTION <= set(infos)
    for name in PERCEPTION:
        infos[name].build().compile()
    described = infos["speech-to-image"].describe()
    assert [i["name"] for i in described["inputs"]] == ["speech"]
    assert described["outputs"] == ["transcript", "segments", "image"]


def test_photo_to_speech_speaks_the_caption(store, tiny) -> None:
    photo = gradient_image(64, 48)
    result = get_graph("photo-to-speech").compile().run({"photo": photo}, store=store, profile=tiny)
    assert result.ok, result.errors
    caption = result.load("caption")
    assert isinstance(caption, str) and caption.strip()
    store.cache.clear()
    spoken = result.load("speech")
    assert isinstance(spoken, Audio) and spoken.duration > 0.2 and spoken.sample_rate > 0
    assert np.abs(spoken.samples).max() > 0.01
    ref = result.outputs["caption"]
    assert ref.meta.provenance is not None and ref.meta.provenance.tool == "image.caption"


def test_speech_to_image_draws_the_transcript(local_store, tiny) -> None:
    voice = speech("A red lighthouse on a rock.")
    result = get_graph("speech-to-image").compile().run({"speech": voice}, store=local_store, profile=tiny)
    assert result.ok, result.errors
    transcript = result.load("transcript")
    segments = result.load("segments")
    assert isinstance(transcript, str) and segments["windows"] == 1
    assert segments["duration"] == pytest.approx(voice.duration, abs=0.01)
    image = result.load("image")
    width = tiny.resolve("text-to-image").option("width")
    assert image.size == (width, tiny.resolve("text-to-image").option("height"))


def test_describe_and_detect_runs_both_branches(local_store, tiny) -> None:
    photo = gradient_image(80, 60)
    result = get_graph("describe-and-detect").compile().run({"photo": photo}, store=local_store, profile=tiny)
    assert result.ok, result.errors
    assert result.load("annotated").size == photo.size
    assert isinstance(result.load("objects"), list)
    assert isinstance(result.load("speech"), Audio)


def test_corrupt_image_bytes_are_refused_before_any_node_runs(store, tiny) -> None:
    bad = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20  # a PNG signature, then junk
    with pytest.raises(ArtifactDecodeError):
        store.put(bad, modality="image")
    events: list = []
    with pytest.raises(WorkflowInputError, match="photo") as err:
        get_graph("photo-to-speech").compile().run({"photo": bad}, store=store, profile=tiny, on_event=events.append)
    assert "corrupt" in str(err.value)
    assert not [e for e in events if e.type == "node_started"]

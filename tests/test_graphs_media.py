"""Prebuilt graphs of built-in media tools, run end to end on real media."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from graphs import get_graph, list_graphs
from orchestrator import Audio, Video
from orchestrator.errors import WorkflowError


def test_catalog_lists_documented_graphs():
    names = {g.name for g in list_graphs()}
    assert {"narrated-slideshow", "clean-and-visualize", "video-soundtrack"} <= names
    info = next(g for g in list_graphs() if g.name == "clean-and-visualize").describe()
    assert [i["name"] for i in info["inputs"]] == ["audio", "instruction"]
    assert info["outputs"] == ["audio", "waveform"]
    with pytest.raises(WorkflowError, match="unknown prebuilt graph 'nope'"):
        get_graph("nope")


def test_every_prebuilt_graph_compiles():
    for info in list_graphs():
        info.build().compile()


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng is installed by scripts/setup.sh")
def test_narrated_slideshow(store):
    red = Image.new("RGB", (64, 48), (200, 30, 30))
    blue = Image.new("RGB", (64, 48), (30, 30, 200))
    result = get_graph("narrated-slideshow").compile().run(
        {"first": red, "second": blue, "script": "Hello from the lighthouse."}, store=store, cache=False
    )
    assert result.ok, result.errors
    video = result.load("video")
    assert isinstance(video, Video) and video.audio is not None
    assert video.duration == pytest.approx(3.0, abs=0.3)
    assert np.abs(video.audio.samples).max() > 0.01  # speech, not silence
    first, last = video.frames[0].astype(int), video.frames[-1].astype(int)
    assert first[..., 0].mean() > first[..., 2].mean() and last[..., 2].mean() > last[..., 0].mean()


def test_clean_and_visualize(store):
    t = np.arange(16000 * 2) / 16000
    rng = np.random.default_rng(0)
    audio = Audio((0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32), 16000)
    result = get_graph("clean-and-visualize").compile().run({"audio": audio, "instruction": "add reverb"}, store=store)
    assert result.ok, result.errors
    out = result.load("audio")
    assert out.sample_rate == 16000 and out.duration >= 1.9
    image = result.load("waveform")
    assert image.width > 100 and image.height > 50


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng is installed by scripts/setup.sh")
def test_illustrated_story_on_the_tiny_zoo(store):
    """Several decoders together: image + music + narration, assembled into a narrated video."""
    result = get_graph("illustrated-story").compile().run(
        {"scene": "a lighthouse at dusk, calm", "script": "The keeper lights the lamp."},
        store=store, seed=3, profile="tiny",
    )
    assert result.ok, result.errors
    image, music, narration, video = (result.load(n) for n in ("image", "music", "narration", "video"))
    assert image.width % 8 == 0 and image.height % 8 == 0
    assert music.duration == pytest.approx(4.0, abs=0.5)
    assert narration.duration > 0.5 and np.abs(narration.mono()).max() > 0.01
    assert video.audio is not None and video.frames.shape[1:3] == (image.height + image.height % 2, image.width + image.width % 2)
    assert video.duration >= music.duration - 0.3
    # provenance names the resolved tiny model and the seed
    prov = store.stat(result.outputs["image"]).meta.provenance
    assert prov.tool == "image.generate" and prov.seed is not None and "tiny" in str(prov.model)


def test_cache_key_follows_the_profiles_model_choice(store, monkeypatch):
    """A model-backed node cached under one profile choice is not reused when the profile points elsewhere."""
    from orchestrator.runtime import get_profile
    from orchestrator.workflow import Workflow

    wf = Workflow("img").add_input("t", "text").add_node("g", "image.generate", {"steps": 1}, inputs={"text": "t"}).add_output("i", "g.image")
    compiled = wf.compile()
    tiny = get_profile("tiny")
    first = compiled.run({"t": "a boat"}, store=store, seed=1, profile=tiny)
    assert compiled.run({"t": "a boat"}, store=store, seed=1, profile=tiny).nodes["g"].cached
    other = tiny.with_overrides({"text-to-image": "/no/such/checkpoint"})
    changed = compiled.run({"t": "a boat"}, store=store, seed=1, profile=other)
    assert not changed.nodes["g"].cached
    assert changed.status == "failed" and "/no/such/checkpoint" in changed.errors["g"]
    assert first.ok

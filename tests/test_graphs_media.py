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

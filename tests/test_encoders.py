"""Every encoder end to end on the tiny zoo.

The weights are random, so outputs are gibberish: the tests check types, shapes and
structure (text is text, embeddings have the model's dimension and are finite,
boxes lie inside the image, timestamps are ordered, long audio is windowed, any
sample rate is accepted) and that bad input fails with a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from media_factory import gradient_image, speech, tone
from PIL import Image, ImageDraw

from orchestrator.artifacts import Audio, Video
from orchestrator.errors import ArtifactDecodeError, ModelNotFound, ParamError, ToolInputError
from orchestrator.registry import default_registry, get_tool
from orchestrator.runtime import ModelManager, build_zoo, get_profile
from orchestrator.tool import ToolContext

ENCODERS = {
    "image.caption": "image-to-text",
    "image.vqa": "visual-question-answering",
    "image.ocr": "image-to-text-ocr",
    "speech.transcribe": "automatic-speech-recognition",
    "image.classify": "zero-shot-image-classification",
    "image.embed": "image-feature-extraction",
    "text.embed": "feature-extraction",
    "audio.classify": "zero-shot-audio-classification",
    "image.detect": "object-detection",
    "video.describe": "video-to-text",
    "image.colorize": "image-colorizer",
    "image.style_transfer": "image-style-transfer",
}
ZOO = ["tiny-blip-caption", "tiny-vilt-vqa", "tiny-trocr", "tiny-whisper", "tiny-clip", "tiny-clap", "tiny-detr",
       "tiny-instruct-pix2pix", "tiny-resnet", "tiny-sd"]


@pytest.fixture(scope="session")
def manager() -> ModelManager:
    """One manager for the session, so each tiny checkpoint loads once."""
    from tools._encoding import register_backends

    register_backends()
    build_zoo(ZOO)
    return ModelManager(device="cpu")


@pytest.fixture(scope="session")
def profile():
    return get_profile("tiny")


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))


def run(tool: str, inputs: dict[str, Any], params: dict[str, Any] | None = None, *, manager: ModelManager, profile: Any,
        seed: int | None = None, progress: list | None = None) -> dict[str, Any]:
    ctx = ToolContext(seed=seed, models=manager, profile=profile,
                      on_progress=(lambda s, t, _m: progress.append((s, t))) if progress is not None else None)
    return get_tool(tool).call(inputs, params or {}, ctx)


def test_encoders_are_registered_with_a_model_param_and_a_profile_entry(profile) -> None:
    for name, task in ENCODERS.items():
        tool = default_registry.get(name)
        assert tool.spec.task == task
        assert "model" in tool.spec.params.model_fields
    for task in ("image-to-text", "visual-question-answering", "image-to-text-ocr", "automatic-speech-recognition",
                 "zero-shot-image-classification", "zero-shot-audio-classification", "object-detection",
                 "image-colorizer", "image-style-transfer"):
        assert profile.resolve(task).model.startswith("zoo:")
        assert get_profile("default").resolve(task).model.count("/") == 1  # a hub id


# ------------------------------------------------------------------ images


def test_caption_is_text_and_batching_gives_the_same_captions(manager, profile, photo) -> None:
    from tools.image_captioning import caption_images

    out = run("image.caption", {"image": photo}, manager=manager, profile=profile)
    assert isinstance(out["text"], str) and out["text"]
    images = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient_image(40, 30)]
    ctx = ToolContext(models=manager, profile=profile)
    batched = caption_images(images, {"batch_size": 8}, ctx=ctx)
    single = caption_images(images, {"batch_size": 1}, ctx=ctx)
    assert batched.stats["forward_passes"] == 1 and single.stats["forward_passes"] == 3
    assert batched.texts == single.texts and batched.texts[0] == out["text"]
    prompted = run("image.caption", {"image": photo}, {"prompt": "a photo of"}, manager=manager, profile=profile)
    assert prompted["text"].startswith("a photo of")


def test_vqa_ranks_answers_from_the_answer_vocabulary(manager, profile, photo) -> None:
    out = run("image.vqa", {"image": photo, "question": "what color is the car?"}, {"top_k": 4},
              manager=manager, profile=profile)
    answers = out["answers"]
    vocabulary = set(manager.load(profile.resolve("visual-question-answering"), "transformers.vqa").model.config.id2label.values())
    assert len(answers) == 4 and {a["answer"] for a in answers} <= vocabulary
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert out["text"] == answers[0]["answer"]
    with pytest.raises(ToolInputError, match="question"):
        run("image.vqa", {"image": photo, "question": "   "}, manager=manager, profile=profile)


def _page() -> Image.Image:
    page = Image.new("RGB", (160, 90), "white")
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(["Invoice 2024", "Total 42.00", "Paid"]):
        draw.text((6, 8 + 28 * i), line, fill="black")
    return page


def test_ocr_finds_each_text_line_and_reads_them(manager, profile) -> None:
    page = _page()
    out = run("image.ocr", {"image": page}, manager=manager, profile=profile)
    lines = out["lines"]
    assert len(lines) == 3 and isinstance(out["text"], str)
    tops = [line["box"]["ymin"] for line in lines]
    assert tops == sorted(tops)
    for line in lines:
        b = line["box"]
        assert 0 <= b["xmin"] < b["xmax"] <= page.width and 0 <= b["ymin"] < b["ymax"] <= page.height
        assert isinstance(line["text"], str)
    whole = run("image.ocr", {"image": page}, {"segment_lines": False}, manager=manager, profile=profile)
    assert [line["box"] for line in whole["lines"]] == [{"xmin": 0, "ymin": 0, "xmax": 160, "ymax": 90}]


def test_zero_shot_image_classification_scores_every_label(manager, profile, photo) -> None:
    labels = ["a cat", "a dog", "a lighthouse"]
    out = run("image.classify", {"image": photo}, {"labels": labels}, manager=manager, profile=profile)
    assert sorted(s["label"] for s in out["scores"]) == sorted(labels)
    assert sum(s["score"] for s in out["scores"]) == pytest.approx(1.0, abs=1e-4)
    assert out["label"] == out["scores"][0]["label"]
    with pytest.raises(ToolInputError, match="labels"):
        run("image.classify", {"image": photo}, {"labels": []}, manager=manager, profile=profile)
    with pytest.raises(ToolInputError, match="hypothesis_template"):
        run("image.classify", {"image": photo}, {"labels": ["x"], "hypothesis_template": "no slot"},
            manager=manager, profile=profile)


def test_image_and_text_embeddings_share_one_space(manager, profile, photo, local_store) -> None:
    dim = manager.load(profile.resolve("zero-shot-image-classification"), "transformers.dual-encoder").model.config.projection_dim
    image_vec = run("image.embed", {"image": photo}, manager=manager, profile=profile)["embedding"]
    text_vec = run("text.embed", {"text": "a photo of a cat"}, manager=manager, profile=profile)["embedding"]
    for vec in (image_vec, text_vec):
        assert vec.shape == (dim,) and vec.dtype == np.float32 and np.isfinite(vec).all()
        assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    ref = local_store.put(image_vec)
    assert ref.modality.value == "embedding" and ref.meta.shape == [dim]
    local_store.cache.discard(ref.id)
    np.testing.assert_array_equal(local_store.load(ref), image_vec)
    raw = run("image.embed", {"image": photo}, {"normalize": False}, manager=manager, profile=profile)["embedding"]
    np.testing.assert_allclose(raw / np.linalg.norm(raw), image_vec, atol=1e-5)


def test_detection_boxes_lie_inside_the_image_and_are_drawn(manager, profile, photo) -> None:
    out = run("image.detect", {"image": photo}, {"threshold": 0.0, "max_objects": 5}, manager=manager, profile=profile)
    objects, drawn = out["objects"], out["image"]
    assert 1 <= len(objects) <= 5
    for obj in objects:
        b = obj["box"]
        assert 0 <= b["xmin"] <= b["xmax"] <= photo.width and 0 <= b["ymin"] <= b["ymax"] <= photo.height
        assert isinstance(obj["label"], str) and 0.0 <= obj["score"] <= 1.0
    assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)
    assert drawn.size == photo.size and drawn.mode == "RGB"
    assert not np.array_equal(np.asarray(drawn), np.asarray(photo))
    none = run("image.detect", {"image": photo}, {"threshold": 1.0}, manager=manager, profile=profile)
    assert none["objects"] == [] and np.array_equal(np.asarray(none["image"]), np.asarray(photo))


def test_colorize_keeps_size_and_brightness_and_follows_the_seed(manager, profile) -> None:
    gray = gradient_image(70, 50).convert("L")
    steps: list = []
    a = run("image.colorize", {"image": gray}, seed=5, manager=manager, profile=profile, progress=steps)["image"]
    b = run("image.colorize", {"image": gray}, seed=5, manager=manager, profile=profile)["image"]
    assert a.size == gray.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert steps and steps[-1] == (2, 2)  # the tiny profile's steps
    luma = np.asarray(a.convert("L"), dtype=float)
    assert np.abs(luma - np.asarray(gray, dtype=float)).mean() < 12  # brightness kept, up to the RGB gamut
    # an SD text-to-image checkpoint is used as image-to-image
    c = run("image.colorize", {"image": gray}, {"model": "zoo:tiny-sd", "steps": 2, "strength": 0.5, "size": 64},
            seed=5, manager=manager, profile=profile)["image"]
    assert c.size == gray.size
    with pytest.raises(ParamError, match="strength"):
        run("image.colorize", {"image": gray}, {"model": "zoo:tiny-sd", "steps": 1, "strength": 0.5},
            seed=5, manager=manager, profile=profile)


def test_style_transfer_changes_the_content_image_and_keeps_its_size(manager, profile, photo) -> None:
    content = gradient_image(60, 40)
    steps: list = []
    out = run("image.style_transfer", {"image": content, "style": photo}, manager=manager, profile=profile,
              progress=steps)["image"]
    assert out.size == content.size and out.mode == "RGB"
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert np.abs(np.asarray(out, dtype=float) - np.asarray(content, dtype=float)).mean() > 0.5


# ------------------------------------------------------------------ audio


def _noise(seconds: float, rate: int, seed: int = 0) -> Audio:
    rng = np.random.default_rng(seed)
    return Audio((0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)


def _check_segments(segments: list[dict[str, Any]], duration: float) -> None:
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    for s in segments:
        assert 0.0 <= s["start"] <= s["end"] <= duration + 1e-6 and isinstance(s["text"], str)


def test_transcribe_resamples_8khz_speech(manager, profile) -> None:
    from tools._media import resample

    voice = speech("Hello world, this is a test.")
    narrow = Audio(resample(voice.samples, voice.sample_rate, 8000), 8000)
    out = run("speech.transcribe", {"audio": narrow}, manager=manager, profile=profile)
    seg = out["segments"]
    assert isinstance(out["text"], str)
    assert seg["windows"] == 1 and seg["duration"] == pytest.approx(voice.duration, abs=0.01)
    assert seg["language"] in {"en", "de", "fr", "es", "it", "zh"}
    _check_segments(seg["segments"], seg["duration"])
    fixed = run("speech.transcribe", {"audio": narrow}, {"language": "french"}, manager=manager, profile=profile)
    assert fixed["segments"]["language"] == "fr"


def test_long_audio_at_44khz_is_windowed_and_batching_changes_nothing(manager, profile) -> None:
    from tools.speech_recognition import transcribe

    clip = _noise(70.0, 44100)
    ctx = ToolContext(models=manager, profile=profile)
    batched = transcribe(clip, {"batch_size": 8}, ctx=ctx)
    single = transcribe(clip, {"batch_size": 1}, ctx=ctx)
    assert batched.windows == 3 and batched.stats["forward_passes"] == 1 and single.stats["forward_passes"] == 3
    assert batched.stats["input_sample_rate"] == 44100 and batched.stats["sample_rate"] == 16000
    assert batched.segments == single.segments
    _check_segments(batched.segments, 70.0)
    assert any(s["start"] >= 30.0 for s in batched.segments)  # later windows are offset to their place


def test_zero_shot_audio_classification_at_any_rate(manager, profile) -> None:
    labels = ["a dog barking", "rain", "a piano"]
    for clip in (tone(440.0, 5.0, 16000), _noise(1.0, 44100)):
        out = run("audio.classify", {"audio": clip}, {"labels": labels}, manager=manager, profile=profile)
        assert sorted(s["label"] for s in out["scores"]) == sorted(labels)
        assert sum(s["score"] for s in out["scores"]) == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------ video


def test_video_describe_captions_frames_and_transcribes_the_track(manager, profile) -> None:
    voice = speech("Good morning.")
    frames = np.stack([np.asarray(gradient_image(48, 32))] * 12)
    video = Video(frames, 4.0, voice)  # 3 s of frames
    out = run("video.describe", {"video": video}, {"interval": 1.0}, manager=manager, profile=profile)
    timeline = out["timeline"]
    assert [f["time"] for f in timeline["frames"]] == [0.0, 1.0, 2.0]
    assert timeline["scenes"][0]["start"] == 0.0 and timeline["scenes"][-1]["end"] == pytest.approx(3.0)
    assert len(timeline["scenes"]) == 1  # identical frames: one scene
    assert timeline["speech"] is not None and timeline["speech"]["windows"] == 1
    assert out["text"].startswith("Video: 3.0 s, 48x32") and "Scenes:" in out["text"] and "Speech" in out["text"]
    silent = run("video.describe", {"video": Video(frames[:1], 4.0)}, manager=manager, profile=profile)
    assert silent["timeline"]["speech"] is None and silent["timeline"]["speech_note"] == "no audio track"
    assert len(silent["timeline"]["frames"]) == 1


# ------------------------------------------------------------------ bad input


def test_silent_empty_corrupt_and_wrong_modality_inputs_are_refused(manager, profile, photo) -> None:
    for tool, params in (("speech.transcribe", {}), ("audio.classify", {"labels": ["a", "b"]})):
        with pytest.raises(ToolInputError, match="silent"):
            run(tool, {"audio": Audio(np.zeros(16000, np.float32), 16000)}, params, manager=manager, profile=profile)
        with pytest.raises(ToolInputError, match="empty"):
            run(tool, {"audio": Audio(np.zeros(0, np.float32), 16000)}, params, manager=manager, profile=profile)
        with pytest.raises(ToolInputError, match="expects audio"):
            run(tool, {"audio": photo}, params, manager=manager, profile=profile)
    with pytest.raises(ToolInputError, match="expects an image"):
        run("image.caption", {"image": "not an image"}, manager=manager, profile=profile)
    with pytest.raises(ArtifactDecodeError, match="port 'image'"):
        run("image.detect", {"image": b"\x89PNG\r\n\x1a\n" + b"junk" * 30}, manager=manager, profile=profile)
    with pytest.raises(ToolInputError, match="expects a video"):
        run("video.describe", {"video": photo}, manager=manager, profile=profile)


def test_unknown_model_is_reported_before_loading(manager, profile, photo) -> None:
    loads = manager.stats()["loads"]
    with pytest.raises(ModelNotFound, match="zoo"):
        run("image.caption", {"image": photo}, {"model": "zoo:no-such-model"}, manager=manager, profile=profile)
    with pytest.raises(ModelNotFound) as err:
        run("image.detect", {"image": photo}, {"model": "/no/such/checkpoint"}, manager=manager, profile=profile)
    assert err.value.context["task"] == "object-detection"
    assert manager.stats()["loads"] == loads


def test_language_the_model_does_not_know_is_a_param_error(manager, profile) -> None:
    with pytest.raises(ParamError, match="klingon"):
        run("speech.transcribe", {"audio": tone(300.0, 1.0)}, {"language": "klingon"}, manager=manager, profile=profile)

"""Every decoder end to end on the tiny zoo: real PNG / MP4 / WAV that the codecs decode back."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from PIL import Image

from orchestrator.artifacts import Audio, Video
from orchestrator.errors import BackendUnavailable, ModelNotFound, ParamError, RunCancelled, ToolInputError
from orchestrator.registry import default_registry, get_tool
from orchestrator.runtime import ModelManager, build_zoo, get_profile, zoo_path
from orchestrator.tool import ToolContext

DECODERS = {
    "image.generate": "text-to-image",
    "image.edit": "image-to-image",
    "video.generate": "text-to-video",
    "audio.generate": "text-to-audio",
    "music.generate": "text-to-music",
    "speech.synthesize": "text-to-speech",
}


@pytest.fixture(scope="module", autouse=True)
def zoo() -> None:
    build_zoo(["tiny-sd", "tiny-t2v", "tiny-audioldm", "tiny-musicgen", "tiny-vits"])


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    """Shared across the module so each tiny checkpoint loads once."""
    return ModelManager(device="cpu")


@pytest.fixture(scope="module")
def profile():
    return get_profile("tiny")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))


def run(tool: str, inputs: dict[str, Any], params: dict[str, Any] | None = None, *, seed: int | None = 1,
        models: ModelManager, profile, progress: list | None = None) -> tuple[dict[str, Any], ToolContext]:
    ctx = ToolContext(seed=seed, models=models, profile=profile,
                      on_progress=(lambda s, t, _m: progress.append((s, t))) if progress is not None else None)
    return get_tool(tool).call(inputs, params or {}, ctx), ctx


def test_decoders_are_registered_under_their_tasks() -> None:
    for name, task in DECODERS.items():
        tool = default_registry.get(name)
        assert tool.spec.task == task and tool.spec.seeded
        assert "model" in tool.spec.params.model_fields


# ------------------------------------------------------------------ end to end, decoded back


def test_image_generate_writes_png(manager, profile, local_store) -> None:
    steps: list = []
    out, ctx = run("image.generate", {"text": "a lighthouse at dusk"}, {"width": 48, "height": 32, "steps": 3},
                   models=manager, profile=profile, progress=steps)
    ref = local_store.put(out["image"])
    assert ref.mime == "image/png" and (ref.meta.width, ref.meta.height) == (48, 32)
    local_store.cache.discard(ref.id)
    back = local_store.load(ref)
    assert back.size == (48, 32) and back.mode == "RGB"
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert ctx.provenance["model"] == "zoo:tiny-sd" and ctx.provenance["seed"] == 1
    assert ctx.provenance["settings"]["steps"] == 3
    assert "images" not in out


def test_image_generate_batches_prompts_and_counts(manager, profile) -> None:
    out, _ = run("image.generate", {"text": ["a red fox", "a blue whale"]}, {"count": 2}, seed=5,
                 models=manager, profile=profile)
    assert len(out["images"]) == 4 and out["image"] is out["images"][0]
    assert {im.size for im in out["images"]} == {(64, 64)}  # the tiny profile's default size
    # image k of a batch uses seed + k: the whale's first image equals a single call with seed 7
    alone, _ = run("image.generate", {"text": "a blue whale"}, {}, seed=7, models=manager, profile=profile)
    diff = np.abs(np.asarray(out["images"][2], dtype=int) - np.asarray(alone["image"], dtype=int))
    assert diff.max() <= 3  # the same image, up to batched float rounding
    different = np.abs(np.asarray(out["images"][0], dtype=int) - np.asarray(alone["image"], dtype=int))
    assert different.max() > 10


def test_image_edit_writes_png(manager, profile, local_store, photo) -> None:
    out, ctx = run("image.edit", {"image": photo, "text": "make it blue"}, {"strength": 0.5, "steps": 4},
                   models=manager, profile=profile)
    ref = local_store.put(out["image"])
    assert (ref.meta.width, ref.meta.height) == (64, 48)  # 70x50 input, down to multiples of 8
    assert ctx.provenance["task"] == "image-to-image"
    resized, _ = run("image.edit", {"image": photo, "text": "x"}, {"width": 32, "height": 40},
                     models=manager, profile=profile)
    assert resized["image"].size == (32, 40)


def test_video_generate_writes_mp4(manager, profile, local_store) -> None:
    steps: list = []
    out, _ = run("video.generate", {"text": "a cat playing"}, {"frames": 5, "fps": 5, "width": 48, "height": 32},
                 models=manager, profile=profile, progress=steps)
    ref = local_store.put(out["video"])
    assert ref.mime == "video/mp4" and ref.meta.frames == 5 and ref.meta.fps == 5
    local_store.cache.discard(ref.id)
    back = local_store.load(ref)
    assert isinstance(back, Video)
    assert back.frames.shape == (5, 32, 48, 3) and back.fps == 5
    assert steps[-1] == (2, 2)


def test_audio_generate_writes_wav(manager, profile, local_store) -> None:
    out, _ = run("audio.generate", {"text": ["rain on a tin roof", "a dog barking"]}, {"duration": 0.5},
                 models=manager, profile=profile)
    assert len(out["audios"]) == 2
    ref = local_store.put(out["audio"])
    local_store.cache.discard(ref.id)
    back = local_store.load(ref)
    assert isinstance(back, Audio) and back.sample_rate == 16000
    assert back.duration == pytest.approx(0.5, abs=1 / 16000)
    assert np.abs(back.samples).max() > 0


def test_music_generate_writes_wav(manager, profile, local_store) -> None:
    steps: list = []
    out, ctx = run("music.generate", {"text": "calm piano with soft drums"}, {"duration": 0.4},
                   models=manager, profile=profile, progress=steps)
    ref = local_store.put(out["audio"])
    local_store.cache.discard(ref.id)
    back = local_store.load(ref)
    assert back.sample_rate == 16000 and back.duration == pytest.approx(0.4, abs=1 / 16000)
    total = steps[-1][1]
    assert steps[-1] == (total, total) and 2 < len(steps) <= 21  # per block, not per token
    assert ctx.provenance["settings"]["backend"] == "transformers"


def test_speech_synthesize_writes_wav(manager, profile, local_store) -> None:
    out, _ = run("speech.synthesize", {"text": ["Hello world.", "A much longer sentence to read aloud."]}, {},
                 models=manager, profile=profile)
    short, long = out["audios"]
    assert long.duration > short.duration > 0
    ref = local_store.put(out["audio"])
    local_store.cache.discard(ref.id)
    back = local_store.load(ref)
    assert back.sample_rate == 16000 and back.duration == pytest.approx(short.duration, abs=1e-3)
    slow, _ = run("speech.synthesize", {"text": "Hello world."}, {"speaking_rate": 0.5}, models=manager, profile=profile)
    assert slow["audio"].duration > short.duration


SEEDED_CASES = [
    ("image.generate", {"text": "a fox"}, {}),
    ("image.edit", {"text": "a fox", "image": "photo"}, {}),
    ("video.generate", {"text": "a fox"}, {"frames": 3}),
    ("audio.generate", {"text": "a fox"}, {"duration": 0.3}),
    ("music.generate", {"text": "a fox"}, {"duration": 0.3}),
    ("speech.synthesize", {"text": "a fox"}, {}),
]


@pytest.mark.parametrize(("tool", "inputs", "params"), SEEDED_CASES, ids=[c[0] for c in SEEDED_CASES])
def test_same_seed_same_bytes(tool, inputs, params, manager, profile, local_store, photo) -> None:
    inputs = {k: photo if v == "photo" else v for k, v in inputs.items()}
    port = next(iter(get_tool(tool).spec.outputs)).name
    ids = [local_store.put(run(tool, inputs, params, seed=s, models=manager, profile=profile)[0][port]).id
           for s in (11, 11, 12)]
    assert ids[0] == ids[1], "same seed must give the same bytes"
    assert ids[0] != ids[2], "another seed must give other bytes"


# ------------------------------------------------------------------ the runtime under the decoders


def test_concurrent_requests_load_the_model_once(profile) -> None:
    manager = ModelManager(device="cpu")
    results: list[Image.Image] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            results.append(run("image.generate", {"text": "a fox"}, {}, seed=seed, models=manager, profile=profile)[0]["image"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    stats = manager.stats()
    assert (stats["loads"], stats["hits"]) == (1, 3)
    assert len(stats["resident"]) == 1 and stats["resident"][0]["bytes"] > 0


def test_small_budget_evicts_and_reloads(profile) -> None:
    probe = ModelManager(device="cpu")
    run("image.generate", {"text": "x"}, {}, models=probe, profile=profile)
    sd_bytes = probe.stats()["used_bytes"]
    manager = ModelManager(device="cpu", memory_budget_bytes=int(sd_bytes * 1.2))
    for tool, inputs in [("image.generate", {"text": "x"}), ("speech.synthesize", {"text": "hello"}),
                         ("image.generate", {"text": "y"})]:
        out, _ = run(tool, inputs, {}, models=manager, profile=profile)
        assert out
        assert manager.stats()["used_bytes"] <= manager.memory_budget_bytes
    stats = manager.stats()
    assert stats["loads"] == 3 and stats["evictions"] == 2
    assert [r["model"] for r in stats["resident"]] == [str(zoo_path("tiny-sd"))]


BAD_PARAMS = [
    ("image.generate", {"width": 100}, None, ToolInputError, "width"),
    ("image.generate", {"steps": 0}, None, ToolInputError, "steps"),
    ("image.generate", {}, {"text-to-image": {"model": "zoo:tiny-sd", "options": {"height": 60}}}, ParamError, "height"),
    ("image.edit", {"steps": 1, "strength": 0.5}, None, ParamError, "strength"),
    ("video.generate", {"frames": 0}, None, ToolInputError, "frames"),
    ("audio.generate", {"duration": 600}, None, ParamError, "duration"),
    ("music.generate", {"duration": 600}, None, ParamError, "duration"),
    ("speech.synthesize", {"speaking_rate": 10}, None, ToolInputError, "speaking_rate"),
]


@pytest.mark.parametrize(("tool", "params", "overrides", "error", "param"), BAD_PARAMS,
                         ids=[f"{c[0]}-{c[4]}" for c in BAD_PARAMS])
def test_bad_params_fail_before_any_model_loads(tool, params, overrides, error, param, photo) -> None:
    manager = ModelManager(device="cpu")
    profile = get_profile("tiny", overrides=overrides)
    inputs = {"text": "a fox", "image": photo} if tool == "image.edit" else {"text": "a fox"}
    with pytest.raises(error) as info:
        run(tool, inputs, params, models=manager, profile=profile)
    assert param in str(info.value)
    if error is ParamError:
        task = DECODERS[tool]
        assert (info.value.param, info.value.task) == (param, task)
        assert info.value.model == profile.resolve(task).model and info.value.model in str(info.value)
    assert manager.stats()["loads"] == 0 and not manager.events


def test_a_ten_minute_song_is_refused_clearly(manager, profile) -> None:
    with pytest.raises(ParamError) as info:
        run("music.generate", {"text": "an epic"}, {"duration": 600}, models=manager, profile=profile)
    message = str(info.value)
    assert "text-to-music" in message and "zoo:tiny-musicgen" in message and "duration" in message and "60" in message


def test_unknown_model_and_missing_path(tmp_path, monkeypatch) -> None:
    manager = ModelManager(device="cpu")
    profile = get_profile("tiny")
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(ModelNotFound) as info:
        run("image.generate", {"text": "x"}, {"model": missing}, models=manager, profile=profile)
    assert (info.value.task, info.value.model) == ("text-to-image", missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as info:
        run("music.generate", {"text": "x"}, {"model": "nobody-xyz/musicgen-none"}, models=manager, profile=profile)
    assert (info.value.task, info.value.model) == ("text-to-music", "nobody-xyz/musicgen-none")
    assert manager.stats()["loads"] == 0


def test_a_local_folder_works_as_model(manager, profile) -> None:
    folder = str(zoo_path("tiny-vits"))
    out, ctx = run("speech.synthesize", {"text": "hi"}, {"model": folder}, models=manager, profile=profile)
    assert out["audio"].sample_rate == 16000 and ctx.provenance["model"] == folder


def test_audiocraft_without_the_extra_is_backend_unavailable(manager, profile) -> None:
    import importlib.util

    if importlib.util.find_spec("audiocraft") is not None:
        pytest.skip("audiocraft is installed here")
    loads = manager.stats()["loads"]
    with pytest.raises(BackendUnavailable, match="audiocraft") as info:
        run("music.generate", {"text": "x"}, {"backend": "audiocraft"}, models=manager, profile=profile)
    assert info.value.task == "text-to-music"
    assert manager.stats()["loads"] == loads


def test_empty_prompt_and_cancellation(manager, profile) -> None:
    with pytest.raises(ToolInputError, match="empty"):
        run("image.generate", {"text": "   "}, {}, models=manager, profile=profile)
    ctx = ToolContext(seed=1, models=manager, profile=profile)
    ctx.cancel_event.set()
    with pytest.raises(RunCancelled):
        get_tool("image.generate").call({"text": "a fox"}, {}, ctx)
    with pytest.raises(RunCancelled):
        get_tool("music.generate").call({"text": "a fox"}, {"duration": 0.2}, ctx)

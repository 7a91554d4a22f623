"""The model runtime: device choice, profiles (TOML + overrides), the model manager."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import orchestrator.runtime as runtime
from orchestrator.errors import BackendUnavailable, ConfigError, ModelLoadError, ModelNotFound
from orchestrator.registry import default_registry
from orchestrator.runtime import ModelChoice, ModelManager, get_profile, load_profile, pick_device, resolve_dtype
from orchestrator.settings import Settings, get_settings

DECODER_TASKS = {"text-to-image", "image-to-image", "text-to-video", "text-to-audio", "text-to-music", "text-to-speech"}


# ------------------------------------------------------------------ device and dtype


def test_pick_device_auto_and_explicit() -> None:
    auto = pick_device()
    assert auto in {"cuda", "mps", "cpu"}  # never a hard-coded cuda:N
    assert pick_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("tpu")


def test_resolve_dtype_half_on_gpu_float32_on_cpu() -> None:
    assert resolve_dtype(None, "cpu") is torch.float32
    assert resolve_dtype("float16", "cpu") is torch.float32  # fp16 kernels on CPU are slow or missing
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert resolve_dtype(None, "cuda") is torch.float16
    assert resolve_dtype("fp16", "cuda") is torch.float16
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("int3", "cpu")


# ------------------------------------------------------------------ profiles


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_builtin_profiles_cover_every_decoder_task_with_registered_tools(name: str) -> None:
    profile = load_profile(name)
    assert DECODER_TASKS <= set(profile.tasks())
    registered = {t.name for t in default_registry}
    for task in DECODER_TASKS:
        for choice in profile.candidates(task):
            assert choice.tool in registered, f"{name}: {task} names unregistered tool {choice.tool}"
            tool = default_registry.get(choice.tool)
            assert tool.spec.task == task
    assert profile.llm is not None


def test_text_to_speech_prefers_espeak_then_transformers() -> None:
    for name in ("tiny", "default"):
        first, second = load_profile(name).candidates("text-to-speech")[:2]
        assert (first.tool, first.model) == ("speech.espeak", "espeak-ng:en")
        assert second.tool == "speech.synthesize"


def test_tiny_profile_uses_only_zoo_checkpoints() -> None:
    profile = load_profile("tiny")
    models = [c.model for t in profile.tasks() for c in profile.candidates(t) if c.tool != "speech.espeak"]
    assert models and all(m.startswith("zoo:") for m in models)
    assert set(profile.zoo_names()) <= set(runtime.list_zoo())


def test_resolve_with_tool_and_model_param() -> None:
    profile = load_profile("default")
    assert profile.resolve("text-to-image").model == "stabilityai/sd-turbo"
    own = profile.resolve("text-to-image", tool="image.generate", model="/data/my-sd")
    assert (own.tool, own.model, own.options) == ("image.generate", "/data/my-sd", {})  # tuned options dropped
    listed = profile.resolve("text-to-image", model="stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert listed.option("steps") == 30
    with pytest.raises(ConfigError, match="no model for task 'image-to-3d'"):
        profile.resolve("image-to-3d")


def test_user_profile_file_extends_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "mine.toml"
    user.write_text(
        'name = "mine"\nextends = "default"\n\n'
        '[[tasks.text-to-image]]\ntool = "image.generate"\nmodel = "/models/finetuned"\n'
        'options = { steps = 30 }\n'
    )
    profile = get_profile(settings=Settings(profile="tiny", profile_file=user))
    assert profile.name == "mine"
    assert profile.resolve("text-to-image").model == "/models/finetuned"
    assert profile.resolve("text-to-music").model == "facebook/musicgen-small"  # inherited from default
    # a file without `extends` overlays the profile named in the settings
    overlay = tmp_path / "overlay.toml"
    overlay.write_text('[[tasks.text-to-video]]\ntool = "video.generate"\nmodel = "/v"\n')
    profile = get_profile(settings=Settings(profile="tiny", profile_file=overlay))
    assert profile.resolve("text-to-video").model == "/v"
    assert profile.resolve("text-to-image").model == "zoo:tiny-sd"


def test_env_and_dict_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MODEL__TEXT_TO_IMAGE", "/checkpoints/sd")
    monkeypatch.setenv("ORCHESTRATOR_MODEL__TEXT_TO_SPEECH", '{"tool": "speech.synthesize", "model": "/voices/vits"}')
    monkeypatch.setenv("ORCHESTRATOR_MODEL__LLM", "/llms/chat")
    profile = get_profile("tiny", overrides={"text-to-music": {"model": "/music/gen", "options": {"duration": 2.0}}})
    image = profile.resolve("text-to-image")
    assert (image.tool, image.model) == ("image.generate", "/checkpoints/sd")
    speech = profile.candidates("text-to-speech")
    assert (speech[0].tool, speech[0].model) == ("speech.synthesize", "/voices/vits")
    assert "speech.espeak" in [c.tool for c in speech]  # the others stay as fallbacks
    assert profile.llm is not None and profile.llm.model == "/llms/chat"
    music = profile.resolve("text-to-music")
    assert (music.tool, music.model, music.option("duration")) == ("music.generate", "/music/gen", 2.0)


def test_bad_profiles_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no profile named 'nope'"):
        load_profile("nope")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[tasks.text-to-image]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(broken)
    no_tool = tmp_path / "no_tool.toml"
    no_tool.write_text('[[tasks.text-to-image]]\nmodel = "x"\n')
    with pytest.raises(ConfigError, match="needs a tool and a model"):
        load_profile(no_tool)
    extra = tmp_path / "extra.toml"
    extra.write_text('[[tasks.text-to-image]]\ntool = "image.generate"\nmodel = "x"\nsteps = 3\n')
    with pytest.raises(ConfigError, match="bad model entry"):
        load_profile(extra)


# ------------------------------------------------------------------ the model manager


def _linear_loader(calls: list[str], *, delay: float = 0.0, size: int = 64):
    """A loader making a Linear(size, size) float32: (size*size + size) * 4 bytes."""

    def load(source: str, *, device: str, dtype: torch.dtype, offload: bool, options: dict) -> torch.nn.Module:
        calls.append(source)
        time.sleep(delay)
        return torch.nn.Linear(size, size).to(dtype)

    return load


def _model_dirs(tmp_path: Path, n: int) -> list[str]:
    dirs = []
    for i in range(n):
        d = tmp_path / f"m{i}"
        d.mkdir()
        dirs.append(str(d))
    return dirs


def test_concurrent_first_requests_load_once(tmp_path: Path) -> None:
    (model,) = _model_dirs(tmp_path, 1)
    calls: list[str] = []
    events: list[str] = []
    manager = ModelManager(device="cpu", on_event=lambda e: events.append(e.type))
    loader = _linear_loader(calls, delay=0.3)
    results: list[object] = []

    def worker() -> None:
        with manager.use(model, "test", loader=loader) as m:
            results.append(m)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 6 and all(r is results[0] for r in results)
    stats = manager.stats()
    assert (stats["loads"], stats["hits"]) == (1, 5)
    assert stats["load_seconds"] >= 0.3
    assert stats["resident"][0]["bytes"] == (64 * 64 + 64) * 4
    assert events.count("loaded") == 1 and events.count("hit") == 5


def test_lru_eviction_under_budget(tmp_path: Path) -> None:
    a, b, c = _model_dirs(tmp_path, 3)
    size = (64 * 64 + 64) * 4
    calls: list[str] = []
    manager = ModelManager(device="cpu", memory_budget_bytes=int(size * 2.5))
    loader = _linear_loader(calls)
    manager.load(a, "test", loader=loader)
    manager.load(b, "test", loader=loader)
    manager.load(a, "test", loader=loader)  # a is now the most recently used
    manager.load(c, "test", loader=loader)  # does not fit: b (least recent) goes
    resident = {r["model"] for r in manager.resident()}
    assert resident == {str(Path(a).resolve()), str(Path(c).resolve())}
    stats = manager.stats()
    assert stats["evictions"] == 1 and stats["used_bytes"] <= manager.memory_budget_bytes
    assert [e.type for e in manager.events if e.type == "evicted"] == ["evicted"]
    manager.load(b, "test", loader=loader)  # reload after eviction
    assert len(calls) == 4


def test_leased_models_are_not_evicted(tmp_path: Path) -> None:
    a, b = _model_dirs(tmp_path, 2)
    size = (64 * 64 + 64) * 4
    manager = ModelManager(device="cpu", memory_budget_bytes=int(size * 1.5))
    loader = _linear_loader([])
    with manager.use(a, "test", loader=loader):
        manager.load(b, "test", loader=loader)
        assert len(manager.resident()) == 2  # over budget while a is in use
        assert any(e.type == "over_budget" for e in manager.events)
    manager.load(b, "test", loader=loader)
    manager.load(a, "test", loader=loader)
    assert len(manager.resident()) == 1


def test_lookups_of_models_never_loaded_are_not_kept_without_bound(tmp_path: Path) -> None:
    manager = ModelManager(device="cpu")
    for model in _model_dirs(tmp_path, 150):
        manager.key(model, "test")
    assert len(manager._resolved) <= 64


def test_a_heap_size_no_c_int_holds_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="heap_keep_bytes"):
        ModelManager(device="cpu", heap_keep_bytes=1 << 33)


def test_resident_model_is_served_without_resolving_its_reference_again(tmp_path: Path) -> None:
    """A hit answers from memory (no path or hub lookups per call); after an eviction the
    reference is checked again, so a folder gone meanwhile raises ModelNotFound."""
    (model,) = _model_dirs(tmp_path, 1)
    calls: list[str] = []
    manager = ModelManager(device="cpu")
    loader = _linear_loader(calls)
    with manager.use(model, "test", loader=loader) as first:
        pass
    Path(model).rename(tmp_path / "moved")
    with manager.use(model, "test", loader=loader) as again:  # resident: a hit, not a lookup on disk
        assert again is first
    assert manager.key(model, "test").model == manager.resident()[0]["model"]  # no ModelNotFound either
    assert manager.stats()["hits"] == 1 and calls == [str(Path(model).resolve())]
    assert manager.evict() == 1
    with pytest.raises(ModelNotFound, match="does not exist"):
        manager.load(model, "test", loader=loader)
    assert len(calls) == 1


_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from orchestrator.runtime import ModelManager
ModelManager(device="cpu", heap_keep_bytes=int(sys.argv[1]))
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # warm: the first allocation of the block faults in either way
    a = np.ones(48 << 18, dtype=np.float32); del a
before = faults()
for _ in range(5):
    a = np.ones(48 << 18, dtype=np.float32); del a
print((faults() - before) // 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_cpu_manager_keeps_freed_memory_between_calls() -> None:
    """A CPU manager has the allocator keep freed memory (``cpu_heap_keep_bytes``), so a call's
    48 MB working set is not faulted in again on every call; 0 leaves glibc's defaults. Each
    case runs in its own process: the allocator setting is process-wide."""

    def faults(keep: int) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, str(keep)], capture_output=True, text=True,
                             timeout=120, check=True, cwd=Path(__file__).resolve().parents[1])
        return int(out.stdout.split()[-1])

    default, kept = faults(0), faults(256 << 20)
    assert kept < 20 and kept * 5 < default, f"minor page faults per 48 MB allocation: {default} -> {kept}"


def test_key_separates_backend_dtype_and_variant(tmp_path: Path) -> None:
    (model,) = _model_dirs(tmp_path, 1)
    manager = ModelManager(device="cpu")
    k1 = manager.key(model, "diffusers.text2img")
    k2 = manager.key(model, "diffusers.img2img")
    k3 = manager.key(ModelChoice(task="t", tool="x", model=model, dtype="bfloat16"), "diffusers.text2img")
    k4 = manager.key(model, "diffusers.text2img", options={"variant": "fp16", "steps": 3})
    assert len({k1, k2, k3, k4}) == 4
    assert k3.dtype == "bfloat16" and k1.dtype == "float32" and k1.device == "cpu"
    assert manager.key(model, "diffusers.text2img", options={"steps": 9}) == k1  # generation options don't matter


def test_missing_path_and_unknown_hub_id_raise_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    manager = ModelManager(device="cpu")
    with pytest.raises(ModelNotFound) as info:
        manager.load(str(tmp_path / "missing"), "test", task="text-to-image", loader=_linear_loader(calls))
    assert info.value.task == "text-to-image" and "does not exist" in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as info:
        manager.load("nobody-xyz/not-a-model", "test", task="text-to-music", loader=_linear_loader(calls))
    assert info.value.model == "nobody-xyz/not-a-model" and "hub" in str(info.value)
    with pytest.raises(ModelNotFound, match="zoo"):
        manager.load("zoo:no-such-thing", "test", loader=_linear_loader(calls))
    assert calls == [] and manager.stats()["loads"] == 0


def test_loader_errors_are_translated(tmp_path: Path) -> None:
    (model,) = _model_dirs(tmp_path, 1)
    manager = ModelManager(device="cpu")

    def broken(source: str, **_: object) -> object:
        raise RuntimeError("weights are corrupt")

    def gone(source: str, **_: object) -> object:
        raise OSError(f"{source} does not appear to have a file named config.json")

    with pytest.raises(ModelLoadError, match="weights are corrupt"):
        manager.load(model, "test", task="text-to-image", loader=broken)
    with pytest.raises(ModelNotFound, match="config.json"):
        manager.load(model, "test", loader=gone)
    assert manager.stats()["failures"] == 2 and manager.resident() == []


def test_missing_extra_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    if importlib.util.find_spec("audiocraft") is not None:
        pytest.skip("audiocraft is installed here")
    manager = ModelManager(device="cpu")
    with pytest.raises(BackendUnavailable, match="audiocraft") as info:
        manager.load("facebook/musicgen-small", "audiocraft.musicgen", task="text-to-music")
    assert info.value.task == "text-to-music"
    assert manager.stats()["loads"] == 0


def test_unknown_backend_is_config_error(tmp_path: Path) -> None:
    (model,) = _model_dirs(tmp_path, 1)
    with pytest.raises(ConfigError, match="no model backend named 'nope'"):
        ModelManager(device="cpu").load(model, "nope")


def test_default_manager_follows_settings() -> None:
    old = runtime.set_model_manager(None)
    try:
        manager = runtime.get_model_manager()
        assert manager is runtime.get_model_manager()
        assert manager.device == pick_device(get_settings().device)
        assert manager.memory_budget_bytes > 0
    finally:
        runtime.set_model_manager(old)


def test_public_names_are_exported() -> None:
    exported = {n for n in dir(runtime) if not n.startswith("_")}
    assert set(runtime.__all__) <= exported
    for name in ("ModelManager", "get_model_manager", "Profile", "ModelChoice", "get_profile", "load_profile",
                 "pick_device", "zoo_model", "build_zoo", "zoo_path"):
        assert name in runtime.__all__


def test_stats_are_json_friendly(tmp_path: Path) -> None:
    (model,) = _model_dirs(tmp_path, 1)
    manager = ModelManager(device="cpu")
    manager.load(model, "test", loader=_linear_loader([]))
    json.dumps(manager.stats())
    json.dumps([e.to_dict() for e in manager.events])
    assert manager.evict(model) == 1 and manager.resident() == []


def test_concurrent_model_calls_divide_the_cpu_threads(tmp_path: Path) -> None:
    a, b = _model_dirs(tmp_path, 2)
    manager = ModelManager(device="cpu", cpu_threads=4)
    loader = _linear_loader([])
    inside: list[int] = []
    both_in = threading.Barrier(2, timeout=10)

    def worker(model: str) -> None:
        with manager.use(model, "test", loader=loader):
            both_in.wait()
            inside.append(torch.get_num_threads())
            both_in.wait()

    original = torch.get_num_threads()
    try:
        with manager.use(a, "test", loader=loader):
            assert torch.get_num_threads() == 4  # alone: all of them
        threads = [threading.Thread(target=worker, args=(m,)) for m in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert inside == [2, 2]  # two at once: half each, never 2 x 4 threads on 4 cores
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(original)


def _slow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, seconds: float) -> None:
    """A module on sys.path whose import takes ``seconds`` and defines ``Thing``."""
    (tmp_path / f"{name}.py").write_text(f"import time\ntime.sleep({seconds})\nThing = object\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_first_use_imports_hold_no_load_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.runtime._backends import _BACKENDS
    from orchestrator.runtime._device import HEAVY_LOCK
    from orchestrator.runtime._imports import IMPORT_LOCK

    _slow_module(tmp_path, monkeypatch, "orch_slow_import_a", 0.6)
    calls: list[str] = []
    monkeypatch.setitem(_BACKENDS, "test.slow-import",
                        runtime.Backend("test.slow-import", _linear_loader(calls), imports=("orch_slow_import_a:Thing",)))
    (model,) = _model_dirs(tmp_path, 1)
    manager = ModelManager(device="cpu")
    loading = threading.Thread(target=manager.load, args=(model, "test.slow-import"))
    loading.start()
    time.sleep(0.2)
    assert IMPORT_LOCK.locked()  # the import is under way
    other_free = threading.Event()

    def other_load() -> None:  # another model's load lock is free meanwhile
        with HEAVY_LOCK:
            other_free.set()

    threading.Thread(target=other_load).start()
    assert other_free.wait(0.3), "the load lock was held across a first-use import"
    loading.join()
    assert calls == [model] and manager.stats()["loads"] == 1


def test_preload_imports_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from orchestrator.runtime._imports import ensure_imported, preload

    _slow_module(tmp_path, monkeypatch, "orch_slow_import_b", 0.3)
    started = time.perf_counter()
    thread = preload(["orch_slow_import_b:Thing", "orch_not_installed_anywhere"])
    assert thread is not None and time.perf_counter() - started < 0.2  # returns at once
    ensure_imported(["orch_slow_import_b:Thing"])  # waits for the preload, imports nothing twice
    thread.join(5)
    assert "orch_slow_import_b" in sys.modules and "orch_not_installed_anywhere" not in sys.modules
    assert preload(["orch_slow_import_b:Thing"]) is None  # already done
    with pytest.raises(ImportError):
        ensure_imported(["orch_slow_import_b:Missing"])


def test_a_pipelines_component_classes_are_imported_before_its_load(tmp_path: Path) -> None:
    from orchestrator.runtime._backends import _pipeline_imports, get_backend

    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
        "odd": ["some_other_lib", "Thing"], "safety_checker": [None, None]}))
    assert _pipeline_imports(str(tmp_path)) == ("diffusers:StableDiffusionPipeline", "diffusers:UNet2DConditionModel",
                                                 "transformers:CLIPTextModel")
    assert _pipeline_imports(str(tmp_path / "missing")) == ()
    assert get_backend("diffusers.text2img").imports_of is _pipeline_imports
    assert "transformers:AutoTokenizer" in get_backend("transformers.vits").imports

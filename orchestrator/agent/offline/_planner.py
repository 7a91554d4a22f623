"""The offline planner: steps -> tasks by meaning -> dependencies by searching the typed port graph."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from orchestrator.artifacts import Modality

from ..plan import Plan, PlanTask, TaskCatalog, TaskInfo
from ..planner import PlanProblem, PlanRequest
from ._match import NONE, Encoder, TaskIndex, TaskNotes, build_index, default_encoder
from ._text import Mention, Step, find_mentions, language, split_steps, url_modality, verb_stem

__all__ = ["OfflinePlanner"]

MEDIA = (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO)
_NO_NOTES = TaskNotes()
URL = "url"  # a text that is a link: what downloaders take
_LITERAL_PORTS = frozenset({"instruction", "question", "prompt", "query", "style_text", "command"})
_CONTENT_PREP = re.compile(r"\b(?:of|showing|depicting|featuring|about|with|where|in which|that shows|illustrating)\s+"
                           r"(?:a|an|the|some|two|three|many)?\s*[a-z]", re.I)
_WORD = re.compile(r"[A-Za-z']+")
_APOSTROPHE = re.compile(r"(?<=[A-Za-z])[’ʼ](?=[A-Za-z])")  # a typographic apostrophe inside a word
_STOP = frozenset("a an the of to in on at for from with by and or is are be this that it its my me i you your "
                  "please can could would will some any into as then also so very really new based using use "
                  "want need like would should just now one out up".split())


@dataclass
class _Out:
    """An output a later step can take."""

    task: int
    modality: Modality
    port: str
    kind: str | None = None  # "url" for links
    used: bool = False


@dataclass
class _Choice:
    step: Step
    task: str | None
    score: float
    row: np.ndarray | None = None  # the step's scores over all tasks
    narrative: str | None = None  # the task it would be, were it not scene-setting (Language.narrative)

    def close_to(self, task: str, index: TaskIndex, margin: float) -> float | None:
        """The step's score for ``task`` when it is within ``margin`` of its best, else None."""
        if self.row is None:
            return None
        score = float(self.row[index.tasks.index(task)])
        return score if score >= self.score - margin else None


@dataclass
class _Build:
    """One plan being built."""

    catalog: TaskCatalog
    index: TaskIndex
    resources: dict[str, Modality]
    tasks: list[PlanTask] = field(default_factory=list)
    outs: list[_Out] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    used_resources: set[str] = field(default_factory=set)
    said: dict[int, list[str]] = field(default_factory=dict)  # task id -> the words of the step that asked for it

    def add(self, task: str, args: dict[str, object]) -> int:
        tid = len(self.tasks)
        deps = sorted({int(v.rsplit("-", 1)[1]) for v in _flat(args.values()) if v.startswith("<GENERATED>-")})
        self.tasks.append(PlanTask(task=task, id=tid, dep=deps or [-1], args=args))
        info = self.catalog.tasks[task]
        produces = self.index.notes.get(task)
        for p in info.outputs:
            if p.modality in (Modality.TEXT, *MEDIA) and not p.many:
                kind = produces.produces if (produces and p.modality is Modality.TEXT) else None
                if not any(o.task == tid and o.modality is p.modality for o in self.outs):
                    self.outs.append(_Out(tid, p.modality, p.name, kind))
        return tid

    def earlier(self, modality: Modality, kind: str | None = None, *, unused_only: bool = False) -> list[_Out]:
        """Earlier outputs of ``modality``, nearest first (unused ones before used ones)."""
        found = [o for o in reversed(self.outs) if o.modality is modality and (kind is None or o.kind == kind)]
        if unused_only:
            return [o for o in found if not o.used]
        return sorted(found, key=lambda o: o.used)

    def named(self, step: Step, modality: Modality) -> _Out | None:
        """The earlier output of ``modality`` the step names by what was done to it ("the fetched video",
        "that smoothed version", "the translation"): the latest task whose step said that word."""
        verbs = language().verbs
        for root, verb_only in _naming_roots(step.text):
            for tid in sorted(self.said, reverse=True):
                if any(w.startswith(root) and (not verb_only or w in verbs) for w in self.said[tid]):
                    out = next((o for o in self.outs if o.task == tid and o.modality is modality), None)
                    if out is not None:
                        return out
        return None


_PARTICIPLE = re.compile(r"\b(?:the|that|this|its|their|these|those)\s+(?:\(?[a-z]+\)?\s+)?([a-z]{4,}(?:ed|en))\b", re.I)
_NOUN = re.compile(r"\b(?:the|that|this|its|their|these|those)\s+(?:[a-z]+\s+)?([a-z]{7,})\b", re.I)
_NOT_NAMING = frozenset({"version", "versions", "result", "results", "output", "outputs", "original", "previous",
                         "following", "current", "content", "contents", "another"})


def _participle_root(word: str) -> str | None:
    """A prefix the forms of a past participle's verb share ("stopped" -> "stop", "colorized" -> "colori"),
    or None when too short to tell."""
    base = verb_stem(word)
    return base[: max(4, len(base) - 1)] if len(base) >= 4 else None


def _mark_done(steps: list[Step]) -> list[Step]:
    """Each step with the participles that name an earlier step's result by what that step said ("add
    reverb to @0, then chart the reverbed track"): :meth:`Step.for_matching` leaves them out, wiring keeps
    them (:meth:`_Build.named`)."""
    out: list[Step] = []
    said: set[str] = set()
    for s in steps:
        done = tuple(m.group(1) for m in _PARTICIPLE.finditer(s.text)
                     if (root := _participle_root(m.group(1))) and any(w.startswith(root) for w in said))
        out.append(replace(s, done=done) if done else s)
        said |= set(re.findall(r"[a-z]+", s.text.lower()))
    return out


def _back_to_given(steps: list[Step]) -> list[Step]:
    """A step going back to "the original photo" without naming it gets the first file of that kind an earlier
    step named (it hands that file to the step after it, like "go back to @0")."""
    lang = language()
    out: list[Step] = []
    for s in steps:
        if not s.mentions and lang.returns_to(s.text):
            kinds = lang.cues(s.text).named
            given = next((m for e in out for m in e.mentions if m.kind == "file" and (not kinds or m.modality in kinds)),
                         None)
            if given is not None:
                s = replace(s, mentions=[given], hands=True)
        out.append(s)
    return out


def _naming_roots(text: str) -> list[tuple[str, bool]]:
    """Prefixes of the words that name a thing by what was done to it, each with whether only a verb said
    earlier matches it: past participles ("the fetched video", "the (original) downloaded file"), cut to a
    prefix its verb's forms share, and nouns of seven letters or more ("the translation", "that summary"),
    cut to six letters ("transl"), which match the verb they come from ("translate", not "translator")."""
    roots = [(root, False) for m in _PARTICIPLE.finditer(text) if (root := _participle_root(m.group(1)))]
    lang = language()
    for m in _NOUN.finditer(text):
        w = m.group(1).lower()
        if not w.endswith(("ed", "en")) and w not in _NOT_NAMING and w not in lang.generic:
            roots.append((w[:6], True))
    return roots


def _flat(values: object) -> list[str]:
    out: list[str] = []
    for v in values if isinstance(values, (list, tuple)) else list(values):  # type: ignore[arg-type]
        if isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
        elif isinstance(v, str):
            out.append(v)
    return out


_LINK_WORD = re.compile(r"\b(?:links?|urls?|(?:web\s+)?address(?:es)?)\b", re.I)


def _reads_alike(catalog: TaskCatalog, first: str, second: str | None) -> bool:
    """Whether ``second`` can read a kind of thing ``first`` reads (so it can take what ``first`` took)."""
    kinds = {p.modality for p in catalog.tasks[first].inputs if not p.optional}
    return second is not None and any(p.modality in kinds for p in catalog.tasks[second].inputs)


def _in_order(outs: list[_Out]) -> list[str]:
    """References to ``outs`` in the order their tasks come: a list input (clips to splice, images to
    stitch) keeps the order the request made them in."""
    return [_ref(o) for o in sorted(outs, key=lambda o: o.task)]


def _ref(out: _Out) -> str:
    out.used = True
    return f"<GENERATED>-{out.task}"


class OfflinePlanner:
    """Plans requests without a language model, from the tool catalog alone.

    A request is cut into steps (sentences, list items, "then", "and" before a
    verb ...); each step goes to the task whose description or phrasings
    (tasks.toml) are nearest in meaning (all-MiniLM-L6-v2 sentence embeddings with
    the ``embeddings`` extra, word overlap without it); each input port then takes
    the step's own file, link or quoted text, else the nearest earlier output of
    its modality, inserting a converter task only where the types require one.

    Knobs (defaults measured with bench/bench_planner.py): ``min_score`` below which a
    step asks for nothing; ``skeleton_weight`` of the step's skeleton against its full
    text; ``cue_weight`` of each modality cue; ``direct_margin``, how much lower a task
    that reads the step's media directly may score and still replace one that needs a
    converter; ``hub_weight`` of the correction for tasks near everything (CSLS); ``target_weight``,
    the cost of a task that does not make what the step asks for by name ("into text", "as audio");
    ``feasible_margin``, how much lower a task whose inputs can be fed may score and still replace one
    whose inputs cannot; ``restate_margin``, how much lower the task of a direct ask may score on the
    wish just before it and still be the wish said again (and how close a call in an ask a statement of
    the problem before it decides).

    >>> import asyncio
    >>> from orchestrator.registry import default_registry
    >>> planner = OfflinePlanner()
    >>> req = PlanRequest("Transcribe talk.wav, then translate it into German", TaskCatalog(default_registry))
    >>> [t.task for t in asyncio.run(planner.plan(req)).tasks]  # doctest: +SKIP
    ['automatic-speech-recognition', 'translation']
    """

    name = "offline"

    def __init__(self, *, use_embeddings: bool | None = None, encoder: Encoder | None = None,
                 min_score: float = 0.38, skeleton_weight: float = 0.5, cue_weight: float = 0.05,
                 direct_margin: float = 0.3, hub_weight: float = 0.3, target_weight: float = 0.15,
                 feasible_margin: float = 0.2, restate_margin: float = 0.06, max_steps: int | None = None,
                 cache_size: int = 4096) -> None:
        self.skeleton_weight = skeleton_weight
        self.cue_weight = cue_weight
        self.direct_margin = direct_margin
        self.hub_weight = hub_weight
        self.target_weight = target_weight
        self.feasible_margin = feasible_margin
        self.restate_margin = restate_margin
        if max_steps is None:
            from orchestrator.settings import get_settings

            max_steps = get_settings().planner_max_steps
        self.max_steps = max_steps
        self.encoder: Encoder = encoder if encoder is not None else default_encoder(use_embeddings)
        self.min_score = min_score
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ protocol
    async def plan(self, request: PlanRequest) -> Plan:
        """A plan for ``request`` (see :meth:`plan_many`); the embedding work runs off the event loop."""
        return (await asyncio.to_thread(self.plan_many, [request]))[0]

    async def repair(self, request: PlanRequest, plan: Plan, problems: Sequence[PlanProblem]) -> Plan:
        """Drop the tasks validation found wrong (and those that use them); refuse if none is left."""
        bad = {p.task_id for p in problems if p.task_id is not None}
        if not bad or len(bad) == len(plan.tasks) and any(p.task_id is None for p in problems):
            reasons = "; ".join(p.message for p in problems)
            return Plan(refusal=f"the plan cannot be made valid: {reasons}")
        keep: list[PlanTask] = []
        for t in plan.tasks:
            if t.id in bad or any(k in bad for _, k in t.refs()) or any(d in bad for d in t.dep):
                bad.add(t.id)
                continue
            keep.append(t)
        notes = list(plan.notes) + [f"dropped task {p.task_id}: {p.message}" for p in problems if p.task_id is not None]
        if not keep:
            return Plan(notes=notes, refusal="no task of the plan could be kept: "
                        + "; ".join(p.message for p in problems))
        return Plan(tasks=keep, notes=notes)

    # ------------------------------------------------------------------ batch path
    def plan_many(self, requests: Sequence[PlanRequest]) -> list[Plan]:
        """Plan several requests at once (their steps are embedded in one batch)."""
        lang = language()
        parsed: list[tuple[PlanRequest, list[Mention], list[Step]]] = []
        cut: dict[int, int] = {}
        for r, req in enumerate(requests):
            # files, links and quoted text as the user wrote them; around them "I’ve" is "I've" to every cue
            # word (one character for one: the mentions' places hold in both)
            mentions = find_mentions(req.text, dict(req.resources))
            steps = _back_to_given(_mark_done(split_steps(_APOSTROPHE.sub("'", req.text), mentions, self._known)))
            if len(steps) > self.max_steps:
                cut[r] = len(steps)
                steps = steps[: self.max_steps]
            parsed.append((req, mentions, steps))
        indexes = [build_index(req.catalog, self.encoder, lang.none_phrasings, lang.words) for req, _, _ in parsed]
        # 1. resolve every step of every request, one batch
        rows = self._scores([s for _, _, steps in parsed for s in steps], indexes, parsed)
        choices: list[list[_Choice]] = []
        k = 0
        for (req, _, steps), index in zip(parsed, indexes, strict=True):
            got: list[_Choice] = []
            context: Modality | None = None
            handed = False  # the context is a file a step asking nothing just handed over ("I have @0.")
            links: set[Modality] = set()  # what the links handed over by steps asking nothing point to
            for i, s in enumerate(steps):
                c = self._choose(s, rows[k + i], index, req.catalog, context, links, handed)
                if c.task is not None and i + 1 < len(steps) and lang.searches_only_where(s.text):
                    c = _Choice(s, None, c.score, c.row)  # only where to look: joined to the step saying what for
                if c.task is not None and any(g.task for g in got) and lang.narrows(s.text):
                    c = _Choice(s, None, c.score, c.row)  # "only the picture please": narrows what was asked
                if c.task is not None and context in MEDIA and any(g.task for g in got) and lang.only_how(
                        s.text) and not _keeps(index, req.catalog, c.task, context):
                    # how the thing just changed should come out ("... and make it sound calmer"): a detail of
                    # that change, unless its task changes that kind of thing into the same kind; joined to nothing
                    c = _Choice(Step("", [], s.sentence), None, 0.0)
                got.append(c)
                if c.task is not None and not lang.description(s.text):  # "@0 is a photo of ...": hands @0 over
                    context = _main_output(req.catalog.tasks[c.task])
                    links, handed = set(), False
                else:  # "I have @0. Speed it up": "it" is the file the step only handed over
                    files = [m.modality for m in s.mentions if m.kind == "file" and m.modality in MEDIA]
                    context = files[-1] if files else context
                    handed = handed or bool(files)
                    links |= {url_modality(m.value) for m in s.mentions if m.kind == "url"} - {None, Modality.TEXT}
            k += len(steps)
            choices.append(got)
        for got in choices:
            # scene-setting is dropped only beside a step that asks: alone, it is what the user wants
            if all(c.task is None for c in got):
                got[:] = [_Choice(c.step, c.narrative, c.score, c.row) if c.narrative else c for c in got]
            # a statement of the problem ("the hiss is unbearable") and the ask that solves it ("clean it
            # up") are one task: the statement goes when a step that asks has the same task; a description
            # of a thing ("the speech is long") goes beside any step that asks
            # a statement of the problem decides a close call in the next step that asks ("the talk is buried
            # under hiss. Can you tidy up the recording?": noise reduction)
            for i, a in enumerate(got):
                j = next((j for j in range(i + 1, len(got)) if got[j].task is not None), None)
                if a.task is None or j is None or lang.asks_for(a.step.text):
                    continue
                b = got[j]
                close = b.close_to(a.task, index, self.restate_margin)
                if b.task != a.task and close is not None and lang.asks_for(b.step.text):
                    got[j] = _Choice(b.step, a.task, close, b.row)
            asked = {c.task for c in got if c.task is not None and lang.asks_for(c.step.text)}
            got[:] = [_Choice(c.step, None, c.score, c.row) if asked and not lang.asks_for(c.step.text) and (
                          c.task in asked or lang.description(c.step.text)) else c for c in got]
            _drop_restated(got, req.catalog, index, self.restate_margin)
            # an ask that only points back at what an earlier step asked for ("could you help with creating
            # this rendition?", "would you sort out these jobs?") asks for nothing more
            got[:] = [_Choice(c.step, None, c.score, c.row) if c.task is not None and any(
                          g.task is not None for g in got[:i]) and lang.points_back_only(c.step.text) else c
                      for i, c in enumerate(got)]
        # 2. a step that asks for nothing may be the first half of one cut too eagerly: join and retry
        merged_steps: list[tuple[int, int, Step]] = []
        for r, got in enumerate(choices):
            for i in range(len(got) - 1):
                a, b = got[i], got[i + 1]
                # "Look at @0, ...", "I have @0.": only hands over a file, which the next step gets anyway
                hands = a.step.hands or (len(a.step.text.split()) <= 4 and lang.only_states(a.step.text) and any(
                    m.kind == "file" for m in a.step.mentions))
                if a.task is None and a.step.text.split() and not hands and not lang.opens.match(
                        a.step.text) and not lang.declines(
                        a.step.text) and (
                        a.step.sentence == b.step.sentence or (
                        len(b.step.text.split()) <= 4 and lang.back.search(b.step.text))):
                    merged_steps.append((r, i, _join(a.step, b.step, a.step.sentence == b.step.sentence)))
        if merged_steps:
            mrows = self._scores([s for _, _, s in merged_steps], [indexes[r] for r, _, _ in merged_steps], None)
            for (r, i, step), row in zip(merged_steps, mrows, strict=True):
                c = self._choose(step, row, indexes[r], parsed[r][0].catalog)
                if c.task is not None and c.score >= choices[r][i + 1].score - 0.02:
                    choices[r][i] = _Choice(Step("", [], step.sentence), None, 0.0)  # joined into the next
                    choices[r][i + 1] = c
        # 3. wire each request's steps into a plan
        plans = [self._build(req, mentions, got, index)
                 for (req, mentions, _), got, index in zip(parsed, choices, indexes, strict=True)]
        for r, n in cut.items():
            plans[r].notes.append(f"the request has {n} steps; only the first {self.max_steps} were planned "
                                  "(ORCHESTRATOR_PLANNER_MAX_STEPS)")
        return plans

    def plan_texts(self, texts: Sequence[str], catalog: TaskCatalog) -> list[Plan]:
        """Synchronous convenience: plan plain request texts against one catalog."""
        return self.plan_many([PlanRequest(t, catalog) for t in texts])

    @property
    def _known(self) -> frozenset[str]:
        """Words spelled right: the encoder's tokenizer vocabulary (none for the word-overlap matcher: no
        misspelling is mended there)."""
        vocabulary = getattr(self.encoder, "vocabulary", frozenset())
        return vocabulary if isinstance(vocabulary, frozenset) else frozenset()

    # ------------------------------------------------------------------ matching
    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        with self._lock:
            found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vecs = self.encoder.encode(missing)
            found.update(zip(missing, vecs, strict=True))
            with self._lock:  # a batch larger than the cache still gets all its vectors (from ``found``)
                for t, v in zip(missing, vecs, strict=True):
                    self._cache[t] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def _scores(self, steps: list[Step], indexes: list[TaskIndex],
                parsed: list[tuple[PlanRequest, list[Mention], list[Step]]] | None) -> list[np.ndarray]:
        if not steps:
            return []
        if parsed is not None:
            owners = [indexes[r] for r, (_, _, ss) in enumerate(parsed) for _ in ss]
        else:
            owners = indexes
        texts = [_generic_text(_normalize(s.for_matching())) for s in steps]
        skeletons = [ix.skeleton(t) or t for ix, t in zip(owners, texts, strict=True)]
        both = self._encode(texts + skeletons)
        vecs = (1 - self.skeleton_weight) * both[: len(texts)] + self.skeleton_weight * both[len(texts):]
        out: list[np.ndarray] = []
        # group by index to score in one matrix product per catalog
        by_index: dict[int, list[int]] = {}
        for i, ix in enumerate(owners):
            by_index.setdefault(id(ix), []).append(i)
        result: dict[int, np.ndarray] = {}
        for members in by_index.values():
            ix = owners[members[0]]
            scores = ix.scores(vecs[members])
            for j, m in enumerate(members):
                result[m] = scores[j]
        out = [result[i] for i in range(len(steps))]
        return out

    def _choose(self, step: Step, row: np.ndarray, index: TaskIndex, catalog: TaskCatalog,
                context: Modality | None = None, links: set[Modality] | None = None,
                handed: bool = False) -> _Choice:
        """The step's task: the nearest in meaning, nudged by the modalities the step names; ``links``: what
        the links handed over before it point to (they come to this step when it has none of its own);
        ``handed``: ``context`` is a file just handed over, what a step naming no thing of its own works on
        ("I have @0. Please make the hiss quieter")."""
        lang = language()
        row = row - self.hub_weight * (index.hub - index.hub.mean()) if index.hub.size else row.copy()
        cues = lang.cues(step.for_matching())
        made, read, named = cues.made, set(cues.read), set(cues.named)
        files = {m.modality for m in step.mentions if m.kind == "file" and m.modality in MEDIA}
        read |= files
        linked = {url_modality(m.value) for m in step.mentions if m.kind == "url"} - {None, Modality.TEXT}
        bare_link = (any(m.kind == "url" for m in step.mentions) and not any(m.kind == "quote" for m in step.mentions)
                     and not _LINK_WORD.search(step.text))
        if not step.mentions and links:
            linked = set(links)
        if made is None and linked:
            made = next(iter(linked))
        named |= read | linked
        if not read and context is not None and (cues.bare or lang.back.search(step.text) or (
                handed and named <= {context} and not step.mentions)):
            read = {context}
        ins, outs = _signatures(index, catalog)
        # "find pictures of '<words>'": quoted words are what to look for, not a thing to look in
        finds = lang.seeks(re.sub(r"@(\d+)\b", lambda mt: "the words" if step.mentions[int(mt.group(1))].kind == "quote"
                                  else mt.group(0), step.text))
        to_language = lang.names_language(step.text)
        creates = not finds and lang.creates.match(step.said) is not None
        # a text's length; with media in the step, "condense it" is about its duration
        way = lang.length_of(step.text) if not (named | read) - {Modality.TEXT} else None
        for j, name in enumerate(index.tasks):
            if name == NONE:
                continue
            length = index.notes.get(name, _NO_NOTES).length
            if way is not None and length is not None:
                row[j] += self.cue_weight if length == way else -self.target_weight  # "shorten it" is no expansion
            if finds and index.notes.get(name, _NO_NOTES).backend == "search":
                row[j] += self.target_weight
            elif creates and index.notes.get(name, _NO_NOTES).backend == "search":
                row[j] -= self.target_weight  # "draw a poster from my notes" makes one, finds none
            if to_language and index.notes.get(name, _NO_NOTES).into_language:
                row[j] += self.target_weight  # "put it into German" names a language to go into
            if bare_link and index.notes.get(name, _NO_NOTES).produces == URL:
                row[j] -= self.target_weight  # "fetch the jingle from <link>": the link is there, not to be found
            if made is not None:
                if made in outs[j]:
                    row[j] += self.cue_weight
                else:
                    row[j] -= self.target_weight if cues.target else self.cue_weight
            if read:
                row[j] += self.cue_weight if read & ins[j] else -self.cue_weight
            if files and ins[j] - {Modality.TEXT} and not files & ins[j]:
                row[j] -= self.cue_weight  # a file is named, and this task cannot read it
            media = named - {Modality.TEXT}
            if media and not media & (ins[j] | outs[j]):
                row[j] -= self.cue_weight
        if cues.bare and read:  # "-> video" says nothing but the types: a task from what came before to a video
            for j in range(len(row)):
                if not (read & ins[j] and made in outs[j]):
                    row[j] = -1.0
        best = int(np.argmax(row))
        if index.tasks[best] == NONE and lang.asks_for(step.text) and lang.acting.search(step.text):
            # "could you help me in downloading this": an ask that names an action is no pleasantry
            row[best] = -1.0
            best = int(np.argmax(row))
        name = index.tasks[best]
        score = float(row[best])
        if name == NONE or score < self.min_score or step.hands or lang.only_states(step.text) or lang.declines(
                step.text):
            return _Choice(step, None, score, row)
        if lang.narrative(step.text):
            return _Choice(step, None, score, row, narrative=name)
        return _Choice(step, name, score, row)

    # ------------------------------------------------------------------ wiring
    def _build(self, req: PlanRequest, mentions: list[Mention], choices: list[_Choice], index: TaskIndex) -> Plan:
        b = _Build(req.catalog, index, dict(req.resources))
        for m in mentions:
            if m.kind == "file":
                b.resources.setdefault(m.value, m.modality)
        previous: str | None = None
        wired: Step | None = None  # the step of the task wired last
        carried: list[Mention] = []  # resources of steps that asked for nothing go to the next step
        choices = _hand_back(choices, req.catalog)
        later: list[set[str]] = []  # per choice, the file names the steps after it name
        named: set[str] = set()
        for c in reversed(choices):
            later.append(set(named))
            named |= {m.value for m in c.step.mentions if m.kind == "file"}
        later.reverse()
        for i, c in enumerate(choices):
            if c.task is None:
                carried.extend(c.step.mentions)
                continue
            refusal = index.notes.get(c.task)
            if refusal is not None and refusal.offline_refusal:
                b.notes.append(f"'{c.step.plain()[:80]}': {refusal.offline_refusal}")
                carried.extend(c.step.mentions)
                continue
            own = [m.modality for k, m in enumerate(c.step.mentions) if m.kind == "file" and m.modality in MEDIA
                   and not re.search(rf"\b(?:into|to)\s+(?:[\w-]+\s+){{0,2}}@{k}\b", c.step.text)]  # "copy it to @0"
            referent = next((m.modality for m in reversed(carried) if m.kind == "file" and m.modality in MEDIA),
                            next((o.modality for o in reversed(b.outs) if o.modality in MEDIA), None))
            if carried:
                c = _Choice(_carry(c.step, carried), c.task, c.score, c.row)
                c = self._using_given(b, c, [m for m in carried if m.kind == "file" and m.modality in MEDIA
                                             and m.value not in later[i]])
                carried = []
            if referent in own and language().back.search(c.step.text):
                c = self._reading_both(b, c, referent)
            if c.task == previous and not c.step.mentions and (
                    not language().verb_start.match(c.step.text) or _transforms(req.catalog.tasks[c.task])):
                continue  # the same action restated ("... The transcript should be accurate.")
            last = b.tasks[-1] if b.tasks else None
            if c.step.apart and last is not None and _reads_alike(req.catalog, last.task, c.task):
                # "... and separately list its keywords": what the step before read (its files too), not its result
                if not c.step.mentions and wired is not None:
                    c = _Choice(_carry(c.step, [m for m in wired.mentions if m.kind in ("file", "url")]), c.task,
                                c.score, c.row)
                kept, b.outs = b.outs, [o for o in b.outs if o.task != last.id]
                self._wire(b, c)
                b.outs = kept + [o for o in b.outs if o not in kept]
            else:
                self._wire(b, c)
            previous, wired = c.task, c.step
        if not b.tasks:
            asked = "; ".join(c.step.plain() for c in choices if c.step.text.strip())[:300]
            why = b.notes[0] if b.notes else "no tool in the catalog does what it asks"
            return Plan(notes=b.notes, refusal=f"cannot plan this request: {why} (asked: {asked!r})")
        for t in b.tasks:
            note = index.notes.get(t.task)
            if note is not None and note.backend:
                b.notes.append(f"task {t.id} ({t.task}) needs a {note.backend} backend; it runs only where one is "
                               "configured (ORCHESTRATOR_SEARCH_BACKEND) and is refused at run time otherwise")
        return Plan(tasks=b.tasks, notes=b.notes)

    def _direct(self, b: _Build, c: _Choice) -> _Choice:
        """A task that reads the step's media as it is, instead of one that needs a converter first."""
        info = b.catalog.tasks[c.task]  # type: ignore[index]
        needs = {p.modality for p in info.inputs if not p.optional and p.modality in MEDIA}
        if not needs or c.row is None:
            return c
        have = [m.modality for m in c.step.mentions if m.kind == "file" and m.modality in MEDIA]
        if not have and not any(m.kind == "url" for m in c.step.mentions):
            near = next((o.modality for o in reversed(b.outs) if o.modality in MEDIA), None)
            have = [near] if near is not None else [mod for mod in b.resources.values() if mod in MEDIA][:1]
        if not have or needs & set(have):
            return c
        out = _main_output(info)

        def reads_as_it_is(other: TaskInfo) -> bool:
            o_needs = {p.modality for p in other.inputs if not p.optional and p.modality in MEDIA}
            return bool(o_needs) and o_needs <= set(have) and _main_output(other) is out

        return _best_within(b, c, self.direct_margin, reads_as_it_is)

    def _using_given(self, b: _Build, c: _Choice, given: list[Mention]) -> _Choice:
        """A task that reads every media file handed over before the step (and named by no later step)
        instead of one that leaves some unread, when it scores within ``feasible_margin``: the user gave
        them for this ("I have a.mp4 and vo.wav. Merge the voiceover into the clip")."""
        kinds = {m.modality for m in given}
        if len(kinds) < 2 or c.row is None or c.task is None:
            return c
        def reads_all(info: TaskInfo) -> bool:
            return kinds <= {p.modality for p in info.inputs if not p.optional}

        if reads_all(b.catalog.tasks[c.task]):
            return c
        return _best_within(b, c, self.feasible_margin, reads_all)

    def _reading_both(self, b: _Build, c: _Choice, modality: Modality) -> _Choice:
        """A task that reads two inputs of ``modality`` when the step does something to an earlier one
        with a file of its own ("give it the look of @0": the earlier picture and @0), instead of one that
        reads only one of them, when it scores within ``feasible_margin``."""
        if c.row is None or c.task is None or _reads(b.catalog.tasks[c.task], modality) >= 2:
            return c
        return _best_within(b, c, self.feasible_margin, lambda info: _reads(info, modality) >= 2)

    def _feasible(self, b: _Build, c: _Choice, name: str) -> bool:
        """Every required input of ``name`` can be fed: from the step, earlier outputs, resources or a converter."""
        info = b.catalog.tasks[name]
        have = {m.modality for m in c.step.mentions if m.kind == "file"} | {o.modality for o in b.outs}
        have |= set(b.resources.values())
        has_url = any(m.kind == "url" for m in c.step.mentions) or any(o.kind == URL for o in b.outs)
        for port in info.inputs:
            if port.optional:
                continue
            if port.name == "url":  # a file named as the thing to fetch ("download the clip @0"), of the kind it fetches
                makes = {p.modality for p in info.outputs}
                named = any(m.kind == "file" and m.modality in makes for m in c.step.mentions)
                if not (has_url or named or any(o.modality is Modality.TEXT for o in b.outs)):
                    return False
                continue
            if port.modality is Modality.TEXT or port.modality in have:
                continue
            if has_url and self._converter(b, c, URL, port.modality) is not None:
                continue
            if not any(self._converter(b, c, m.value, port.modality) for m in have if m in MEDIA):
                return False
        return True

    def _wire(self, b: _Build, c: _Choice) -> None:
        if c.row is not None and not self._feasible(b, c, c.task):  # type: ignore[arg-type]
            for j in np.argsort(-c.row)[:6]:
                name = b.index.tasks[int(j)]
                if name != NONE and name != c.task and float(c.row[j]) >= max(self.min_score, c.score - self.feasible_margin) \
                        and self._feasible(b, c, name):
                    c = _Choice(c.step, name, float(c.row[j]), c.row)
                    break
        c = self._direct(b, c)
        info = b.catalog.tasks[c.task]  # type: ignore[index]
        step = c.step
        free = [m for m in step.mentions]
        args: dict[str, object] = {}
        named = _named_ports(step, info)
        for name, m in named.items():  # "the style of @0"
            args[name] = m.value
            if m in free:
                free.remove(m)
        for port in sorted(info.inputs, key=lambda p: (p.optional, 0 if p.modality in MEDIA else 1)):
            if port.name in args:
                continue
            value = self._source(b, c, info, port.name, port.modality, port.many, port.optional, free)
            if value is None:
                if not port.optional:
                    article = "an" if port.modality in (Modality.IMAGE, Modality.AUDIO) else "a"
                    b.notes.append(f"{c.task} needs {article} {port.modality.value} for '{step.plain()[:80]}' "
                                   "and none was given")
                    return
                continue
            args[port.name] = value
        if not named:
            _content_first(step, info, args)
        tid = b.add(c.task, args)  # type: ignore[arg-type]
        b.said[tid] = [w.lower() for w in _WORD.findall(step.text)]

    def _source(self, b: _Build, c: _Choice, info: TaskInfo, name: str, modality: Modality, many: bool,
                optional: bool, free: list[Mention]) -> str | list[str] | None:
        if modality is Modality.TEXT:
            return self._text_source(b, c, info, name, optional, free)
        # 1. the step's own files of that modality
        own = [m for m in free if m.kind == "file" and m.modality is modality]
        if own:
            take = own if many else own[:1]
            for m in take:
                free.remove(m)
                b.used_resources.add(m.value)
            values = [m.value for m in take]
            if many and len(values) < 2:
                values += _in_order(b.earlier(modality, unused_only=True))
            return values if many else values[0]
        if optional:
            near = b.earlier(modality, unused_only=True)
            return (_in_order(near) if many else _ref(near[0])) if near else None
        # 2. the step's link, through a downloader
        urls = [m for m in free if m.kind == "url"]
        if urls:
            conv = self._converter(b, c, URL, modality)
            if conv is not None:
                free.remove(urls[0])
                out = self._convert(b, conv, urls[0].value, modality)
                return [out] if many else out
        # 3. the step's file of another modality, through a converter
        for m in [m for m in free if m.kind == "file" and m.modality in MEDIA]:
            conv = self._converter(b, c, m.modality.value, modality)
            if conv is not None:
                free.remove(m)
                b.used_resources.add(m.value)
                out = self._convert(b, conv, m.value, modality)
                return [out] if many else out
        # 4. the earlier output the step names by what was done to it, else the nearest of that modality
        named = b.named(c.step, modality)
        if named is not None and not many:
            return _ref(named)
        near = b.earlier(modality)
        if near:
            if many:
                return _in_order([o for o in near if not o.used] or near[:1])
            return _ref(near[0])
        # 5. an earlier output of another modality, through a converter
        for o in reversed(b.outs):
            if o.modality in MEDIA and o.modality is not modality:
                conv = self._converter(b, c, o.modality.value, modality)
                if conv is not None:
                    out = self._convert(b, conv, _ref(o), modality)
                    return [out] if many else out
        # 6. the user's resources (unused ones first), directly or converted
        res = sorted(b.resources.items(), key=lambda kv: kv[0] in b.used_resources)
        direct = [n for n, mod in res if mod is modality]
        if direct:
            b.used_resources.update(direct if many else direct[:1])
            return direct if many else direct[0]
        for n, mod in res:
            if mod in MEDIA:
                conv = self._converter(b, c, mod.value, modality)
                if conv is not None:
                    b.used_resources.add(n)
                    out = self._convert(b, conv, n, modality)
                    return [out] if many else out
        return None

    def _text_source(self, b: _Build, c: _Choice, info: TaskInfo, name: str, optional: bool,
                     free: list[Mention]) -> str | None:
        step = c.step
        quotes = [m for m in free if m.kind == "quote"]
        urls = [m for m in free if m.kind == "url"]
        if name == "url":
            if urls:
                free.remove(urls[0])
                return urls[0].value
            near = b.earlier(Modality.TEXT, URL) or b.earlier(Modality.TEXT)
            if near:
                return _ref(near[0])
            named = [m for m in free if m.kind == "file"]
            if named:  # "download the clip example.mp4": the name is what to fetch
                free.remove(named[0])
                return named[0].value
            return step.plain()  # the downloader finds the link in the text, or says it has none
        if name in _LITERAL_PORTS or optional:
            if optional and name not in _LITERAL_PORTS:
                return None
            if quotes:
                free.remove(quotes[0])
                return quotes[0].value
            earlier = b.earlier(Modality.TEXT)
            if earlier and _names_text(step):  # "speed it up following the extracted text"
                return _ref(b.named(step, Modality.TEXT) or earlier[0])
            return step.plain()
        if quotes:
            free.remove(quotes[0])
            return quotes[0].value
        notes = b.index.notes.get(info.task)
        if notes is not None and notes.produces == URL and urls:  # a link finder reads the link as text
            free.remove(urls[0])
            return step.plain() if urls[0].value in step.plain() else urls[0].value
        text_files = [m for m in free if m.kind == "file" and m.modality is Modality.TEXT]
        if text_files:
            free.remove(text_files[0])
            b.used_resources.add(text_files[0].value)
            return text_files[0].value
        inline = _after_colon(step)
        if inline:
            return inline
        generator = all(p.modality is not Modality.TEXT for p in info.outputs)
        texts = b.earlier(Modality.TEXT)
        if generator:
            content = _content_words(step)
            if texts and _names_text(step):
                return _ref(b.named(step, Modality.TEXT) or texts[0])
            if not texts or _CONTENT_PREP.search(step.text) or content >= 2:
                return _prompt(step)  # the step describes what to make
            if not texts[0].used or content == 0:
                return _ref(texts[0])  # "... then draw it": the earlier text, unless another step took it
            return _prompt(step)
        # a text processor: its link through a downloader, its media through a converter, else earlier text
        if urls:
            conv = self._converter(b, c, URL, Modality.TEXT)
            if conv is not None:
                free.remove(urls[0])
                return self._convert(b, conv, urls[0].value, Modality.TEXT)
        for m in [m for m in free if m.kind == "file"]:
            if m.modality is Modality.TEXT:
                free.remove(m)
                b.used_resources.add(m.value)
                return m.value
            conv = self._converter(b, c, m.modality.value, Modality.TEXT)
            if conv is not None:
                free.remove(m)
                b.used_resources.add(m.value)
                return self._convert(b, conv, m.value, Modality.TEXT)
        if texts and notes is not None and notes.backend == "search" and not _names_text(step) \
                and not language().back.search(step.text) and _content_words(step) >= 2:
            return _prompt(step)  # "find the best bakeries in Rome": the step says what to look for
        if texts:
            return _ref(b.named(step, Modality.TEXT) or texts[0])
        for o in reversed(b.outs):
            if o.modality in MEDIA and not o.used:
                conv = self._converter(b, c, o.modality.value, Modality.TEXT)
                if conv is not None:
                    return self._convert(b, conv, _ref(o), Modality.TEXT)
        return step.plain()

    # ------------------------------------------------------------------ converters
    def _converter(self, b: _Build, c: _Choice, source: str, target: Modality) -> str | None:
        """The task that turns ``source`` (a modality, or "url") into ``target``, the step's nearest in meaning."""
        best, best_score = None, -9.0
        for j, name in enumerate(b.index.tasks):
            if name == NONE:
                continue
            info = b.catalog.tasks[name]
            notes = b.index.notes.get(name)
            if notes is not None and notes.backend:
                continue
            required = [p for p in info.inputs if not p.optional]
            if len(required) != 1 or not any(p.modality is target and not p.many for p in info.outputs):
                continue
            port = required[0]
            if source == URL:
                ok = port.name == "url"
            else:
                ok = port.modality.value == source and port.name != "url" and port.modality is not target
            if not ok:
                continue
            score = float(c.row[j]) if c.row is not None else 0.0
            if score > best_score:
                best, best_score = name, score
        return best

    def _convert(self, b: _Build, task: str, value: str, target: Modality) -> str:
        info = b.catalog.tasks[task]
        port = next(p for p in info.inputs if not p.optional)
        tid = b.add(task, {port.name: value})
        out = next(o for o in b.outs if o.task == tid and o.modality is target)
        return _ref(out)


_SIGNATURES: dict[int, tuple[list[set[Modality]], list[set[Modality]]]] = {}


def _signatures(index: TaskIndex, catalog: TaskCatalog) -> tuple[list[set[Modality]], list[set[Modality]]]:
    """Per task of ``index``: the modalities of its required inputs and of its outputs."""
    key = id(index)
    hit = _SIGNATURES.get(key)
    if hit is None:
        ins, outs = [], []
        for name in index.tasks:
            info = catalog.tasks.get(name)
            ins.append({p.modality for p in info.inputs if not p.optional} if info else set())
            outs.append({p.modality for p in info.outputs} if info else set())
        hit = _SIGNATURES[key] = (ins, outs)
    return hit


def _keeps(index: TaskIndex, catalog: TaskCatalog, task: str, modality: Modality) -> bool:
    """``task`` reads ``modality`` and makes it again (it changes a thing of that kind)."""
    ins, outs = _signatures(index, catalog)
    j = index.tasks.index(task)
    return modality in ins[j] and modality in outs[j]


def _named_ports(step: Step, info: TaskInfo) -> dict[str, Mention]:
    """The step's files it names by an input's role ("the style of @0", "@0's style", "@0 as the style"),
    for inputs whose name is a role, not a modality."""
    out: dict[str, Mention] = {}
    for p in info.inputs:
        if p.many or p.modality not in MEDIA or language().modality_of(p.name) is not None:
            continue
        role = re.escape(p.name.replace("_", " "))
        m = re.search(rf"\b{role}\s+(?:of|from)\s+(?:[\w'-]+\s+){{0,3}}?@(\d+)\b|@(\d+)(?:'s)?\s+(?:as\s+(?:the|a|my)\s+)?"
                      rf"{role}\b", step.text, re.I)
        if m is not None:
            k = int(m.group(1) or m.group(2))
            if k < len(step.mentions) and step.mentions[k].kind == "file" and step.mentions[k].modality is p.modality:
                out[p.name] = step.mentions[k]
    return out


def _content_first(step: Step, info: TaskInfo, args: dict[str, object]) -> None:
    """Of a task's two inputs of one modality, the first is what the step does something to: where the
    step's own file is only what to take from ("give it the look of @0", "restyle it like @0") and the
    other input is what "it" points back to, the two change places."""
    if not language().back.search(step.text):
        return
    files = {m.value: k for k, m in enumerate(step.mentions) if m.kind == "file"}
    for modality in MEDIA:
        ports = [p.name for p in info.inputs if p.modality is modality and not p.many]
        if len(ports) != 2:
            continue
        first, second = (args.get(name) for name in ports)
        k = files.get(first) if isinstance(first, str) else None
        source = k is not None and re.search(rf"\b(?:of|like|from|with)\s+(?:[\w'-]+\s+){{0,2}}@{k}\b", step.text)
        if source and isinstance(second, str) and not re.search(rf"@{files.get(second, -1)}\b", step.text):
            args[ports[0]], args[ports[1]] = second, first


def _best_within(b: _Build, c: _Choice, margin: float, fits: Callable[[TaskInfo], bool]) -> _Choice:
    """The step's best-scoring other task that ``fits``, if it scores within ``margin`` of its task; else
    its task."""
    assert c.row is not None and c.task is not None
    best, best_score = None, float(c.row[b.index.tasks.index(c.task)]) - margin
    for j, name in enumerate(b.index.tasks):
        info = b.catalog.tasks.get(name)
        if name != c.task and info is not None and float(c.row[j]) > best_score and fits(info):
            best, best_score = name, float(c.row[j])
    return c if best is None else _Choice(c.step, best, best_score, c.row)


def _reads(info: TaskInfo, modality: Modality) -> int:
    """How many inputs of ``modality`` the task reads (2 for a port that takes many)."""
    return sum(2 if p.many else 1 for p in info.inputs if p.modality is modality)


def _transforms(info: TaskInfo) -> bool:
    """The task reads media or text of its own (not a generator from a prompt)."""
    return any(p.modality in MEDIA for p in info.inputs if not p.optional) or all(
        p.modality is Modality.TEXT for p in (*info.inputs, *info.outputs))


def _main_output(info: TaskInfo) -> Modality | None:
    return next((p.modality for p in info.outputs if p.modality in (Modality.TEXT, *MEDIA)), None)


def _hand_back(choices: list[_Choice], catalog: TaskCatalog) -> list[_Choice]:
    """Resources handed over after the last step that asks for something ("... The link is: @0")
    go to the first step whose task can read them."""
    last = max((i for i, c in enumerate(choices) if c.task is not None), default=-1)
    trailing = [m for c in choices[last + 1:] for m in c.step.mentions]
    if last < 0 or not trailing:
        return choices
    out = list(choices)
    for m in trailing:
        wanted = m.modality if m.kind == "file" else None
        for i, c in enumerate(out[: last + 1]):
            if c.task is None:
                continue
            ports = {p.modality for p in catalog.tasks[c.task].inputs}
            if (wanted in ports) if wanted is not None else bool(ports):
                out[i] = _Choice(_carry(c.step, [m]), c.task, c.score, c.row)
                break
    return out


def _drop_restated(got: list[_Choice], catalog: TaskCatalog, index: TaskIndex, margin: float) -> None:
    """A wish and a direct ask for the same task are one task ("I'd like the song bigger. Could you add
    reverb to it?"; "I want the page without its typos. Download it, fix its grammar and pull out the
    keywords"): the wish goes. A wish that hands over files (they go on to the next step) or asks for a
    generator (two pictures may be wished and asked for) goes only next to the ask; a wish after the ask
    goes when it hands over nothing. A direct ask right after the wish whose task scores within ``margin``
    of the wish's own on the wish's words says the same thing in plainer words ("I'd like to keep only the
    sound of my lecture. Can you pull the audio out of lecture.mp4?"): the wish goes too."""
    lang = language()
    asking = [i for i, c in enumerate(got) if c.task is not None]
    for n, i in enumerate(asking):
        a = got[i]
        if a.task is None or not lang.asks_for(a.step.text) or lang.asks_directly(a.step.text):
            continue
        # its files go on to the next step: only that one may be the ask, as for a generator's wish
        alone = a.step.mentions or _generates(catalog.tasks[a.task])
        later = asking[n + 1:n + 2] if alone else asking[n + 1:]

        def same(j: int) -> bool:
            task = got[j].task
            if task == a.task:
                return True
            return j == i + 1 and task is not None and a.close_to(task, index, margin) is not None

        if any(same(j) and lang.restates(a.step.text, got[j].step.text) for j in later):
            got[i] = _Choice(a.step, None, a.score)
    for i, j in zip(asking, asking[1:]):
        a, b = got[i], got[j]
        if a.task is not None and a.task == b.task and not b.step.mentions and lang.restates(b.step.text, a.step.text):
            got[j] = _Choice(b.step, None, b.score)


def _generates(info: TaskInfo) -> bool:
    """The task makes media from a description (its prompt is the step's own words)."""
    return all(p.modality is not Modality.TEXT for p in info.outputs) and all(
        p.modality is Modality.TEXT for p in info.inputs if not p.optional)


def _carry(step: Step, extra: list[Mention]) -> Step:
    """``step`` with ``extra`` resources appended (not in its text: they rank after its own)."""
    return replace(step, mentions=step.mentions + [m for m in extra if m not in step.mentions])


def _join(a: Step, b: Step, same_sentence: bool = True) -> Step:
    shift = len(a.mentions)
    text_b = re.sub(r"@(\d+)\b", lambda m: f"@{int(m.group(1)) + shift}", b.text)
    tail_b = len(re.sub(r"@(\d+)\b", lambda m: f"@{int(m.group(1)) + shift}", b.text[len(b.text) - b.tail:]))
    return Step(f"{a.text} {'to' if same_sentence else '.'} {text_b}", a.mentions + b.mentions, b.sentence, a.apart,
                done=a.done + b.done, tail=tail_b if b.tail else 0)


_EARLIER_TEXT: re.Pattern[str] | None = None


def _generic_text(text: str) -> str:
    """An earlier text named by its kind ("the transcript") reads as "the text": what the step does to
    it decides the task, not the kind of text ("summarize the transcript" is no transcription). What a
    making verb makes is no earlier text ("extract the keywords", "write the summary")."""
    global _EARLIER_TEXT
    if _EARLIER_TEXT is None:
        nouns = "|".join(sorted(language().text_nouns - {"text"}, key=len, reverse=True))
        _EARLIER_TEXT = re.compile(rf"\b(the|this|that|its|their|these|those)\s+(?:{nouns})s?\b(?!\s+(?:of|from|in)\b)")
    makes = language().makes_named

    def kind(m: re.Match[str]) -> str:
        # "give me the ...", "pull out its ...": the verb before the object and its particle
        before = [w for w in _WORD.findall(text[:m.start()]) if w.lower() not in ("me", "us", "out", "up", "off")]
        return m.group(0) if before and before[-1].lower() in makes else f"{m.group(1)} text"

    return _EARLIER_TEXT.sub(kind, text)


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _after_colon(step: Step) -> str | None:
    text = step.plain()
    if ":" in text and not re.search(r"https?:", text.split(":", 1)[0] + ":"):
        tail = text.split(":", 1)[1].strip()
        if len(tail.split()) >= 3:
            return tail
    return None


def _content_words(step: Step) -> int:
    lang = language()
    words = [w.lower() for w in _WORD.findall(step.for_matching())]
    skip = set(_STOP) | lang.text_nouns
    for mod_words in lang.modality_words.values():
        skip |= mod_words
    return sum(1 for w in words if w not in skip and not lang.verb_start.match(w))


_LINKING = frozenset({"of", "a", "an", "to", "in", "on", "for", "with", "and", "or", "from", "into", "as", "by"})


# "these" / "those" and a noun (one word before it at most) that ends its phrase ("a voiceover of those points to
# @0", "videos about these ideas"); not a description that goes on ("these two horses racing on a beach"); the
# noun must name parts of a text (``text_parts``: "points", not "horses")
_POINTING_BACK = re.compile(r"\b(?:these|those)\s+((?:[a-z-]+\s+)?[a-z-]+)(?=\s*$|\s*[,.;:!?]|\s+(?:to|into|onto|over|"
                            r"under|in|on|for|as|with|and|then|from|at|by|so|please)\b)", re.I)


def _names_text(step: Step) -> bool:
    """The step names an earlier text ("the caption", "this summary", "the result")."""
    words = [w.lower() for w in _WORD.findall(step.text)]
    lang = language()
    for i, w in enumerate(words):
        if w.rstrip("s") in lang.text_nouns or w in lang.text_nouns:
            if i > 0 and words[i - 1] in ("the", "this", "that", "its", "their", "these", "those", "generated",
                                          "resulting", "extracted", "above"):
                return True
            if i > 1 and words[i - 2] in ("the", "this", "that", "its", "their"):
                return True  # "the translated text", "this corrected transcript", "the mood text"
            if i > 2 and words[i - 3] in ("the", "this", "that", "its", "their") and not (
                    {words[i - 2], words[i - 1]} & _LINKING):
                return True  # "the sentiment analysis outcome"
    for m in _POINTING_BACK.finditer(step.text):  # "a voiceover of those points to @0": parts of a text
        if m.group(1).split()[-1].lower().rstrip("s") in lang.text_parts:
            return True
    return bool(re.search(r"\b(?:based on (?:it|this|that)|from (?:it|this|that)|use (?:it|this|that)|using (?:it|this|that))\b",
                          step.text, re.I))


def _prompt(step: Step) -> str:
    """The description in a generation step: the step without its instruction words (language.toml [prompt])."""
    return language().prompt_of(step.plain())

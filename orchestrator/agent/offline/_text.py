"""Reading a request: literal resources (files, URLs, quoted text) and the steps it asks for."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources as _pkg
from typing import Literal

from orchestrator.artifacts import Modality

from ..plan import resource_modality

__all__ = ["Language", "Mention", "Step", "find_mentions", "language", "split_steps"]

_EXT = r"jpe?g|png|gif|bmp|webp|tiff?|wav|mp3|flac|ogg|m4a|aac|opus|mp4|avi|mov|mkv|webm|m4v|txt|md"
_URL = re.compile(r"\b(?:https?://|www\.)[^\s'\"<>()\[\]]+"
                  r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|ly|co|edu|gov|info|me|tv|app|dev)/[^\s'\"<>()\[\]]*",
                  re.I)
_FILE = re.compile(rf"(?<![\w/.:-])(/?(?:[\w\-]+/)*[\w\-]+\.(?:{_EXT}))(?![\w/])", re.I)
_QUOTE = re.compile(r"(?<![A-Za-z0-9])'((?:[^'\n]|(?<=[A-Za-z])'(?=[A-Za-z])){2,}?)'(?![A-Za-z0-9])"
                    r"|\"([^\"\n]{2,}?)\"|“([^”\n]{2,}?)”|‘([^’\n]{2,}?)’")

MentionKind = Literal["file", "url", "quote", "name"]  # "name": a file name to give a result ("save it as @0")


@dataclass(frozen=True)
class Mention:
    """A literal resource in the request: a file (or a known resource name), a URL or a quoted text."""

    kind: MentionKind
    value: str
    start: int
    end: int
    modality: Modality


@dataclass
class Step:
    """One thing the request asks for: its text (resources masked as ``@0``, ``@1`` ...) and resources."""

    text: str
    mentions: list[Mention] = field(default_factory=list)
    sentence: int = 0
    apart: bool = False  # reads what the step before it read ("..., and separately ...", "both ... and ...")
    hands: bool = False  # asks nothing, only hands its resources to the steps after it ("Steps for @0:")
    done: tuple[str, ...] = ()  # words naming an earlier step's result by what it did ("the reverbed track")
    tail: int = 0  # last characters of ``text``, moved there, that only say what it works on ("From the new cut, ...")


    @property
    def said(self) -> str:
        """``text`` without its ``tail``: the words that say what to do."""
        return self.text[:len(self.text) - self.tail]

    def plain(self) -> str:
        """The step's text with each resource written back."""
        return _unmask(self.text, self.mentions)

    def for_matching(self) -> str:
        """The step's text with each resource replaced by a word for its kind (for the matcher)."""
        words = {Modality.IMAGE: "the image", Modality.AUDIO: "the audio", Modality.VIDEO: "the video"}

        def word(m: Mention) -> str:
            if m.kind == "url":
                return "the link"
            if m.kind == "quote":
                return "the text"
            return words.get(m.modality, "the text file")

        text = _MASK.sub(lambda mt: word(self.mentions[int(mt.group(1))]), self.said)
        if self.done:  # they name the task that made the thing, not this step's task
            text = re.sub(r"\s*\b(?:" + "|".join(map(re.escape, self.done)) + r")\b", "", text)
        return text


_MASK = re.compile(r"@(\d+)\b")


def _unmask(text: str, mentions: list[Mention]) -> str:
    return _MASK.sub(lambda mt: mentions[int(mt.group(1))].value, text)


def url_modality(url: str) -> Modality | None:
    """The media modality a link's file extension names, if any."""
    return resource_modality(url.split("?")[0].split("#")[0])


def find_mentions(text: str, known: Mapping[str, Modality] | None = None) -> list[Mention]:
    """Files, URLs, quoted texts and ``known`` resource names in ``text``, in order of position."""
    out: list[Mention] = []

    def free(a: int, b: int) -> bool:
        return all(b <= m.start or a >= m.end for m in out)

    for name in sorted(known or {}, key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text):
            if free(m.start(), m.end()):
                out.append(Mention("file", name, m.start(), m.end(), (known or {})[name]))
    for a, b in _dictated(text):
        if free(a, b):
            out.append(Mention("quote", text[a:b], a, b, Modality.TEXT))
    for m in _QUOTE.finditer(text):
        gi = next(i for i, g in enumerate(m.groups(), start=1) if g is not None)
        value = m.group(gi).strip()
        if value and free(m.start(), m.end()):
            modality = resource_modality(value)
            if _URL.fullmatch(value):
                out.append(Mention("url", value, m.start(), m.end(), Modality.TEXT))
            elif modality is not None and len(value) < 120 and "\n" not in value and value.count(" ") < 4:
                out.append(Mention("file", value, m.start(), m.end(), modality))  # 'my photo.png'
            else:
                out.append(Mention("quote", value, m.start(), m.end(), Modality.TEXT))
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?")
        if free(m.start(), m.start() + len(url)):
            out.append(Mention("url", url, m.start(), m.start() + len(url), Modality.TEXT))
    for m in _FILE.finditer(text):
        modality = resource_modality(m.group(1))
        if modality is not None and free(m.start(1), m.end(1)):
            out.append(Mention("file", m.group(1), m.start(1), m.end(1), modality))
    return sorted(out, key=lambda m: m.start)


_QUOTE_CHARS = "'\"“‘"
_WORDS_IN = re.compile(r"(?:off|from|in|on|of|out\s+of|inside|within|written|printed|shown|that appear)\b", re.I)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n")


def _dictated(text: str) -> list[tuple[int, int]]:
    """Spans of unquoted words to speak: after "read this aloud:", "narrate:", "... saying" (to the sentence end).

    After a colon the text runs on over the next sentences until one starts a new step
    (a connector or a verb); a quoted text is left to the quote rule.
    """
    lang = language()
    spans: list[tuple[int, int]] = []
    for m, runs_on in [(m, True) for m in lang.dictate_colon.finditer(text)] + [
            (m, False) for m in lang.dictate_lead.finditer(text)]:
        start = m.end()
        if start >= len(text) or text[start] in _QUOTE_CHARS:
            continue
        if not runs_on and not lang.speech_cue.search(text[max(0, m.start() - 80):m.start()]):
            continue  # "a sign saying ..." is a description, not words to speak
        if not runs_on and _WORDS_IN.match(text, start):
            continue  # "read the words printed on @0": words in something, not words to speak
        end = len(text)
        for e in _SENTENCE_END.finditer(text, start):
            end = e.end() if text[e.start()] != "\n" else e.start()
            rest = text[end:].lstrip()
            if not runs_on or not rest or lang.connector.match(" " + rest) or lang.verb_start.match(rest):
                break
        else:
            end = len(text)
        value_end = end if runs_on else len(text[:end].rstrip(" .!?"))
        if len(text[start:value_end].split()) >= 1 and text[start:value_end].strip():
            spans.append((start, value_end))
    return spans


@dataclass(frozen=True)
class Cues:
    """What a step's modality words say: the modality it makes (``target``: said as "into X" / "as X"),
    those it reads, and every one it names."""

    made: Modality | None
    read: set[Modality]
    named: set[Modality]
    target: bool = False
    bare: bool = False  # the step is only a modality ("-> text", "an image"): make it from what came before


@dataclass(frozen=True)
class Language:
    """The cue words of language.toml, compiled."""

    connector: re.Pattern[str]
    verbs: frozenset[str]  # the verbs that start a step, with their -s, -ed and -ing forms
    base_verbs: frozenset[str]  # those of five letters or more, as listed (what a misspelling is mended to)
    before: re.Pattern[str]  # what follows goes before the step said just before ("but first, ...")
    after: re.Pattern[str]  # the sentence goes after the rest ("X afterwards; ...", "Finally X. ...")
    apart: re.Pattern[str]  # what follows reads what the step before read ("..., and separately ...")
    both: re.Pattern[str]  # "(please) both summarize it and ...": the next step reads what this one read
    verb_start: re.Pattern[str]
    verb_glue: re.Pattern[str]
    back: re.Pattern[str]
    text_nouns: frozenset[str]
    text_parts: frozenset[str]  # what a text is made of ("points", "ideas"): "those points" is a text
    vague_nouns: frozenset[str]  # nouns that name no kind of thing ("this task", "these jobs")
    modality_words: dict[Modality, frozenset[str]]
    none_phrasings: tuple[str, ...]
    words: tuple[str, ...] = ()
    making: frozenset[str] = frozenset()
    taking: frozenset[str] = frozenset()  # making verbs that take what they make out of a thing
    makes_named: frozenset[str] = frozenset()  # verbs whose object, a kind of text, is what they make
    possession: re.Pattern[str] | None = None
    narrates: re.Pattern[str] = re.compile(r"(?!)")
    describes: re.Pattern[str] = re.compile(r"(?!)")
    finds: re.Pattern[str] = re.compile(r"(?!)")
    finds_in: re.Pattern[str] = re.compile(r"(?!)")
    returns: re.Pattern[str] = re.compile(r"(?!)")  # a step only going back to a thing given before
    creates: re.Pattern[str] = re.compile(r"(?!)")  # a step opening with a verb that makes something new
    only_where: re.Pattern[str] = re.compile(r"(?!)")  # a search that names only where to look ("search the web")
    vague: re.Pattern[str] = re.compile(r"(?!)")  # an ask whose object only points back ("could you do this")
    detail: re.Pattern[str] = re.compile(r"(?!)")  # a clause that only says how a thing should come out
    idle_wish: re.Pattern[str] = re.compile(r"(?!)")
    delivers: re.Pattern[str] = re.compile(r"(?!)")
    lengths: tuple[tuple[re.Pattern[str], str], ...] = ()
    to_language: re.Pattern[str] = re.compile(r"(?!)")
    verb_makes: tuple[tuple[re.Pattern[str], Modality], ...] = ()
    asks: re.Pattern[str] | None = None
    direct: re.Pattern[str] = re.compile(r"(?!)")
    attempted: re.Pattern[str] = re.compile(r"(?!)")
    only_fillers: re.Pattern[str] = re.compile(r"(?!)")
    tag_question: re.Pattern[str] = re.compile(r"(?!)")
    acting: re.Pattern[str] = re.compile(r"(?!)")  # an action named in the step ("in downloading it", "to trim it")
    help_asks: re.Pattern[str] = re.compile(r"(?!)")
    adds: re.Pattern[str] = re.compile(r"(?!)")
    presents: re.Pattern[str] = re.compile(r"(?!)")
    opens: re.Pattern[str] = re.compile(r"(?!)")
    purpose: re.Pattern[str] = re.compile(r"(?!)")
    dictate_colon: re.Pattern[str] = re.compile(r"(?!)")
    dictate_lead: re.Pattern[str] = re.compile(r"(?!)")
    speech_cue: re.Pattern[str] = re.compile(r"(?!)")
    prompt_lead: re.Pattern[str] = re.compile(r"(?!)")
    prompt_verb: re.Pattern[str] = re.compile(r"(?!)")
    prompt_frame: re.Pattern[str] = re.compile(r"(?!)")
    prompt_tail: re.Pattern[str] = re.compile(r"(?!)")
    framing: frozenset[str] = frozenset()
    generic: frozenset[str] = frozenset()  # modality words that name nothing more ("text", "audio", "picture")
    ambiguous: frozenset[str] = frozenset()  # modality words that are other parts of speech too ("still")
    not_noun_after: frozenset[str] = frozenset()  # words after which those are no nouns ("that still keeps")
    frame_glue: re.Pattern[str] = re.compile(r"(?!)")
    negated: re.Pattern[str] = re.compile(r"(?!)")  # "don't change the speed", "no need to ..."
    by_self: re.Pattern[str] = re.compile(r"(?!)")  # "I'll do it myself", "I already have the transcript"
    keeps: re.Pattern[str] = re.compile(r"(?!)")  # "I want to frame it", "so I can play it in class"
    language_word: re.Pattern[str] = re.compile(r"(?!)")  # a language's name anywhere

    def prompt_of(self, text: str) -> str:
        """A generator's prompt: ``text`` without request words, the verb and a frame ("an image of").

        Adjectives of the frame that describe the content stay, at the end
        ("a realistic image of a cat" -> "a cat, realistic"); descriptive commas stay.
        """
        t = self.prompt_tail.sub("", text.strip()).rstrip(" .!?,;")
        t = self.prompt_lead.sub("", t, count=1)
        verb = self.prompt_verb.match(t)
        if verb:
            t = t[verb.end():]
        frame = self.prompt_frame.match(t) if verb or t == text.strip() else None
        if frame is None and not verb:
            frame = self.prompt_frame.search(t)
        if frame is not None and frame.group("rest").split():
            kept = [w for w in frame.group("adj").split()
                    if not any(part in self.framing or part.isdigit() for part in w.lower().split("-"))]
            t = frame.group("rest") + (", " + " ".join(kept) if kept else "")
        t = t.strip(" ,;:")
        return t if t.split() else text.strip().rstrip(" .!?")

    def only_states(self, text: str) -> bool:
        """The step only says what the user has ("I have a photo of ...") or hands over a resource
        ("The text is: @0", "Here it is: @0")."""
        if not re.search(r"[A-Za-z]{2,}", _MASK.sub("", text)):
            return True  # only resources ("photo.jpg -> caption -> French")
        text = self._without_idle_clause(text)
        plain = _HEDGES.sub("", text)
        if self.opens.match(plain):
            return True  # "could you take @0": only the file, however politely
        if self.returns_to(plain):
            return True  # "please go back to @0": only the file again, however politely
        if self.asks and self.asks.search(text):
            return False
        if self.possession and self.possession.match(plain):
            return not self.purpose.search(plain)  # "use the notes in @0 to draw ...": an ask
        if self.delivers.match(plain) and not self.names_language(plain):
            return True  # "put it into German" is no hand-back
        return bool("@" in text and self.presents.match(plain) and not self.verb_start.match(plain))

    def returns_to(self, text: str) -> bool:
        """The step only goes back to a thing given before ("please go back to @0", "then take the original
        photo"), in a few words that ask nothing else."""
        m = self.returns.match(_HEDGES.sub("", text))
        rest = m.string[m.start("back"):] if m else ""
        return bool(rest) and len(rest.split()) <= 6 and not (self.asks and self.asks.search(rest)) and (
            not self.purpose.search(rest))

    def _without_idle_clause(self, text: str) -> str:
        """``text`` without what asks for no task: a relative clause that only says what the user will do
        with a thing ("a clip that I'd love to use", "a talk which I want to revisit"), and a call for help
        that says nothing of what to do ("... and I need your help")."""
        text = self.help_asks.sub("", text)
        m = _RELATIVE.search(text)
        if m is None or self.idle_wish.search(m.group(1)) is None:
            return text
        return text[:m.start()]

    def narrative(self, text: str) -> bool:
        """The step tells what the user did or is doing ("I've found ...", "I'm preparing a talk") and
        neither asks nor says what for: scene-setting, not a task (unless nothing else is asked)."""
        text = self._without_idle_clause(text)
        plain = _HEDGES.sub("", text)
        tried = self.attempted.match(plain)
        if tried:  # "I've been trying to make a slideshow": what was attempted, not an ask
            text = plain = plain[tried.end():]
        elif not self.narrates.match(plain):
            return False
        return not (self.asks and self.asks.search(text)) and not self.purpose.search(plain)

    def declines(self, text: str) -> bool:
        """The step says what not to do ("no need to transcribe it"), what the user does or did themselves
        ("I'll summarize it myself", "I already cleaned the noise") or will do with the result ("I want to
        frame it", unless it says what to make for that): it asks for nothing."""
        kept = self.keeps.match(text)
        if kept:  # "... to make a poster", "... as a video", "... in Spanish": it says what to make
            rest = text[kept.end("keep"):]
            kept = None if (self.purpose.search(rest) or self.says_verb(kept.group("tail") or "")
                            or _AS_KIND.search(rest) or self.language_word.search(rest)) else kept
        return bool(self.negated.match(text) or kept or (self.by_self.search(text) and not self.asks_for(text)))

    def says_verb(self, text: str) -> bool:
        """A word of ``text`` is one of the verbs that start a step, in any of its forms."""
        return any(w in self.verbs for w in re.findall(r"[a-z]+", text.lower()))

    def narrows(self, text: str) -> bool:
        """The step only narrows what an earlier one asked ("only the picture please"): no file, no verb."""
        return _ONLY.match(text) is not None and "@" not in text and not self.says_verb(text)

    def description(self, text: str) -> bool:
        """The step describes a thing ("the audio is noisy", "@0 seems slow") and does not ask: what it
        wants is said by another step, when one asks."""
        return bool(self.describes.match(text)) and not self.asks_for(text)

    def seeks(self, text: str) -> bool:
        """The step asks to find what exists ("look for pictures of otters"), not to find something in
        what was given ("find the link in it", "find it")."""
        return bool(self.finds.search(text)) and not self.finds_in.search(text)

    def _unled(self, text: str) -> str:
        """``text`` without the request words before it ("could you", "please")."""
        return self.prompt_lead.sub("", text.strip())

    def searches_only_where(self, text: str) -> bool:
        """The step says only where to search ("could you browse the web", "go online"), not what
        for: what to find is in the step after it."""
        return bool(self.only_where.match(self._unled(text)))

    def points_back_only(self, text: str) -> bool:
        """The step asks for what was said before and names nothing of its own: a vague verb whose object
        only points back ("could you help with creating this rendition?", "would you sort out these jobs?"), not
        a kind of thing to make ("could you make this video?", "could you do these drawings?"): the object's
        noun, if any, is one of ``vague_nouns``."""
        m = self.vague.match(self._unled(text))
        if m is None:
            return False
        head = m.group("head")
        return head is None or head.lower() in self.vague_nouns

    def only_how(self, text: str) -> bool:
        """The step only says how a thing should come out ("make it sound calmer", "give the voice a warmer
        feel"), not what to do to it."""
        return bool(self.detail.match(self._unled(text)))

    def asks_for(self, text: str) -> bool:
        """The step asks in so many words: a request phrase ("could you", "I need") or an imperative verb."""
        text = self.help_asks.sub("", text)
        return bool((self.asks and self.asks.search(text)) or self.verb_start.match(text) or any(
            self.verb_start.match(text[m.end():]) for m in _SO_THEN.finditer(text)))  # "it's long, so cut it"

    def asks_directly(self, text: str) -> bool:
        """The step puts the ask to the listener ("could you ...", "please ...", an imperative verb),
        not only says what the user wants ("I'd like ...")."""
        return bool(self.direct.search(text) or self.verb_start.match(text))

    def restates(self, wish: str, ask: str) -> bool:
        """``ask`` asks directly for what the wish ``wish`` only said the user wants, and adds nothing
        ("I want the song to sound bigger. Can you add reverb to it?"): one task, said twice."""
        return (self.asks_for(wish) and not self.asks_directly(wish) and self.asks_directly(ask)
                and not self.adds.search(ask))

    def names_language(self, text: str) -> bool:
        """The step says which language a text goes into ("into French", "to Japanese")."""
        return bool(self.to_language.search(text))

    def length_of(self, text: str) -> str | None:
        """Which way the step takes a text's length ("shorter" / "longer"), when it says one way only."""
        ways = {way for pattern, way in self.lengths if pattern.search(text)}
        return next(iter(ways)) if len(ways) == 1 else None

    def modality_of(self, word: str) -> Modality | None:
        w = word.lower()
        for mod in (Modality.VIDEO, Modality.AUDIO, Modality.IMAGE, Modality.TEXT):
            if w in self.modality_words[mod]:
                return mod
        return None

    def cues(self, text: str) -> Cues:
        """Modality cues of a step: what it makes (and whether it says so with "into X" / "as X"),
        what it reads, and every modality it names."""
        words = re.findall(r"[A-Za-z]+", text.lower())
        made: Modality | None = None
        target = False
        read: set[Modality] = set()
        named: set[Modality] = set()
        making_at = -10
        for i, w in enumerate(words):
            if w in self.making:
                making_at = i
            mod = self.modality_of(w)
            if mod is None or (w in self.ambiguous and (i == 0 or words[i - 1] in self.not_noun_after)):
                continue
            named.add(mod)
            before = words[max(0, i - 3):i]
            if ("into" in words[max(0, i - 4):i] or "as" in before) and not target:  # a named target outranks a made word
                made, target = mod, True
            elif _after_to(before) or (before[-1:] == ["in"]):  # "in words": the form
                made = made or mod
            elif any(b in ("from", "in", "of", "on", "within", "inside") for b in before):
                read.add(mod)
            elif i - making_at <= 4 and made is None:
                made = mod
        fixed = next((mod for pattern, mod in self.verb_makes if pattern.search(text)), None)
        if fixed is not None and not target:  # "write out the speech" makes text; "write it out as audio" audio
            made = fixed
        content = [w for w in words if w not in ("a", "an", "the", "some", "then", "to", "into", "as", "and", "in")]
        if len(content) == 1 and content[0] in self.generic:  # "-> text", "an image": that modality, from what came before
            return Cues(next(iter(named)), read, named, True, True)
        return Cues(made, read, named, target)


_PRONOUNS = "it|them|this|that|these|those"
_DO_FIRST = re.compile(r"^(?P<body>.*?\S)\s+first(?:\s+of\s+all)?\b(?=\s*(?:[,;:!?.)-]|$))", re.I)  # "... do X first"
_THEN_NEXT = re.compile(r"\s*[,;]?\s*(?:and\s+)?(?:then|after\s+that|afterwards|next)\b", re.I)  # "X first, then Y"
def _mended(lang: Language, word: str, known: Container[str]) -> str:
    """``word``, or the step verb it misspells: outside ``known``, no form of a verb, and within a
    difflib ratio of 0.85 of one verb of the list with the same first letter."""
    w = word.lower()
    if w in known or w in lang.verbs or w.endswith(("ing", "ed", "s")):
        return word
    fix = _MENDS.get(w)
    if fix is None:
        near = [v for v in lang.base_verbs if v[0] == w[0] and abs(len(v) - len(w)) <= 2]
        got = difflib.get_close_matches(w, near, n=1, cutoff=0.85)
        fix = got[0] if got and not w.startswith(got[0][:-1]) else ""
        if len(_MENDS) < 50_000:
            _MENDS[w] = fix
    return fix or word


_MENDS: dict[str, str] = {}  # a word outside the vocabulary -> the verb it misspells, or ""


_SO_THEN = re.compile(r"\b(?:so|then)\s+", re.I)
# words that do not change what a step states or asks ("I also have ...", "I've just found ...")
_HEDGES = re.compile(r"\b(?:also|just|already|recently|actually|really|now|currently)\s+", re.I)
# "a clip that I'd love to use": the clause after the noun (group 1 from the wish on)
_RELATIVE = re.compile(r"\s*,?\s*\b(?:that|which)\s+(?:i|we)\s*((?:'d|would|really|want|wanted|need|love|like|hope|plan)\b.*)$",
                       re.I)
_DETERMINERS = frozenset({"a", "an", "the", "some", "one", "my", "your", "our", "its", "their", "this", "that"})


def _after_to(before: list[str]) -> bool:
    """The modality word is the object of "to" ("to the audio"), not of a verb after an infinitive's "to"."""
    return before[-1:] == ["to"] or (len(before) >= 2 and before[-2] == "to" and before[-1] in _DETERMINERS)


def _gerund(verb: str) -> str:
    """The -ing form of a one-word verb ("create" -> "creating", "trim" -> "trimming", "add" -> "adding")."""
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    short = len(verb) == 3 or (len(verb) == 4 and verb[0] not in "aeiou")  # "cut", "trim"; not "edit"
    if short and verb[-1] not in "aeiouwxy" and verb[-2] in "aeiou" and verb[-3] not in "aeiou":
        return verb + verb[-1] + "ing"
    return verb + "ing"


_THING = r"(?:it|them|this|that|(?:the|its|their|this|that)\s+[a-z-]+)"  # what a detail is about
_NOT_NOUN = r"(?:into|in|to|on|onto|as|for|with|from|by|at|of|together|happen|done|please|now)\b"


def _verb_forms(verb: str) -> tuple[str, ...]:
    """A verb (its first word) as written, with -s and as a gerund ("put together", "putting together")."""
    first, _, rest = verb.partition(" ")
    tail = f" {rest}" if rest else ""
    return verb, f"{first}s{tail}", f"{_gerund(first)}{tail}"


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(set(words), key=len, reverse=True))


def _phrasal(words: Iterable[str]) -> str:
    """:func:`_alternation`, where a verb and its particle may have a few words between them ("boil the
    notes down", "flesh it out")."""
    return "|".join(re.sub(r"\\s\+(down|out|up)$", r"(?:\\s+[\\w'@]+){0,3}?\\s+\1", p)
                    for p in _alternation(words).split("|"))


@lru_cache(maxsize=1)
def language() -> Language:
    """Load language.toml once."""
    data = tomllib.loads(_pkg.files(__package__).joinpath("language.toml").read_text(encoding="utf-8"))
    split, refer = data["split"], data["refer"]
    verbs = _alternation(split["verbs"])
    fillers = _alternation(split["fillers"])
    gerunds = _alternation(_gerund(v) for v in split["verbs"] if " " not in v and v not in split.get("not_gerunds", ()))
    lead = rf"(?:(?:{fillers})\s+)*"
    a_verb = rf"{lead}(?:{verbs})\b"  # a step's verb, after words that only ask ("please just trim ...")
    where_verbs = _alternation(f for v in data["find"]["where_verbs"] for f in (v, v + "s", _gerund(v)))
    vague_verbs = _alternation(f for v in data["none"]["vague_verbs"] for f in _verb_forms(v))
    detail = data["detail"]
    # leads are patterns (a role: "as a [a-z-]+"), not words
    lead_ins = "|".join(sorted(data["none"]["leads"], key=len, reverse=True)).replace(" ", r"\s+")
    leads = rf"(?:(?:{lead_ins})\W+)*"
    help_asks = (rf"\b(?:i|we)(?:\s+|(?='))(?:really\s+|also\s+|just\s+)?(?:{_alternation(data['none']['help_wants'])})\s+"
                 rf"(?:(?:your|some|a\s+little|a\s+bit\s+of|any)\s+)?(?:{_alternation(data['none']['help_nouns'])})\b"
                 r"(?:\s+(?:with|on)\s+(?:this|that|it|something|a\s+few\s+things))?(?:\s+(?:please|here))?")
    return Language(
        both=re.compile(rf"^\W*{lead}both\s+{a_verb}", re.I),
        apart=re.compile(rf"(?:,\s*|\s+|^)(?:(?:and|but)\s+)?\b(?:{_alternation(split['apart'])}|"
                         rf"(?P<weak>{_alternation(split['apart_unless_it'])}))\b"
                         rf"(?:\s*,\s*|\s+(?={a_verb}))", re.I),
        after=re.compile(rf"\b(?:{_alternation(split['after_end'])})\W*$|^\W*(?:{_alternation(split['after_start'])})\b"
                         r"(?!\s+of\b)", re.I),
        negated=re.compile(rf"^\W*{leads}(?:(?:please|but|and|just|so|also|oh|and\s+please)\W+)*"
                           rf"(?:{_alternation(data['none']['negations'])})\b"
                           r"(?!\s+(?:forget|hesitate|be\s+afraid|fail|miss|just|only|merely|simply)\b)(?![^@]*@)"
                           r"(?![^@]*\b(?:but|just|only|instead|rather|though|simply)\b)", re.I),
        by_self=re.compile(rf"\b(?:i|we)(?:'ll|\s+will|\s+can|'m\s+going\s+to|\s+am\s+going\s+to|\s+are\s+going\s+to"
                           rf"|'d\s+rather|\s+would\s+rather|\s+plan\s+to)\b.*\b(?:{_alternation(data['none']['selves'])})\b"
                           r"(?=\s*(?:later|afterwards|after\s+that|tomorrow|then|too|as\s+well)?\s*(?:[,.;!?]|$))"
                           rf"|\b(?:{_alternation(data['none']['already'])})\b", re.I),
        language_word=re.compile(rf"\b(?:{_alternation(data['languages']['names'])})\b", re.I),
        keeps=re.compile(rf"^\W*{leads}(?:(?:and|so|then|but)\s+)?(?:i|we)(?:'ll|'d|'m|\s+will|\s+would|\s+can|\s+could|\s+am|\s+are)?"
                         rf"(?:\s+(?:really|also|just|then|finally))?\s+(?:(?:{_alternation(data['none']['wishes'])}|going|"
                         rf"be\s+able)\s+to\s+)?(?P<keep>{_alternation(data['none']['keeps'])})"
                         r"(?:\s+(?:it|them|this|that|these|those|(?:the|my|our)\s+(?:result|results|file|files|version|"
                         r"copy|output|one|ones)))?\b(?:\s+(?:for|on|in|at|to|with|as|during|onto|later|tomorrow|tonight|"
                         r"again|afterwards|there|here|every|each|when|while|before|after)\b(?P<tail>[^@:]*))?\W*$", re.I),
        verbs=frozenset(f for v in split["verbs"] if " " not in v for f in (*_verb_forms(v), v + "d", v + "ed")),
        base_verbs=frozenset(v for v in split["verbs"] if " " not in v and len(v) >= 5),
        before=re.compile(rf"(?:^|(?<=[\s,;:-]))(?:(?:but|and|so)\s+)?\b(?:(?P<all>{_alternation(split['before_all'])})|"
                          rf"{_alternation(split['before'])})\b"
                          rf"(?:\s*[,:]\s*|\s+(?={a_verb}))", re.I),
        connector=re.compile(rf"(?:,\s*|\s+|^)\b(?:{_alternation(split['connectors'])})\b(?!\s+of\b)[,:]?\s*"
                             # "and after, ..." / "and after take ...": "after" alone names no time of its own
                             rf"|(?:,\s*|\s+)and\s+after(?=\s*,|\s+{a_verb}),?\s*", re.I),
        acting=re.compile(rf"\b(?:{gerunds})\b|\bto\s+(?:{verbs})\b", re.I),
        tag_question=re.compile(rf"(?:^|,)\s*(?:and\s+|but\s+)?(?:{_alternation(data['none']['tag_questions'])})\s*[?.!]*\s*$",
                                re.I),
        only_fillers=re.compile(rf"^(?:(?:{fillers})\W*)+$", re.I),
        verb_start=re.compile(rf"^\s*{lead}(?:{verbs})(?:s|es)?\b", re.I),
        verb_glue=re.compile(rf"(?:,\s*(?:and\s+)?|\s+and\s+|,?\s+so\s+(?:that\s+)?(?:i|we)\s+can\s+)"
                             rf"(?={a_verb})"
                             # a list of gerunds ("by downloading it, transcribing it and summarizing it")
                             rf"|(?:,\s*(?:and\s+)?|\s+and\s+)(?:(?:then|further|also|finally|lastly|how\s+about|what\s+about)\s+)?(?=(?:{gerunds})\b)",
                             re.I),
        back=re.compile(rf"\b(?:{_alternation(refer['back'])})\b", re.I),
        text_nouns=frozenset(refer["text_nouns"]),
        text_parts=frozenset(refer["text_parts"]),
        vague_nouns=frozenset(data["none"]["vague_nouns"]),
        modality_words={Modality(k): frozenset(v) for k, v in data["modality"].items()},
        none_phrasings=tuple(data["none"]["phrasings"]),
        making=frozenset(split.get("making", ())) | frozenset(split.get("taking", ())),
        taking=frozenset(split.get("taking", ())),
        makes_named=frozenset(refer.get("makes_named", ())),
        possession=re.compile(rf"^\s*{leads}(?:{_alternation(data['none']['starts'])})\b", re.I),
        returns=re.compile(rf"^\s*{leads}{lead}(?P<back>{_alternation(data['none']['returns'])})\b", re.I),
        attempted=re.compile(rf"^\s*{leads}(?:{_alternation(data['none']['perfect'])})\s+"
                             rf"(?:{_alternation(data['none']['attempts'])})\b(?:\s+(?:to|on|with)\s+[\w']+)?", re.I),
        narrates=re.compile(rf"^\s*{leads}(?:"
                            rf"(?:i|we)(?:\s+|(?='))(?:{_alternation(data['none']['unable'])})\b|"
                            rf"(?:{_alternation(data['none']['narrators'])})\s+(?!(?:{_alternation(data['none']['past_asks'])})\b)"
                            rf"(?:[a-z]{{3,}}ed|{_alternation(data['none']['past'])})|"
                            rf"(?:{_alternation(data['none']['others'])})(?:\s+[\w'-]+){{0,4}}?\s+"
                            rf"(?:[a-z]{{3,}}ed|{_alternation(data['none']['past'])})\s+(?:me|us)"
                            rf"|(?:(?:{_alternation(data['none']['others'])})(?:\s+[\w'-]+){{1,3}}?|he|she|they)\s+"
                            rf"(?:{_alternation(data['none']['lacks'])})(?=\s)"
                            rf"|(?:{_alternation(data['none']['ongoing'])})\s+(?!(?:{_alternation(data['none']['ongoing_asks'])})\b)"
                            r"[a-z]{2,}ing"
                            rf"|(?:i|we)\s+(?:really\s+|just\s+|absolutely\s+)?(?:{_alternation(data['none']['likings'])})\s+"
                            r"(?:the|this|that|these|those|my|our|it|how)\b"
                            # ... or a first person in a state ("I'm in a rush", "we are a small choir")
                            rf"|(?:{_alternation(data['none']['ongoing'])})\s+(?:really\s+|quite\s+|such\s+)?"
                            rf"(?:{_alternation(data['none']['states'])})\s+"
                            rf"(?!(?:{_alternation(data['none']['state_asks'])})\b)[a-z]+)\b", re.I),
        describes=re.compile(rf"^\s*(?:(?:{_alternation(data['none']['describers'])})\W+)*"
                             rf"(?:(?:{_alternation(data['none']['described'])})\b|@\d+)[\w\s'@-]{{0,40}}?"
                             rf"(?:\b|(?='))(?:{_alternation(data['none']['describing'])})\b", re.I),
        generic=frozenset(data["modality_words"]["generic"]),
        ambiguous=frozenset(data["modality_words"]["ambiguous"]),
        not_noun_after=frozenset(data["modality_words"]["not_after"]),
        verb_makes=tuple((re.compile(rf"\b(?:{_alternation(v)})\b", re.I), Modality(k))
                         for k, v in data.get("verb_makes", {}).items()),
        idle_wish=re.compile(rf"^(?:{_alternation(data['none']['wishes'])})\s+to\s+(?:{_alternation(data['none']['idle'])})\b"
                             r"(?:\s+(?:it|them|this|that))?(?:\s+(?:later|again|offline|more|for\b.*|in\b.*|on\b.*|with\b.*|as\b.*))?\W*$",
                             re.I),
        delivers=re.compile(rf"^\s*(?:(?:please|just|and|then|finally|also)\s+)*(?:{_alternation(data['none']['delivers'])})"
                            rf"\s+(?:(?:me|us)\s+|back\s+)*(?:{_alternation(data['none']['delivered'])})\b[\w\s-]{{0,12}}?"
                            r"(?:\s+(?:back|locally|to\s+(?:me|my\s+\w+)|on\s+my\s+\w+|(?:as|to|in)\s+@\d+|as\s+(?:the|a|my)\s+(?:final\s+)?"
                            r"(?:result|output|file|answer))){0,2}\s*(?:for\s+me|please)?\W*$", re.I),
        lengths=tuple((re.compile(rf"\b(?:{_phrasal(v)})\b", re.I), k) for k, v in data.get("length", {}).items()),
        to_language=re.compile(rf"\b(?:into|to)\s+(?:(?:plain|simple|proper|formal|informal|everyday)\s+)?"
                               rf"(?:{_alternation(data['languages']['names'])})\b", re.I),
        finds=re.compile(rf"\b(?:{_alternation(data['find']['verbs'])})\b", re.I),
        creates=re.compile(rf"^\s*{lead}(?:{_alternation(data['find']['creates'])})\b", re.I),
        finds_in=re.compile(rf"\b(?:{_alternation(data['find']['verbs'])})\s+(?:{_PRONOUNS})\b"
                            rf"|\bof\s+(?:{_PRONOUNS}|@\d+)\b"
                            rf"|\b(?:in|inside|within|from)\s+(?:{_PRONOUNS}|my|the(?!\s+(?:internet|web|net)\b))\b", re.I),
        only_where=re.compile(rf"^(?:{where_verbs})\s+(?:(?:on|in|through|across|around|over)\s+)?"
                              rf"(?:{_alternation(data['find']['places'])})(?:\s+(?:for\s+me|please))?\W*$", re.I),
        vague=re.compile(rf"^(?:(?:{_alternation(data['none']['helps'])})(?:\s+(?:me|us))?\s+)?(?:(?:in|with|on|by)\s+)?"
                         rf"(?:(?:{vague_verbs})\s+)?(?:(?:this|that|these|those)(?:\s+(?!{_NOT_NOUN})[a-z-]+)??"
                         rf"(?:\s+(?!{_NOT_NOUN})(?P<head>[a-z-]+))?"
                         r"|it|them|everything|all\s+(?:this|that|of\s+(?:this|that|it|them)))(?:\s+all)?"
                         r"(?:\s+(?:together|happen|done|for\s+me|for\s+us|please|now))*\W*$", re.I),
        detail=re.compile(rf"^(?:(?:{_alternation(detail['make'])})\s+{_THING}\s+"
                          rf"(?:(?:{_alternation(detail['senses'])})\s+)?"
                          rf"(?:(?:{_alternation(detail['degrees'])})\s+)*"
                          r"(?!(?:a|an|the|into|in|as|to|of|from|with)\b|[a-z-]+ed\b)[a-z-]+"  # no thing, no participle
                          rf"|(?:{_alternation(detail['give'])})\s+{_THING}\s+(?:a|an|some)\s+(?:[a-z-]+\s+){{0,2}}?"
                          rf"(?:{_alternation(detail['qualities'])}))\W*$", re.I),
        asks=re.compile(rf"\b(?:{_alternation(data['none']['asks'])})\b", re.I),
        help_asks=re.compile(help_asks, re.I),
        direct=re.compile(rf"\b(?:{_alternation(data['none']['direct'])})\b", re.I),
        adds=re.compile(rf"\b(?:{_alternation(data['none']['adds'])})\b", re.I),
        opens=re.compile(rf"^\s*{lead}(?:(?:would|do)\s+you\s+mind\s+)?"
                         rf"(?:{_alternation(f for v in data['none']['opens'] for f in _verb_forms(v))})\s+"
                         r"(?:(?:my|the|this|that|a|an|file|files)\s+)*"
                         r"@\d+(?:\W+(?:and\W+)?@\d+)*\W*$", re.I),
        purpose=re.compile(rf"\bto\s+(?:{verbs})\b", re.I),
        presents=re.compile(rf"^\s*(?:(?:and|so|but|also)\W+)?(?=(?:the|my|our|your|this|that|these|those|it|its|here|details)\b)"
                            rf"(?:[\w']+\s+){{0,6}}?(?:{_alternation(data['none']['presents'])})"
                            r"\b(?:\W+[\w']+){0,3}?\W*@\d+(?:\W+(?:and\W+)?@\d+)*\W*$", re.I),
        dictate_colon=re.compile(rf"\b(?:{_alternation(data['dictate']['verbs'])})\b(?:[ \t]+\w[\w']*){{0,4}}?"
                                 r"[ \t]*:(?!//)[ \t]*", re.I),
        dictate_lead=re.compile(rf"\b(?:{_alternation(data['dictate']['lead_ins'])})[ \t]*:?[ \t]+", re.I),
        speech_cue=re.compile(rf"\b(?:{_alternation([*data['dictate']['verbs'], 'speech', 'voice', 'aloud', 'spoken', 'narration', 'voiceover'])})",
                              re.I),
        prompt_lead=re.compile(rf"^(?:(?:{_alternation(data['prompt']['leads'])})\b[,]?\s+)+", re.I),
        prompt_verb=re.compile(rf"^(?:{_alternation(data['prompt']['verbs'])})(?:s|es|d)?\b\s*(?:(?:me|us)\b\s*)?",
                               re.I),
        prompt_frame=re.compile(rf"(?:^|(?<=\s))(?:(?:a|an|the|some|one)\s+)?(?P<adj>(?:[\w-]+\s+){{0,3}}?)"
                                rf"(?:{_alternation(data['prompt']['frames'])})s?\s+"
                                rf"(?:{_alternation(data['prompt']['frame_links'])})\s+(?P<rest>.+)$", re.I | re.S),
        prompt_tail=re.compile(rf"(?:[,;]?\s*\b(?:{_alternation(data['prompt']['tails'])})\b[.!?]*)+\s*$", re.I),
        framing=frozenset(data["prompt"]["framing_adjectives"]),
        frame_glue=re.compile(rf"\s+and\s+(?=(?:a|an|some)\s+(?:[\w-]+\s+){{0,2}}?"
                              rf"(?:{_alternation(data['prompt']['frames'])})s?\s+"
                              rf"(?:{_alternation(data['prompt']['frame_links'])})\s)", re.I),
        words=tuple(sorted({w for group in (split["verbs"], split["connectors"], split["fillers"], refer["back"],
                                            refer["text_nouns"], *data["modality"].values()) for w in group})),
    )


_SENTENCE = re.compile(r"\s*(?:-+>|→|=+>|⇒|»)\s*|(?<=[.!?;])\s+|(?<=@\d)\s+(?=[A-Z][a-z]|I\b)|(?<=@\d\d)\s+(?=[A-Z][a-z]|I\b)|\n+|(?<=[.!?;])$|(?:^|\s)\(?\d{1,2}[.)]\s+|(?:^|\n)\s*[-*•]\s+", re.M)
_ENUM = re.compile(r"(?<![@\w])(?:step\s*\d+|\d{1,2}\s*[.)])\s*[:\-]?\s*", re.I)


_SUBJECT_ALSO = re.compile(r"\b(i|we|you|they|i'd|we'd|i'll|we'll|would|could|can|will|should|do|does"
                          r"|(?:would|could|can|will|should|is|was)\s+(?:it|you|we|i|they|there|this|that))"
                          r"\s+(?:(also)|then|later)\b", re.I)
# a file name a result is to get ("save it as @0", "export the audio as a file named @1"): no input
_OUTPUT_NAME = re.compile(r"(?<!\bsuch\s)(?<!\bwell\s)(?<!\bsame\s)(?<!\bjust\s)\bas\s+(?:(?:a|an|the)\s+)?(?:(?:new\s+)?(?:file|audio|video|image|picture|photo|clip|track|"
                          r"recording)\s+)?(?:(?:named|called)\s+)?@(\d+)\b", re.I)
# the verb that gives a file its name, nearest before "as" (up to 8 words back): done already ("I saved it as
# @0", "a clip stored as @0") means a file the user has; to do ("save it as @0") or none means a result's name
_KEPT_AS = re.compile(r"\b(saved|stored|kept|filed|recorded|exported|uploaded|named|called|save|store|keep|export|"
                      r"saving|storing|keeping|exporting)\b(?:\W+[\w'@]+){0,8}?\W*$", re.I)
# the user's own aim after the ask ("so I can study from it", "so that we can print it"); a step it
# names with a verb of the list was cut off before this (``verb_glue``)
_GOAL = re.compile(r",?\s+so\s+(?:that\s+)?(?:i|we|it|they|he|she|everyone|people)\s+(?:can|could|may|might|will|would)\b[^@]*$",
                   re.I)  # "... so I can study it", "... so that it will read warmer": why, not what
_IT = re.compile(r"\b(?:it|them)\b", re.I)  # a step's own pointer back at the result before it
_AS_KIND = re.compile(r"\bas\s+(?:a|an)\s+(?:[\w-]+\s+)?(?:video|audio|recording|speech|sound|song|image|picture|"
                      r"clip|podcast|file|text|transcript|voice)", re.I)  # "share it as an audio file"
_ONLY = re.compile(r"^\W*(?:but\s+|and\s+)?(?:only|just)\s+(?:the|a|an|one|my)\s", re.I)  # "only the image please"
_HEADER = re.compile(r"^\s*[\w@' -]{1,30}:\s*$")  # a few words and a colon ending the line: a list's heading
# "From the new cut, ...", "For @0, ...": a preposition and the thing a step works on
_LEAD = re.compile(r"(?:from|for|with|based\s+on|out\s+of|on)\s+(?:the|that|this|these|those|my|your|our|its|"
                   r"their|both|each|@\d+)\b", re.I)
_WHEN = re.compile(r"(?:once|when|whenever|as\s+soon\s+as|after)\s+(?P<rest>.+)$", re.I)
_DONE = re.compile(r"(?:it|that|this|they|those)(?:'s|'re|\s+is|\s+are|\s+has\s+been|\s+have\s+been|\s+was)?\s+"
                   r"(?:done|finished|ready|complete|completed|over)\b", re.I)


def _when_done(lang: Language, clause: str, before: list[Step]) -> bool:
    """``clause`` only says the step comes after one already asked: "once that's done", "when you have the
    transcript" after "transcribe ...". A state nobody asked for ("once the image is grayscale") is an ask."""
    m = _WHEN.match(clause)
    if m is None or len(clause.split()) > 8:
        return False
    if _DONE.match(m.group("rest")):
        return bool(before)
    said = {w for s in before for w in re.findall(r"[a-z]{5,}", s.text.lower())}
    return any(any(x.startswith(w[:6]) for x in said) for w in re.findall(r"[a-z]{5,}", m.group("rest").lower())
               if w not in lang.generic)


_KEPT_ALSO = "also_kept"  # an "also" that starts no step ("could you also ..."), kept in the step's words


def _already_named(before: str) -> bool:
    """The words before "as @N" say the user already gave the file that name ("I saved it as", "stored as")."""
    m = _KEPT_AS.search(before)
    return m is not None and m.group(1).lower().endswith(("ed", "kept"))


def split_steps(text: str, mentions: list[Mention], known: Container[str] = ()) -> list[Step]:
    """Cut ``text`` into steps: sentences, list items, connectors, and ``and`` or ``,`` before a verb.

    Each step keeps the mentions inside it; masks make file names' dots and quoted
    text safe from the cutting. ``known``: words that are spelled right (a tokenizer's vocabulary);
    a word outside it close to one step verb is that verb misspelled ("transcibe"), mended first.
    """
    lang = language()
    masked: list[str] = []
    pos = 0
    for i, m in enumerate(mentions):
        masked.append(text[pos:m.start])
        masked.append(f"@{i}")
        pos = m.end
    masked.append(text[pos:])
    # "I also want ...", "could you then ...": no new step; the "also" stays in the words ("can you also ...")
    body = _SUBJECT_ALSO.sub(lambda m: m.group(1) + (" " + _KEPT_ALSO if m.group(2) else ""), "".join(masked))
    if known:
        body = re.sub(r"[A-Za-z]{5,}", lambda m: _mended(lang, m.group(0), known), body)
    steps: list[Step] = []
    held = ""  # words that only ask ("please", "could you"), waiting for the step they ask for
    # steps[a:b] go before steps[to] ("... but first, ..."), taking its file only if they point back at it
    ahead: list[tuple[int, int, int, bool]] = []
    last: list[Step] = []  # one-step sentences said to come after the rest ("... afterwards; ...")
    opened: list[int] = []  # per sentence, the index of its first step
    for s_index, sentence in enumerate(p for p in _SENTENCE.split(body) if p and p.strip()):
        sentence = _ENUM.sub(" ", sentence)
        opened.append(len(steps))
        if _HEADER.match(sentence) and not lang.verb_start.search(sentence) and not lang.acting.search(sentence):
            # "Steps:", "My to-do list:" heads a list and asks nothing itself; "Steps for @0:" hands @0 to it
            if _MASK.search(sentence):
                _cut_chunk(lang, sentence, mentions, s_index, steps, "")
                steps[-1].hands = True
            continue
        marked = lang.after.search(sentence)
        if marked and (marked.start() > 0 or not steps) and (lang.says_verb(sentence) or lang.asks_for(sentence)):
            held = _cut(lang, sentence, mentions, s_index, steps, held)  # a leading "finally" only opening the request
            if len(steps) == opened[-1] + 1:
                last.append(steps[-1])
            continue
        first = _DO_FIRST.match(sentence)
        if first and len(opened) > 1 and lang.says_verb(first.group("body")) and not _THEN_NEXT.match(
                sentence, first.end()) and any(
                lang.asks_for(s.text) for s in steps[opened[-2]:opened[-1]]):
            # "Draw a picture from @0. Actually, summarize it first.": before the sentence said just before
            # ("X first, then Y" only orders its own sentence)
            start = len(steps)
            held = _cut(lang, first.group("body"), mentions, s_index, steps, held)
            if start < len(steps):
                ahead.append((start, len(steps), opened[-2], True))
            held = _cut(lang, sentence[first.end():], mentions, s_index, steps, held)
            continue
        marker = lang.before.search(sentence)
        if marker is None:
            held = _cut(lang, sentence, mentions, s_index, steps, held)
            continue
        held = _cut(lang, sentence[:marker.start()], mentions, s_index, steps, held)
        start = len(steps)
        held = _cut(lang, sentence[marker.end():], mentions, s_index, steps, held)
        if 0 < start < len(steps):
            to = start - 1
            if marker.group("all") or not sentence[:marker.start()].strip():
                # "... but first" / "Before that, ..." opening a sentence: before the sentence's first step,
                # or before the sentence said just before
                to = opened[-1] if opened[-1] < start else opened[-2] if len(opened) > 1 else 0
            ahead.append((start, len(steps), to, False))
    for a, b, to, back_only in ahead:
        block, ahead_of = steps[a:b], steps[to]
        said = re.findall(r"[a-z]+", block[0].text.lower())[:3]
        if not block[0].mentions and len(ahead_of.mentions) == 1 and (lang.back.search(block[0].text) or (
                not back_only and not any(w in lang.making - lang.taking for w in said))):
            # "summarize @0, but first translate it (/ clean it up)": that is @0, and "summarize the text" reads
            # its result
            block[0], ahead_of = _takes_file(block[0], ahead_of)
            steps[to] = ahead_of
        steps[to:b] = [*block, *steps[to:a]]
    for x in last:  # to the end, unless a later step points back at what it follows
        i = next(k for k, s in enumerate(steps) if s is x)
        if not any(lang.back.search(s.text) for s in steps[i + 1:]):
            steps = [*steps[:i], *steps[i + 1:], x]
    return _before_named(lang, steps)


def _takes_file(first: Step, then: Step) -> tuple[Step, Step]:
    """``first``, moved before ``then``, with ``then``'s file; ``then`` names that thing by its kind ("the
    image") and reads ``first``'s result."""
    return (replace(first, mentions=list(then.mentions)),
            replace(then, text=then.for_matching(), mentions=[], tail=0, done=()))


def verb_stem(word: str) -> str:
    """``word`` without an -ing, -ied or -ed ending, its doubled consonant undone ("cutting" -> "cut",
    "stopped" -> "stop", "copied" -> "copy")."""
    w = word.lower()
    if w.endswith("ied"):
        return w[:-3] + "y"
    base = w[:-3] if w.endswith("ing") else w[:-2] if w.endswith(("ed", "en")) else w
    if len(base) >= 3 and base[-1] == base[-2] and base[-1] not in "aeiouls":
        base = base[:-1]
    return base


_BEFORE_VERB = re.compile(r",?\s*\b(?:before|prior\s+to)\s+(?:(?:you|we|i)\s+)?([a-z]+)\b.*$", re.I)


def _before_named(lang: Language, steps: list[Step]) -> list[Step]:
    """A step ending "... before summarizing (it)" goes before the step said earlier that summarizes; with
    no thing of its own it takes that step's file ("I need a summary of @0; translate it before summarizing":
    translate @0, then summarize the translation)."""
    for i in range(len(steps)):
        m = _BEFORE_VERB.search(steps[i].text)
        if m is None or m.start() == 0:
            continue
        word = m.group(1).lower()
        stem = verb_stem(word) if word.endswith("ing") else word  # "before summarizing", "before you cut"
        if word not in lang.verbs and stem not in lang.verbs and (stem + "e") not in lang.verbs:
            continue  # "before the deadline", "before lunch"
        root = stem[:6] if len(stem) >= 6 else stem
        j = next((k for k in range(i - 1, -1, -1)
                  if any(w.startswith(root) for w in re.findall(r"[a-z]+", steps[k].text.lower()))), None)
        if j is None:
            continue
        step = replace(steps[i], text=steps[i].text[:m.start()], tail=0)
        ahead_of = steps[j]
        if not step.mentions and len(ahead_of.mentions) == 1 and lang.back.search(step.text):
            step, ahead_of = _takes_file(step, ahead_of)
        steps = [*steps[:j], step, ahead_of, *steps[j + 1:i], *steps[i + 1:]]
    return steps


def _cut(lang: Language, sentence: str, mentions: list[Mention], s_index: int, steps: list[Step], held: str) -> str:
    """Append the steps in ``sentence`` (masked) to ``steps``; returns the asking words still waiting for one."""
    pos, weak = 0, None  # after a marker: whether a pointer back in the step outweighs it
    for m in [*lang.apart.finditer(sentence), None]:
        first = len(steps)
        held = _cut_chunk(lang, sentence[pos:m.start() if m else len(sentence)], mentions, s_index, steps, held)
        if weak is not None and len(steps) > first > 0 and not (weak and _IT.search(steps[first].text)):
            steps[first].apart = True  # "..., and separately list its keywords"
        if m is None:
            return held
        pos, weak = m.end(), m.group("weak") is not None
    return held


def _cut_chunk(lang: Language, sentence: str, mentions: list[Mention], s_index: int, steps: list[Step],
               held: str) -> str:
    both = False  # the step before opened with "both": this one reads what that one read
    pieces: list[tuple[str, bool]] = []  # each with whether a verb of the same clause follows it
    for part in lang.connector.split(sentence):
        glued = lang.verb_glue.split(part)  # "make X and a picture of Y": a second thing to make
        for g, piece in enumerate(glued):
            cut = lang.frame_glue.split(piece) if lang.verb_start.match(piece) else [piece]
            pieces.extend((c, g + 1 < len(glued) and c is cut[-1]) for c in cut)
    lead = ""  # "From the new cut, | take a still": what the next step works on, put after its words
    for piece, verb_next in pieces:
        clean = lang.tag_question.sub("", piece.replace(_KEPT_ALSO, "also"))
        clean = _GOAL.sub("", clean).strip(" \t,;:.!?-")  # "... so I can study it": why, not what
        if not clean:
            continue
        if verb_next and ((_LEAD.match(clean) and len(clean.split()) <= 6) or _when_done(lang, clean, steps)):
            lead = f"{lead} {clean}".strip()
            continue
        if lang.only_fillers.match(clean):  # "Please | first download it": the ask goes on
            held = f"{held} {clean}".strip()
            continue
        if held:
            clean, held = f"{held} {clean}", ""
        said = len(clean)
        if lead:
            clean, lead = f"{clean}, {lead}", ""
        own = sorted({int(x) for x in _MASK.findall(clean)})
        local = {old: new for new, old in enumerate(own)}
        renum = _MASK.sub(lambda mt: f"@{local[int(mt.group(1))]}", clean)
        named = {int(m.group(1)) for m in _OUTPUT_NAME.finditer(renum) if not _already_named(renum[:m.start()])}
        steps.append(Step(renum, [replace(mentions[i], kind="name") if k in named and mentions[i].kind == "file"
                                  else mentions[i] for k, i in enumerate(own)], s_index, apart=both,
                          tail=len(_MASK.sub(lambda mt: f"@{local[int(mt.group(1))]}", clean[said:]))))
        both = lang.both.match(renum) is not None
    return held

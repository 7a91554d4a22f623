"""eSpeak NG text-to-speech: the real binary, output decoded from WAV bytes."""

from __future__ import annotations

import numpy as np
import pytest

from decoders.speech_espeak import synthesize, voice_for_model
from orchestrator import get_tool
from orchestrator.artifacts import Modality
from orchestrator.errors import BackendUnavailable, ParamError, ToolInputError
from tools._media import estimate_f0, rms

from media_factory import roundtrip


def speak(text: str, **params) -> object:
    return roundtrip(get_tool("speech.espeak").call({"text": text}, params)["audio"], Modality.AUDIO)


def test_registered_as_text_to_speech() -> None:
    spec = get_tool("speech.espeak").spec
    assert spec.task == "text-to-speech" and spec.output("audio") is not None


def test_speaks_a_sentence_to_real_wav() -> None:
    audio = speak("The quick brown fox jumps over the lazy dog.")
    assert audio.sample_rate == 22050 and audio.channels == 1
    assert 1.5 < audio.duration < 5.0
    assert rms(audio.samples) > 0.03


def test_rate_and_pitch_params_change_the_speech() -> None:
    text = "Counting one two three four five six."
    slow, fast = speak(text, rate=120), speak(text, rate=360)
    assert fast.duration < 0.6 * slow.duration
    low, high = speak(text, pitch=10), speak(text, pitch=90)
    assert estimate_f0(high.samples, 22050) > 1.2 * estimate_f0(low.samples, 22050)


def test_model_names_a_voice() -> None:
    assert voice_for_model("espeak-ng:en-us") == "en-us"
    assert voice_for_model("espeak-ng") == "en"
    assert speak("Bonjour tout le monde.", model="espeak-ng:fr").duration > 0.5
    with pytest.raises(ParamError, match="not an espeak-ng voice"):
        get_tool("speech.espeak").call({"text": "hi"}, {"model": "suno/bark"})


def test_text_that_looks_like_options_is_spoken_not_parsed() -> None:
    audio = synthesize("--help -v xx -w /tmp/owned.wav", voice="en")
    assert audio.duration > 1.0


def test_empty_text_and_bad_voices_are_refused() -> None:
    with pytest.raises(ToolInputError, match="empty"):
        get_tool("speech.espeak").call({"text": "  \n"})
    with pytest.raises(ToolInputError, match="voice"):  # fails the params pattern: never reaches the binary
        get_tool("speech.espeak").call({"text": "hi"}, {"voice": "-x"})
    with pytest.raises(ParamError, match="does not exist"):
        get_tool("speech.espeak").call({"text": "hi"}, {"voice": "zz-nonexistent"})
    with pytest.raises(ToolInputError, match="rate"):
        get_tool("speech.espeak").call({"text": "hi"}, {"rate": 5})


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ESPEAK_BINARY", str(tmp_path / "no-espeak"))
    with pytest.raises(BackendUnavailable, match="apt-get install -y espeak-ng"):
        synthesize("hello")


def test_output_is_deterministic() -> None:
    a, b = synthesize("Same words."), synthesize("Same words.")
    assert np.array_equal(a.samples, b.samples)

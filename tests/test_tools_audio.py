"""Audio tools on real WAV round trips: splicer, effects, noise reduction, voice changer, audio-to-image."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import Audio, Settings, ToolContext, get_tool
from orchestrator.artifacts import Modality, encode
from orchestrator.errors import ArtifactDecodeError, ToolInputError
from tools._media import estimate_f0, rms

from media_factory import burst_audio, noise, roundtrip, spectral_centroid, speech, tone, voiced


def call(name: str, inputs: dict, params: dict | None = None, ctx: ToolContext | None = None) -> Audio:
    """Run a tool and return its audio as decoded from the canonical WAV bytes."""
    out = get_tool(name).call(inputs, params or {}, ctx)["audio"]
    return roundtrip(out, Modality.AUDIO)


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def db(a: float, b: float) -> float:
    return 20 * np.log10((a + 1e-12) / (b + 1e-12))


# ---------------------------------------------------------------- splicer


def test_splice_resamples_mismatched_rates_and_channels() -> None:
    a = tone(440, 1.0, 16000)
    b = tone(1000, 0.5, 22050, channels=2)
    c = tone(300, 0.25, 8000)
    out = call("audio.concat", {"clips": [a, b, c]})
    assert out.sample_rate == 22050 and out.channels == 2
    assert out.duration == pytest.approx(1.75, abs=1e-3)
    rate = out.sample_rate
    seg = lambda t0, t1: out.samples[int(t0 * rate) : int(t1 * rate), 0]  # noqa: E731
    assert dominant_freq(seg(0.1, 0.9), rate) == pytest.approx(440, abs=5)
    assert dominant_freq(seg(1.1, 1.4), rate) == pytest.approx(1000, abs=5)
    assert dominant_freq(seg(1.55, 1.74), rate) == pytest.approx(300, abs=8)


def test_splice_gap_crossfade_and_target_rate() -> None:
    a, b = tone(440, 1.0, 16000), tone(660, 1.0, 16000)
    assert call("audio.concat", {"clips": [a, b]}, {"gap": 0.5}).duration == pytest.approx(2.5, abs=1e-3)
    assert call("audio.concat", {"clips": [a, b]}, {"crossfade": 0.25}).duration == pytest.approx(1.75, abs=1e-3)
    out = call("audio.concat", {"clips": [a, b]}, {"sample_rate": 8000, "channels": 1})
    assert out.sample_rate == 8000 and out.duration == pytest.approx(2.0, abs=1e-3)


def test_splice_skips_empty_clips_but_not_all() -> None:
    empty = Audio(np.zeros(0, np.float32), 16000)
    assert call("audio.concat", {"clips": [empty, tone(seconds=0.5)]}).duration == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ToolInputError, match="empty"):
        get_tool("audio.concat").call({"clips": [empty, empty]})


def test_splice_output_over_the_duration_limit_is_refused() -> None:
    ctx = ToolContext(settings=Settings(max_audio_seconds=1.5))
    with pytest.raises(ToolInputError, match="limit"):
        get_tool("audio.concat").call({"clips": [tone(seconds=1.0)] * 2}, {}, ctx)


# ---------------------------------------------------------------- effects


def test_reverb_instruction_adds_a_tail() -> None:
    clip = burst_audio(bursts=1)
    out = call("audio.effects", {"audio": clip, "instruction": "add reverb"})
    assert out.sample_rate == clip.sample_rate and out.duration > clip.duration + 0.5
    end = int(0.8 * clip.sample_rate)  # the burst ends at 0.8 s; then only reverb can sound
    assert rms(clip.samples[end + 800 :]) == 0.0
    assert rms(out.samples[end + 800 : end + 8000]) > 0.01


def test_echo_repeats_after_the_delay() -> None:
    rate = 16000
    click = np.zeros(rate, np.float32)
    click[100] = 0.8
    out = call("audio.effects", {"audio": Audio(click, rate), "instruction": "add an echo of 250 ms"})
    delay = int(0.25 * rate)
    assert abs(out.samples[100 + delay]) == pytest.approx(0.4, abs=0.01)
    assert abs(out.samples[100 + 2 * delay]) == pytest.approx(0.2, abs=0.01)


def test_gain_speed_and_pitch() -> None:
    clip = tone(220, 1.0, 16000, amplitude=0.1)
    louder = call("audio.effects", {"audio": clip, "instruction": "make it louder"})
    assert db(rms(louder.samples), rms(clip.samples)) == pytest.approx(6.0, abs=0.2)
    fast = call("audio.effects", {"audio": clip}, {"speed": 2.0})
    assert fast.duration == pytest.approx(0.5, abs=0.01)
    assert estimate_f0(fast.samples, fast.sample_rate) == pytest.approx(220, rel=0.03)  # pitch kept
    octave = call("audio.effects", {"audio": clip}, {"pitch_semitones": 12})
    assert octave.duration == pytest.approx(1.0, abs=1e-3)
    assert estimate_f0(octave.samples, octave.sample_rate) == pytest.approx(440, rel=0.03)


def test_equalization_boosts_bass() -> None:
    low, high = tone(80, 1.0, 16000, 0.1), tone(6000, 1.0, 16000, 0.1)
    eq = {"bass_db": 12.0}
    assert db(rms(call("audio.effects", {"audio": low}, eq).samples), rms(low.samples)) > 9
    assert abs(db(rms(call("audio.effects", {"audio": high}, eq).samples), rms(high.samples))) < 1


def test_chorus_and_fades_keep_length_and_shape() -> None:
    clip = tone(330, 1.0, 16000, 0.3, channels=2)
    out = call("audio.effects", {"audio": clip, "instruction": "add chorus with a fade in and a fade out over 0.2 s"}, {"fade_in": 0.2})
    assert out.channels == 2 and out.duration == pytest.approx(1.0, abs=1e-3)
    assert rms(out.samples[:160]) < 0.02 and rms(out.samples[-160:]) < 0.02  # faded ends
    assert rms(out.samples[7000:9000]) > 0.1


def test_explicit_params_win_over_the_instruction() -> None:
    clip = tone(220, 1.0, 16000, amplitude=0.1)
    out = call("audio.effects", {"audio": clip, "instruction": "make it louder"}, {"gain_db": -6.0})
    assert db(rms(out.samples), rms(clip.samples)) == pytest.approx(-6.0, abs=0.2)


def test_unknown_instruction_lists_what_is_supported() -> None:
    with pytest.raises(ToolInputError, match="reverb, echo"):
        get_tool("audio.effects").call({"audio": tone(), "instruction": "make it sound magical"})


def test_effects_on_silence_stay_silent_and_finite() -> None:
    silent = Audio(np.zeros(16000, np.float32), 16000)
    out = call("audio.effects", {"audio": silent, "instruction": "add reverb, echo, equalization, normalize"})
    assert np.isfinite(out.samples).all() and np.abs(out.samples).max() == 0.0


def test_effects_output_never_clips() -> None:
    out = call("audio.effects", {"audio": tone(amplitude=0.9)}, {"gain_db": 20})
    assert np.abs(out.samples).max() <= 1.0 and np.abs(out.samples).max() > 0.95


# ---------------------------------------------------------------- noise reduction


def test_denoise_removes_noise_in_gaps_and_keeps_the_signal() -> None:
    clean = burst_audio()
    noisy = Audio(clean.samples + noise(clean.duration, clean.sample_rate, 0.03).samples[: len(clean.samples)], clean.sample_rate)
    out = call("audio.denoise", {"audio": noisy})
    assert out.sample_rate == noisy.sample_rate and out.duration == pytest.approx(noisy.duration, abs=1e-3)
    gap = slice(int(0.05 * 16000), int(0.35 * 16000))  # the first silence
    burst = slice(int(0.5 * 16000), int(0.7 * 16000))
    assert db(rms(noisy.samples[gap]), rms(out.samples[gap])) > 12  # noise down by more than 12 dB
    assert db(rms(out.samples[burst]), rms(clean.samples[burst])) == pytest.approx(0, abs=1.0)


def test_denoise_with_a_noise_lead_in_on_speech() -> None:
    sp = speech("Testing noise reduction.")
    lead = np.zeros(int(0.3 * sp.sample_rate), np.float32)
    clean = np.concatenate([lead, sp.samples])
    noisy = Audio(clean + noise(len(clean) / sp.sample_rate, sp.sample_rate, 0.02, seed=3).samples[: len(clean)], sp.sample_rate)
    out = call("audio.denoise", {"audio": noisy}, {"noise_seconds": 0.25})
    assert out.sample_rate == 22050
    before, after = rms(noisy.samples - clean), rms(out.samples - clean)
    assert db(before, after) > 3  # closer to the clean speech than the noisy input


def test_denoise_silence_is_returned_unchanged() -> None:
    silent = Audio(np.zeros(8000, np.float32), 16000)
    out = call("audio.denoise", {"audio": silent})
    assert len(out.samples) == 8000 and not out.samples.any()


# ---------------------------------------------------------------- voice changer


def test_female_voice_on_speech_raises_pitch_and_keeps_duration() -> None:
    sp = speech()
    f0 = estimate_f0(sp.samples, sp.sample_rate)
    out = call("audio.voice_change", {"audio": sp, "instruction": "make it sound like a female voice"})
    assert out.duration == pytest.approx(sp.duration, abs=1e-3) and out.sample_rate == sp.sample_rate
    assert estimate_f0(out.samples, out.sample_rate) > 1.15 * f0
    deep = call("audio.voice_change", {"audio": sp, "instruction": "a deeper voice with lower pitch"})
    assert estimate_f0(deep.samples, deep.sample_rate) < 0.92 * f0


@pytest.mark.parametrize(
    ("params", "f0_ratio", "centroid_ratio"),
    [
        ({"pitch_semitones": 5, "formant_factor": 1.18}, 2 ** (5 / 12), 1.18),  # the 'female' preset
        ({"pitch_semitones": 5}, 2 ** (5 / 12), 1.0),  # pitch alone: formants stay
        ({"formant_factor": 1.3}, 1.0, 1.3),  # formants alone: pitch stays
        ({"pitch_semitones": -5, "formant_factor": 0.86}, 2 ** (-5 / 12), 0.86),  # the 'male' preset
    ],
)
def test_pitch_and_formants_move_independently(params: dict, f0_ratio: float, centroid_ratio: float) -> None:
    vowel = voiced(120.0, 1.0, 16000)
    out = call("audio.voice_change", {"audio": vowel}, params)
    assert out.duration == pytest.approx(1.0, abs=1e-3)
    assert estimate_f0(out.samples, 16000) / 120.0 == pytest.approx(f0_ratio, rel=0.03)
    assert spectral_centroid(out) / spectral_centroid(vowel) == pytest.approx(centroid_ratio, rel=0.06)


def test_voice_changer_unknown_instruction_is_refused() -> None:
    with pytest.raises(ToolInputError, match="female, male"):
        get_tool("audio.voice_change").call({"audio": speech(), "instruction": "change its gender somehow"})


# ---------------------------------------------------------------- audio-to-image


def test_waveform_image_size_and_silence_is_a_flat_line() -> None:
    img = roundtrip(get_tool("audio.visualize").call({"audio": speech()}, {"width": 300, "height": 100})["image"], Modality.IMAGE)
    assert img.size == (300, 100)
    flat = get_tool("audio.visualize").call({"audio": Audio(np.zeros(4000, np.float32), 16000)}, {"width": 64, "height": 33})
    ink = (np.asarray(flat["image"]).sum(axis=2) < 600).nonzero()[0]
    assert set(ink.tolist()) == {16}  # only the centre row


def test_spectrogram_puts_a_tone_at_its_frequency_row() -> None:
    img = get_tool("audio.visualize").call({"audio": tone(2000, 1.0, 16000)}, {"kind": "spectrogram", "width": 200, "height": 160})
    arr = np.asarray(roundtrip(img["image"], Modality.IMAGE)).astype(float).sum(axis=2)
    assert arr.shape == (160, 200)
    row = int(np.argmax(arr.mean(axis=1)))
    assert (1 - (row + 0.5) / 160) * 8000 == pytest.approx(2000, abs=100)  # low frequencies at the bottom


def test_tiny_audio_draws_too() -> None:
    out = get_tool("audio.visualize").call({"audio": Audio(np.array([0.5, -0.5], np.float32), 8000)}, {"kind": "spectrogram"})
    assert out["image"].size == (800, 240)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["audio.effects", "audio.denoise", "audio.voice_change", "audio.visualize"])
def test_zero_length_audio_is_refused(name: str) -> None:
    with pytest.raises(ToolInputError, match="empty"):
        get_tool(name).call({"audio": Audio(np.zeros(0, np.float32), 16000)}, {"gain_db": 1} if name == "audio.effects" else {})


def test_corrupt_wav_bytes_raise_a_decode_error() -> None:
    wav, _ = encode(tone(), Modality.AUDIO)
    with pytest.raises(ArtifactDecodeError):
        get_tool("audio.denoise").call({"audio": wav[:30]})


def test_robot_voice_ring_modulates() -> None:
    out = call("audio.voice_change", {"audio": tone(440, 1.0, 16000), "instruction": "robotic voice"})
    assert dominant_freq(out.samples, 16000) == pytest.approx(440 + 50, abs=3) or dominant_freq(out.samples, 16000) == pytest.approx(440 - 50, abs=3)

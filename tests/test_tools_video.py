"""Video tools on real MP4 round trips (H.264 + AAC through the codecs): every output is decoded
and checked for frame count, fps, size and audio duration."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import Settings, ToolContext, Video, get_tool
from orchestrator.artifacts import Audio, Modality, encode
from orchestrator.errors import ArtifactDecodeError, ToolInputError
from tools._media import estimate_f0, phase_correlation, rms

from media_factory import color_image, counter_video, gradient_image, roundtrip, shaky_video, speech, tone

AAC_SLACK = 0.06  # AAC adds up to ~one frame of priming/padding per track


def run(name: str, inputs: dict, params: dict | None = None, ctx: ToolContext | None = None) -> Video:
    out = get_tool(name).call(inputs, params or {}, ctx)
    return roundtrip(next(iter(out.values())), Modality.VIDEO)


@pytest.fixture(scope="module")
def clip() -> Video:
    """2 s, 20 frames at 10 fps, a 440 Hz tone as sound; decoded from a real MP4."""
    return roundtrip(counter_video(20, 10.0, audio=tone(440, 2.0, 16000)), Modality.VIDEO)


@pytest.fixture(scope="module")
def silent_clip() -> Video:
    return roundtrip(counter_video(10, 10.0), Modality.VIDEO)


def level(frame: np.ndarray) -> float:
    return float(frame.mean())


# ---------------------------------------------------------------- Video-to-Audio


def test_extract_audio_from_an_mp4_file_through_the_store(tmp_path, local_store) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode(counter_video(20, 10.0, audio=tone(440, 2.0, 16000)), Modality.VIDEO)[0])
    ref = local_store.put(path.read_bytes(), modality=Modality.VIDEO)
    audio = get_tool("video.extract_audio").call({"video": local_store.load(ref)})["audio"]
    decoded = roundtrip(audio, Modality.AUDIO)
    assert decoded.sample_rate == 16000 and decoded.duration == pytest.approx(2.0, abs=AAC_SLACK)
    spec = np.abs(np.fft.rfft(decoded.samples[4000:12000]))
    assert np.fft.rfftfreq(8000, 1 / 16000)[np.argmax(spec)] == pytest.approx(440, abs=4)


def test_extract_audio_resample_and_mono(clip: Video) -> None:
    stereo = Video(clip.frames, clip.fps, tone(440, 2.0, 16000, channels=2))
    out = get_tool("video.extract_audio").call({"video": stereo}, {"sample_rate": 8000, "mono": True})["audio"]
    assert out.sample_rate == 8000 and out.channels == 1 and out.duration == pytest.approx(2.0, abs=1e-3)


def test_extract_audio_without_a_track_is_a_clear_error(silent_clip: Video) -> None:
    with pytest.raises(ToolInputError, match="no audio track"):
        get_tool("video.extract_audio").call({"video": silent_clip})


# ---------------------------------------------------------------- Video-to-Image


@pytest.mark.parametrize(
    ("params", "frame_index"),
    [({"time": 0.5}, 5), ({"index": 3}, 3), ({"index": -1}, 19), ({}, 10), ({"position": "first"}, 0), ({"time": 2.0}, 19)],
)
def test_frame_at_time_or_index(clip: Video, params: dict, frame_index: int) -> None:
    img = roundtrip(get_tool("video.frame").call({"video": clip}, params)["image"], Modality.IMAGE)
    assert img.size == (32, 32)
    assert level(np.asarray(img)) == pytest.approx((20 + 20 * frame_index) % 240, abs=4)


def test_frame_out_of_range_is_refused(clip: Video) -> None:
    with pytest.raises(ToolInputError, match="lasts 2.000s"):
        get_tool("video.frame").call({"video": clip}, {"time": 5})
    with pytest.raises(ToolInputError, match="20 frame"):
        get_tool("video.frame").call({"video": clip}, {"index": 20})


def test_one_frame_video_works_everywhere() -> None:
    one = roundtrip(counter_video(1, 5.0), Modality.VIDEO)
    assert len(one.frames) == 1
    assert get_tool("video.frame").call({"video": one})["image"].size == (32, 32)
    assert len(run("video.speed", {"video": one}, {"factor": 2}).frames) == 1
    assert len(run("video.stabilize", {"video": one}).frames) == 1


# ---------------------------------------------------------------- Image-to-Video


def test_slideshow_with_soundtrack_is_padded_to_the_video() -> None:
    imgs = [color_image(64, 48, (250, 0, 0)), color_image(64, 48, (0, 250, 0)), color_image(64, 48, (0, 0, 250))]
    video = run("video.slideshow", {"images": imgs, "audio": tone(330, 1.0, 16000)}, {"seconds_per_image": 0.5, "fps": 10})
    assert video.frames.shape == (15, 48, 64, 3) and video.fps == pytest.approx(10)
    assert video.audio is not None and video.audio.duration == pytest.approx(1.5, abs=AAC_SLACK)
    assert np.argmax(video.frames[2].mean(axis=(0, 1))) == 0 and np.argmax(video.frames[12].mean(axis=(0, 1))) == 2


def test_slideshow_extends_to_a_long_soundtrack_and_crossfades() -> None:
    imgs = [color_image(32, 32, (0, 0, 0)), color_image(32, 32, (200, 200, 200))]
    video = run(
        "video.slideshow", {"images": imgs, "audio": tone(330, 3.0, 16000)},
        {"seconds_per_image": 0.5, "fps": 10, "fit_audio": "extend", "transition": 0.5},
    )
    assert len(video.frames) == 30 and video.audio.duration == pytest.approx(3.0, abs=AAC_SLACK)
    ramp = [level(f) for f in video.frames[15:20]]
    assert all(a < b for a, b in zip(ramp, ramp[1:])) and 0 < ramp[0] < 200  # a crossfade, not a cut


def test_slideshow_letterboxes_images_of_another_shape() -> None:
    video = run("video.slideshow", {"images": [gradient_image(64, 48), color_image(20, 60, (255, 255, 255))]},
                {"seconds_per_image": 0.2, "fps": 5})
    assert video.frames.shape == (2, 48, 64, 3) and video.audio is None
    tall = video.frames[1]
    assert level(tall[:, :10]) < 10 and level(tall[:, 28:36]) > 240  # black bars either side


def test_slideshow_over_the_duration_limit_is_refused() -> None:
    ctx = ToolContext(settings=Settings(max_video_seconds=5))
    with pytest.raises(ToolInputError, match="5s limit"):
        get_tool("video.slideshow").call({"images": [color_image()] * 3}, {"seconds_per_image": 2}, ctx)


# ---------------------------------------------------------------- Video Speed Changer


def test_speed_up_by_instruction(clip: Video) -> None:
    fast = run("video.speed", {"video": clip, "instruction": "speed up the video by 2x"})
    assert len(fast.frames) == 10 and fast.fps == pytest.approx(10)
    assert level(fast.frames[3]) == pytest.approx(level(clip.frames[6]), abs=4)
    assert fast.audio.duration == pytest.approx(1.0, abs=AAC_SLACK)
    assert estimate_f0(fast.audio.samples, fast.audio.sample_rate) == pytest.approx(440, rel=0.03)  # pitch kept


def test_slow_down_by_percent_without_pitch_preservation(clip: Video) -> None:
    slow = run("video.speed", {"video": clip, "instruction": "slow it down by 50%"}, {"preserve_pitch": False})
    assert len(slow.frames) == 40 and slow.audio.duration == pytest.approx(4.0, abs=2 * AAC_SLACK)
    assert estimate_f0(slow.audio.samples, slow.audio.sample_rate) == pytest.approx(220, rel=0.03)


def test_speed_needs_a_factor_it_can_read(clip: Video) -> None:
    with pytest.raises(ToolInputError, match="names no speed"):
        get_tool("video.speed").call({"video": clip, "instruction": "make it nicer"})
    with pytest.raises(ToolInputError, match="factor"):
        get_tool("video.speed").call({"video": clip})


# ---------------------------------------------------------------- Video Voiceover


def test_voiceover_on_a_silent_video_extends_it_to_the_speech(silent_clip: Video) -> None:
    script = "Here is a short voice over for this clip."
    spoken = speech(script, rate=165)
    out = run("video.voiceover", {"video": silent_clip, "text": script})
    assert out.audio is not None and out.audio.sample_rate == spoken.sample_rate
    assert out.duration == pytest.approx(spoken.duration, abs=0.15) and out.duration > silent_clip.duration
    assert out.audio.duration == pytest.approx(out.duration, abs=AAC_SLACK)
    assert rms(out.audio.samples) > 0.02
    assert level(out.frames[-1]) == pytest.approx(level(silent_clip.frames[-1]), abs=4)  # last frame held


def test_voiceover_mixed_and_trimmed_keeps_the_video_length(clip: Video) -> None:
    out = run("video.voiceover", {"video": clip, "text": "This sentence is far too long to fit into two seconds of video."},
              {"fit": "trim", "mode": "mix"})
    assert len(out.frames) == 20 and out.audio.duration == pytest.approx(2.0, abs=AAC_SLACK)
    assert out.audio.sample_rate == 16000  # mixed at the original track's rate


def test_voiceover_with_empty_script_is_refused(clip: Video) -> None:
    with pytest.raises(ToolInputError, match="empty"):
        get_tool("video.voiceover").call({"video": clip, "text": "   "})


# ---------------------------------------------------------------- Video Synchronization


def test_sync_stretches_audio_to_the_video(clip: Video) -> None:
    track = tone(300, 3.0, 22050)
    out = run("video.sync_audio", {"video": clip, "audio": track})
    assert len(out.frames) == 20 and out.audio.sample_rate == 22050
    assert out.audio.duration == pytest.approx(2.0, abs=AAC_SLACK)
    assert estimate_f0(out.audio.samples, 22050) == pytest.approx(300, rel=0.03)  # stretched, not sped up


def test_sync_pad_trim_pads_short_audio_with_silence(clip: Video) -> None:
    out = get_tool("video.sync_audio").call({"video": clip, "audio": tone(300, 0.5, 16000)}, {"method": "pad_trim"})["video"]
    assert out.audio.duration == pytest.approx(2.0, abs=1e-3)
    assert rms(out.audio.samples[8000:]) == 0.0 and rms(out.audio.samples[:8000]) > 0.1


def test_sync_refuses_an_extreme_stretch(clip: Video) -> None:
    with pytest.raises(ToolInputError, match="pad_trim"):
        get_tool("video.sync_audio").call({"video": clip, "audio": tone(300, 20.0, 8000)})


# ---------------------------------------------------------------- Video Stabilizer


def _motion(video: Video) -> float:
    gray = video.frames.astype(np.float64).mean(axis=3)
    return float(np.mean([np.abs(phase_correlation(gray[i - 1], gray[i])).sum() for i in range(1, len(gray))]))


def test_stabilizer_removes_camera_shake() -> None:
    shaky, offsets = shaky_video(frames=24, size=64, jitter=4)
    out = run("video.stabilize", {"video": roundtrip(shaky, Modality.VIDEO)}, {"smoothing": 30})
    assert out.frames.shape == shaky.frames.shape
    before, after = _motion(shaky), _motion(out)
    assert before > 3 and after < 0.25 * before


# ---------------------------------------------------------------- bad input


def test_corrupt_mp4_bytes_raise_a_decode_error(clip: Video) -> None:
    mp4, _ = encode(counter_video(4, 5.0), Modality.VIDEO)
    with pytest.raises(ArtifactDecodeError, match="'video'"):
        get_tool("video.frame").call({"video": mp4[:200] + b"\x00" * 300})


def test_frameless_video_and_wrong_type_are_refused() -> None:
    with pytest.raises(ToolInputError, match="no frames"):
        get_tool("video.stabilize").call({"video": Video(np.zeros((0, 8, 8, 3), np.uint8), 5.0)})
    with pytest.raises(ToolInputError, match="expects a video"):
        get_tool("video.speed").call({"video": color_image()}, {"factor": 2})
    with pytest.raises(ToolInputError, match="expects audio"):
        get_tool("video.sync_audio").call({"video": counter_video(2), "audio": Audio(np.zeros(3), 8000).samples})

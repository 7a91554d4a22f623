"""Codecs: round trips per modality, foreign formats made canonical, determinism, and every bad input."""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from pydantic import BaseModel

from orchestrator.artifacts import (
    ArtifactMeta,
    Audio,
    Limits,
    Modality,
    Video,
    canonicalize,
    content_id,
    decode,
    encode,
    infer_modality,
    sniff,
)
from orchestrator.errors import ArtifactDecodeError, ArtifactError, ArtifactTooLarge

# ------------------------------------------------------------------ media made in code


def gradient(w: int = 24, h: int = 16, mode: str = "RGB") -> Image.Image:
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    rgba = np.stack([x, y, np.full_like(x, 90), 255 - x], axis=2).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA").convert(mode)


def tone(seconds: float = 0.25, rate: int = 8000, channels: int = 1, freq: float = 440.0) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return Audio(np.stack([x, -x], axis=1) if channels == 2 else x, rate)


def counter_video(frames: int = 6, fps: float = 12.0, w: int = 32, h: int = 24, audio: Audio | None = None) -> Video:
    """Frame i is a flat gray of level 30 + 30 i: the frame order survives H.264."""
    levels = 30 + 30 * np.arange(frames)
    data = np.broadcast_to(levels[:, None, None, None], (frames, h, w, 3)).astype(np.uint8).copy()
    return Video(data, fps, audio)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def foreign_video(codec: str, fmt: str, frames: int = 6, fps: int = 12, size: tuple[int, int] = (32, 24)) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for frame in counter_video(frames, fps, *size).frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def codecs_of(mp4: bytes) -> tuple[str, str | None]:
    import av

    with av.open(io.BytesIO(mp4)) as c:
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        return c.streams.video[0].codec_context.name, audio


@pytest.fixture(scope="module")
def wav_bytes() -> bytes:
    return encode(tone())[0]


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    return encode(gradient())[0]


@pytest.fixture(scope="module")
def mp4_bytes() -> bytes:
    return encode(counter_video())[0]


# ------------------------------------------------------------------ round trips


def test_text_round_trip_is_utf8():
    data, meta = encode("héllo 🌍\nzweite Zeile")
    assert data == "héllo 🌍\nzweite Zeile".encode()
    assert decode(data, "text") == "héllo 🌍\nzweite Zeile"
    assert decode(b"", "text") == ""  # empty text is still text


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_round_trip_is_pixel_exact_and_keeps_the_mode(mode):
    img = gradient(mode=mode)
    data, meta = encode(img)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert (meta.width, meta.height) == (24, 16)
    back = decode(data, "image")
    assert back.mode == mode and back.size == (24, 16)
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_image_arrays_and_palette_images_encode_to_png():
    arr = np.asarray(gradient())
    assert infer_modality(arr) is Modality.IMAGE
    assert np.array_equal(np.asarray(decode(encode(arr)[0], "image")), arr)
    floats = arr.astype(np.float32) / 255.0  # diffusers' output_type="np"
    assert np.abs(np.asarray(decode(encode(floats, "image")[0], "image")).astype(int) - arr).max() <= 1
    palette = gradient(mode="RGBA").convert("P")
    palette.info["transparency"] = 0
    assert decode(encode(palette)[0], "image").mode == "RGBA"  # transparency survives


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 22050])
def test_wav_round_trip_keeps_rate_channels_and_samples(channels, rate):
    audio = tone(rate=rate, channels=channels)
    data, meta = encode(audio)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert (meta.sample_rate, meta.channels) == (rate, channels) and meta.duration == pytest.approx(0.25, abs=1e-3)
    back = decode(data, "audio")
    assert back.sample_rate == rate and back.channels == channels
    assert back.samples.shape == audio.samples.shape and back.samples.dtype == np.float32
    assert np.abs(back.samples - audio.samples).max() < 1e-4  # 16-bit PCM


def test_audio_is_clipped_and_cleaned_not_wrapped():
    wild = Audio(np.array([0.0, 2.0, -3.0, np.nan, np.inf], dtype=np.float32), 8000)
    back = decode(encode(wild)[0], "audio").samples
    assert back.max() <= 1.0 and back.min() >= -1.0 and np.isfinite(back).all()
    assert back[1] > 0.99 and back[2] < -0.99 and back[3] == 0.0


def test_mp4_without_audio_keeps_fps_frames_and_size():
    data, meta = encode(counter_video())
    assert data[4:8] == b"ftyp" and codecs_of(data) == ("h264", None)
    assert (meta.width, meta.height, meta.fps, meta.frames, meta.has_audio) == (32, 24, 12.0, 6, False)
    assert meta.duration == pytest.approx(0.5)
    back = decode(data, "video")
    assert back.frames.shape == (6, 24, 32, 3) and back.fps == 12.0 and back.audio is None
    levels = back.frames.reshape(6, -1).mean(axis=1)
    assert np.abs(levels - (30 + 30 * np.arange(6))).max() < 4  # every frame, in order


@pytest.mark.parametrize("channels", [1, 2])
def test_mp4_with_audio_track_keeps_its_rate_and_channels(channels):
    video = counter_video(frames=12, fps=24, audio=tone(seconds=0.5, rate=16000, channels=channels))
    data, meta = encode(video)
    assert codecs_of(data) == ("h264", "aac") and meta.has_audio
    back = decode(data, "video")
    assert back.frames.shape[0] == 12 and back.fps == 24.0
    assert back.audio is not None and back.audio.sample_rate == 16000 and back.audio.channels == channels
    assert back.audio.duration == pytest.approx(0.5, abs=0.1)  # AAC pads to whole frames
    assert np.abs(back.audio.samples).max() > 0.3  # the tone, not silence


def test_video_odd_sizes_are_padded_and_other_frame_layouts_accepted():
    gray = np.full((3, 15, 17), 128, dtype=np.uint8)
    data, meta = encode(Video(gray, 10))
    assert (meta.width, meta.height) == (18, 16)
    assert decode(data, "video").frames.shape == (3, 16, 18, 3)
    frames = [gradient(16, 16), gradient(16, 16)]
    assert decode(encode(Video(frames, 5))[0], "video").frames.shape == (2, 16, 16, 3)


def test_embedding_round_trip_is_exact_float32():
    vec = np.random.default_rng(0).standard_normal((3, 8))
    data, meta = encode(vec)
    assert data.startswith(b"\x93NUMPY") and meta.shape == [3, 8]
    back = decode(data, "embedding")
    assert back.dtype == np.float32 and np.array_equal(back, vec.astype(np.float32))
    assert np.array_equal(np.load(io.BytesIO(data)), back)  # plain numpy reads it


def test_json_round_trip_and_canonical_form():
    class Plan(BaseModel):
        task: str
        args: dict[str, Any]

    data, _ = encode({"b": [1, 2.5, None], "a": {"ü": True}})
    assert data == '{"a":{"ü":true},"b":[1,2.5,null]}'.encode()
    assert decode(data, "json") == {"a": {"ü": True}, "b": [1, 2.5, None]}
    assert decode(encode(Plan(task="t2i", args={"n": 1}))[0], "json") == {"task": "t2i", "args": {"n": 1}}
    assert decode(encode((1, "x"), "json")[0], "json") == [1, "x"]


# ------------------------------------------------------------------ foreign formats


def test_jpeg_becomes_png_and_its_orientation_tag_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    gradient(40, 20).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    data, meta, obj = canonicalize(buf.getvalue(), "image")
    assert data.startswith(b"\x89PNG") and (meta.width, meta.height) == (20, 40)
    assert decode(data, "image").size == (20, 40)
    plain = io.BytesIO()
    gradient(40, 20).save(plain, "JPEG", quality=95)
    back = np.asarray(decode(canonicalize(plain.getvalue(), "image").data, "image")).astype(int)
    assert np.abs(back - np.asarray(gradient(40, 20))).mean() < 3


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_image_formats_become_png(fmt):
    buf = io.BytesIO()
    gradient(18, 10).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    data, meta, obj = canonicalize(buf.getvalue(), "image")
    assert data.startswith(b"\x89PNG") and (meta.width, meta.height) == (18, 10)
    assert decode(data, "image").size == (18, 10)


def test_sixteen_bit_and_bilevel_images_keep_their_depth():
    deep = Image.fromarray((np.arange(20, dtype=np.int32).reshape(4, 5) * 3000))  # mode "I": stored as 16-bit
    back = decode(encode(deep)[0], "image")
    assert back.mode == "I;16" and np.array_equal(np.asarray(back), np.asarray(deep))
    bilevel = gradient().convert("1")
    assert np.array_equal(np.asarray(decode(encode(bilevel)[0], "image")), np.asarray(bilevel))


def test_m4a_audio_is_decoded_with_pyav_and_becomes_wav():
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(0.5, 16000).samples[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    data, meta, _ = canonicalize(buf.getvalue(), "audio")
    assert data[:4] == b"RIFF" and meta.sample_rate == 16000 and meta.duration == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("AIFF", "PCM_16")])
def test_flac_ogg_mp3_aiff_become_wav_with_the_rate_kept(fmt, subtype):
    import soundfile as sf

    audio = tone(seconds=0.5, rate=22050, channels=2)
    buf = io.BytesIO()
    sf.write(buf, audio.samples, 22050, format=fmt, subtype=subtype)
    data, meta, _ = canonicalize(buf.getvalue(), "audio")
    assert data[:4] == b"RIFF" and meta.sample_rate == 22050 and meta.channels == 2
    back = decode(data, "audio")
    assert back.duration == pytest.approx(0.5, abs=0.06)  # MP3 pads
    assert np.abs(back.samples).max() > 0.4


@pytest.mark.parametrize(("codec", "fmt"), [("mpeg4", "mp4"), ("libvpx", "webm"), ("libx264", "matroska")])
def test_other_video_codecs_and_containers_become_h264_mp4(codec, fmt):
    data, meta, obj = canonicalize(foreign_video(codec, fmt), "video")
    assert data[4:8] == b"ftyp" and codecs_of(data) == ("h264", None)
    assert (meta.width, meta.height, meta.frames, meta.fps) == (32, 24, 6, 12.0)
    assert decode(data, "video").frames.shape == (6, 24, 32, 3)


def test_canonical_bytes_are_kept_byte_for_byte(png_bytes, wav_bytes, mp4_bytes):
    for data, modality in [(png_bytes, "image"), (wav_bytes, "audio"), (mp4_bytes, "video"), (b"caf\xc3\xa9", "text")]:
        assert canonicalize(data, modality).data is data
    vec, _ = encode(np.arange(4, dtype=np.float32))
    assert canonicalize(vec, "embedding").data == vec


def test_json_and_embeddings_are_normalized_to_one_form():
    assert canonicalize(b'{ "b": 1,\n "a": 2 }', "json").data == b'{"a":2,"b":1}'
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
    data, meta, obj = canonicalize(buf.getvalue(), "embedding")
    assert data == encode(np.arange(6, dtype=np.float32).reshape(2, 3))[0] and meta.shape == [2, 3]


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize(
    "make",
    [
        lambda: gradient(mode="RGBA"),
        lambda: tone(channels=2),
        lambda: np.linspace(0, 1, 7),
        lambda: {"z": 1, "a": [1, {"k": "v"}]},
        lambda: "same text",
    ],
    ids=["image", "audio", "embedding", "json", "text"],
)
def test_same_object_same_bytes_same_id(make):
    first, second = encode(make()), encode(make())
    assert first[0] == second[0]
    assert content_id(first[0]) == content_id(second[0])


_ENCODE_VIDEOS = """
import hashlib, numpy as np
from orchestrator.artifacts import Audio, Video, encode
t = np.arange(8000) / 16000
track = Audio((0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
frames = (np.random.default_rng(0).random((6, 32, 32, 3)) * 255).astype(np.uint8)
print(hashlib.sha256(encode(Video(frames, 12))[0]).hexdigest(), hashlib.sha256(encode(Video(frames, 12, track))[0]).hexdigest())
"""


def test_same_video_same_bytes_in_every_process():
    """x264 and the muxer run bit-exact: two processes (two runs of a workflow) get the same ids.

    Measured in one process, a rare re-encode under heavy load differs: libx264 reads
    uninitialised stack memory (valgrind shows it), so this checks fresh processes.
    """
    import subprocess
    import sys

    runs = [subprocess.Popen([sys.executable, "-c", _ENCODE_VIDEOS], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("modality", ["image", "audio", "video", "embedding", "json"])
def test_zero_length_is_rejected(modality):
    with pytest.raises(ArtifactDecodeError, match="empty"):
        decode(b"", modality, artifact_id="sha256:" + "0" * 64)


def test_errors_name_the_artifact(png_bytes):
    aid = "sha256:" + "ab" * 32
    with pytest.raises(ArtifactDecodeError) as info:
        decode(png_bytes[:50], "image", artifact_id=aid)
    assert info.value.artifact_id == aid and aid in str(info.value)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95, -4])
def test_truncated_png(png_bytes, keep):
    cut = int(len(png_bytes) * keep) if keep > 0 else len(png_bytes) + keep
    with pytest.raises(ArtifactDecodeError, match="truncated"):
        decode(png_bytes[:cut], "image")


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_truncated_wav(wav_bytes, keep):
    with pytest.raises(ArtifactDecodeError, match="truncated"):
        decode(wav_bytes[: int(len(wav_bytes) * keep)], "audio")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.97])
def test_truncated_mp4(mp4_bytes, keep):
    with pytest.raises(ArtifactDecodeError, match="truncated|no video stream"):
        decode(mp4_bytes[: int(len(mp4_bytes) * keep)], "video")


def test_truncated_embedding():
    data, _ = encode(np.zeros(100, dtype=np.float32))
    with pytest.raises(ArtifactDecodeError, match="truncated"):
        decode(data[:-8], "embedding")


def test_mislabelled_bytes_say_what_they_really_are(wav_bytes, png_bytes, mp4_bytes):
    with pytest.raises(ArtifactDecodeError, match="declared image but the bytes are audio"):
        decode(wav_bytes, "image")  # a WAV named .png
    with pytest.raises(ArtifactDecodeError, match="declared audio but the bytes are image"):
        decode(png_bytes, "audio")
    with pytest.raises(ArtifactDecodeError, match="declared json but the bytes are video"):
        decode(mp4_bytes, "json")
    with pytest.raises(ArtifactDecodeError, match="no known image format"):
        decode(b"just some words", "image")
    with pytest.raises(ArtifactDecodeError, match="UTF-8"):
        decode(png_bytes, "text")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_bomb_is_refused_before_decoding():
    with pytest.raises(ArtifactTooLarge, match="10000x10000 = 100000000 pixels, over the 64000000-pixel limit"):
        decode(png_claiming(10_000, 10_000), "image")
    with pytest.raises(ArtifactTooLarge, match="decompression-bomb"):
        decode(png_claiming(100_000, 100_000), "image", limits=Limits(max_pixels=10**12))
    with pytest.raises(ArtifactTooLarge, match="pixel limit"):
        decode(encode(gradient())[0], "image", limits=Limits(max_pixels=100))


def test_encoding_checks_limits_too():
    with pytest.raises(ArtifactTooLarge, match="pixel limit"):
        encode(gradient(), limits=Limits(max_pixels=100))
    with pytest.raises(ArtifactTooLarge, match="duration limit"):
        encode(tone(seconds=1.0), limits=Limits(max_audio_seconds=0.5))
    with pytest.raises(ArtifactTooLarge, match="byte limit"):
        encode("x" * 100, limits=Limits(max_bytes=10))


def test_audio_and_video_over_the_duration_limit(wav_bytes):
    with pytest.raises(ArtifactTooLarge, match=r"audio is 1\.0s long, over the 0\.5s duration limit"):
        decode(encode(tone(seconds=1.0))[0], "audio", limits=Limits(max_audio_seconds=0.5))
    long_video = encode(counter_video(frames=12, fps=12))[0]
    with pytest.raises(ArtifactTooLarge, match="video is 1.0s long"):
        decode(long_video, "video", limits=Limits(max_video_seconds=0.5))
    with pytest.raises(ArtifactTooLarge, match="pixel limit"):
        decode(long_video, "video", limits=Limits(max_pixels=100))


@pytest.mark.parametrize("modality", ["text", "image", "audio", "json"])
def test_over_the_size_limit(modality, png_bytes, wav_bytes):
    data = {"text": b"x" * 64, "image": png_bytes, "audio": wav_bytes, "json": b"[" + b"1," * 40 + b"1]"}[modality]
    with pytest.raises(ArtifactTooLarge, match=r"over the 32-byte limit"):
        decode(data, modality, limits=Limits(max_bytes=32))


def test_invalid_utf8_text_names_the_byte():
    with pytest.raises(ArtifactDecodeError, match="not valid UTF-8 at byte 3"):
        decode(b"abc\xff\xfe", "text")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b'{"a": 1', "malformed"), (b"{'a': 1}", "malformed"), (b'{"a": NaN}', "NaN is not valid JSON"), (b'"\xff"', "UTF-8")],
)
def test_malformed_json(data, reason):
    with pytest.raises(ArtifactDecodeError, match=reason):
        decode(data, "json")


def test_npy_header_lying_about_its_size_is_refused_before_allocating():
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)})
    with pytest.raises(ArtifactDecodeError, match=r"shape \(100000000000,\) needs 800000000000 data bytes, 16 present"):
        decode(buf.getvalue() + b"\x00" * 16, "embedding")


def test_pickled_or_non_numeric_npy_is_refused():
    for arr in (np.array([{"a": 1}], dtype=object), np.array(["a", "b"])):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        with pytest.raises(ArtifactDecodeError):
            decode(buf.getvalue(), "embedding")


@pytest.mark.parametrize(
    ("obj", "modality", "reason"),
    [
        ({"a": float("nan")}, "json", "Out of range float"),
        ({"a": object()}, "json", "not JSON serializable"),
        (Video(np.zeros((0, 4, 4, 3), np.uint8), 10), "video", "at least one frame"),
        (np.float32(1.0), "embedding", "at least one dimension"),
        (np.array([1 + 2j]), "embedding", "real numbers"),
        (12, "text", "must be str"),
        (np.zeros((4, 4, 2), np.uint8), "image", "must be"),
    ],
)
def test_objects_that_cannot_be_encoded(obj, modality, reason):
    with pytest.raises(ArtifactDecodeError, match=reason):
        encode(obj, modality)


def test_sniff():
    assert sniff(encode(gradient())[0]) is Modality.IMAGE
    assert sniff(encode(tone())[0]) is Modality.AUDIO
    assert sniff(encode(counter_video())[0]) is Modality.VIDEO
    assert sniff(encode(np.zeros(2))[0]) is Modality.EMBEDDING
    assert sniff(b'{"a": 1}') is None and sniff(b"BMW is a car brand, not a bitmap") is None


# ------------------------------------------------------------------ properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.text())
def test_any_text_round_trips(text):
    assert decode(encode(text)[0], "text") == text


@given(json_values)
def test_any_json_round_trips_and_its_encoding_is_a_fixed_point(value):
    data, _ = encode(value, "json")
    back = decode(data, "json")
    assert back == value
    assert encode(back, "json")[0] == data
    assert canonicalize(data, "json").data == data


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 4]))))
def test_any_small_image_round_trips_exactly(arr):
    data, meta = encode(arr)
    assert (meta.width, meta.height) == (arr.shape[1], arr.shape[0])
    assert np.array_equal(np.asarray(decode(data, "image")), arr)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=5), elements=st.floats(width=32)))
def test_any_embedding_round_trips_exactly(arr):
    back = decode(encode(arr)[0], "embedding")
    assert back.shape == arr.shape and np.array_equal(back, arr, equal_nan=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_media_raise_artifact_errors_only(png_bytes, wav_bytes, mp4_bytes, data):
    """Cut or flip bytes anywhere: decoding either works or raises an ArtifactError, never a raw crash."""
    modality, original = data.draw(st.sampled_from([("image", png_bytes), ("audio", wav_bytes), ("video", mp4_bytes)]))
    blob = bytearray(original[: data.draw(st.integers(0, len(original)))])
    for _ in range(data.draw(st.integers(0, 3))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        decode(bytes(blob), modality)
    except ArtifactError:
        pass


def test_meta_model_accepts_provenance_and_extra_keys():
    meta = ArtifactMeta.model_validate({"width": 2, "provenance": {"tool": "t", "seed": 3}, "caption": "x"})
    assert meta.provenance is not None and meta.provenance.seed == 3
    assert json.loads(meta.model_dump_json())["caption"] == "x"

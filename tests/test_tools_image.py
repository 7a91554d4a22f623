"""Image tools: resize, crop, rotate, grayscale and the Image Stitcher, on real PNG round trips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from orchestrator import Settings, ToolContext, get_tool
from orchestrator.artifacts import Modality, encode
from orchestrator.errors import ArtifactDecodeError, ToolInputError

from media_factory import color_image, gradient_image, roundtrip, tone


def call(name: str, inputs: dict, params: dict | None = None, ctx: ToolContext | None = None):
    out = get_tool(name).call(inputs, params or {}, ctx)
    return roundtrip(out["image"], Modality.IMAGE)


def small_pixels(limit: int) -> ToolContext:
    return ToolContext(settings=Settings(max_image_pixels=limit))


def test_tools_are_registered_with_their_tasks() -> None:
    assert get_tool("image.stitch").spec.task == "image-stitcher"
    assert get_tool("image.resize").spec.task == "image-resize"
    assert get_tool("image.stitch").spec.input("images").many


# ---------------------------------------------------------------- resize


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"width": 32}, (32, 24)),
        ({"height": 96}, (128, 96)),
        ({"scale": 0.5}, (32, 24)),
        ({"width": 40, "height": 40, "fit": "contain"}, (40, 30)),
        ({"width": 40, "height": 40, "fit": "cover"}, (40, 40)),
        ({"width": 40, "height": 10, "fit": "stretch"}, (40, 10)),
    ],
)
def test_resize_sizes(params: dict, size: tuple[int, int]) -> None:
    assert call("image.resize", {"image": gradient_image(64, 48)}, params).size == size


def test_resize_keeps_content_orientation() -> None:
    out = np.asarray(call("image.resize", {"image": gradient_image(64, 48)}, {"scale": 0.5}))
    assert out[0, 0, 0] < 30 and out[0, -1, 0] > 220  # red still grows left to right
    assert out[0, 0, 1] < 30 and out[-1, 0, 1] > 220  # green top to bottom


def test_resize_over_the_pixel_limit_is_refused_before_allocating() -> None:
    with pytest.raises(ToolInputError, match="pixel limit"):
        get_tool("image.resize").call({"image": color_image()}, {"scale": 16}, small_pixels(100_000))


def test_input_image_over_the_pixel_limit_is_refused() -> None:
    with pytest.raises(ToolInputError, match="input image on port 'image' is 64x48 = 3072 pixels"):
        get_tool("image.grayscale").call({"image": color_image(64, 48)}, {}, small_pixels(1000))


def test_resize_needs_one_way_to_size() -> None:
    with pytest.raises(ToolInputError, match="either scale or width"):
        get_tool("image.resize").call({"image": color_image()}, {"scale": 2, "width": 3})
    with pytest.raises(ToolInputError, match="give width, height or scale"):
        get_tool("image.resize").call({"image": color_image()}, {})


# ---------------------------------------------------------------- crop, rotate, grayscale


def test_crop_pixels_and_fractions() -> None:
    img = gradient_image(64, 48)
    assert call("image.crop", {"image": img}, {"left": 10, "top": 5, "width": 20, "height": 10}).size == (20, 10)
    right_half = call("image.crop", {"image": img}, {"left": 0.5, "relative": True})
    assert right_half.size == (32, 48)
    assert np.asarray(right_half)[0, 0, 0] > 120  # it is the right (redder) half


def test_crop_overhang_is_clamped_or_refused() -> None:
    img = color_image(64, 48)
    assert call("image.crop", {"image": img}, {"left": 50, "width": 100}).size == (14, 48)
    with pytest.raises(ToolInputError, match="overhangs"):
        get_tool("image.crop").call({"image": img}, {"left": 50, "width": 100, "clamp": False})
    with pytest.raises(ToolInputError, match="outside"):
        get_tool("image.crop").call({"image": img}, {"left": 64})


def test_rotate_90_swaps_sides() -> None:
    out = call("image.rotate", {"image": gradient_image(64, 48)}, {"degrees": 90})
    assert out.size == (48, 64)


def test_grayscale_and_alpha_kept() -> None:
    gray = call("image.grayscale", {"image": color_image(color=(255, 0, 0))})
    assert gray.mode == "L" and gray.size == (64, 48)
    assert abs(int(np.asarray(gray)[0, 0]) - 76) <= 2  # ITU-R 601 luma of pure red
    rgba = Image.new("RGBA", (8, 8), (0, 255, 0, 128))
    out = call("image.grayscale", {"image": rgba})
    assert out.mode == "LA" and np.asarray(out)[0, 0, 1] == 128


# ---------------------------------------------------------------- stitcher


def test_stitch_horizontal_matches_heights() -> None:
    a, b = color_image(40, 30, (255, 0, 0)), color_image(20, 60, (0, 0, 255))
    out = call("image.stitch", {"images": [a, b]}, {"direction": "horizontal"})
    assert out.size == (50, 30)  # b scaled to height 30 -> 10 wide
    arr = np.asarray(out)
    assert tuple(arr[15, 5]) == (255, 0, 0) and tuple(arr[15, 45]) == (0, 0, 255)


def test_stitch_vertical_with_gap() -> None:
    a, b = color_image(40, 30, (255, 0, 0)), color_image(40, 10, (0, 0, 255))
    out = call("image.stitch", {"images": [a, b]}, {"direction": "vertical", "gap": 4, "background": "white"})
    assert out.size == (40, 44)
    assert tuple(np.asarray(out)[32, 20]) == (255, 255, 255)


def test_stitch_grid_collage() -> None:
    imgs = [color_image(20, 10, c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (200, 200, 0)]]
    out = call("image.stitch", {"images": imgs}, {"direction": "grid", "columns": 3})
    assert out.size == (60, 20)
    arr = np.asarray(out)
    assert tuple(arr[5, 25]) == (0, 255, 0) and tuple(arr[15, 5]) == (9, 9, 9)


def test_stitch_single_image_is_returned_as_is() -> None:
    assert call("image.stitch", {"images": color_image(20, 10)}).size == (20, 10)


def test_stitch_over_the_pixel_limit_is_refused() -> None:
    with pytest.raises(ToolInputError, match="pixel limit"):
        get_tool("image.stitch").call({"images": [color_image(100, 100)] * 4}, {}, small_pixels(20_000))


# ---------------------------------------------------------------- bad input


def test_corrupt_image_bytes_raise_a_decode_error() -> None:
    png, _ = encode(color_image(), Modality.IMAGE)
    with pytest.raises(ArtifactDecodeError, match="images"):
        get_tool("image.stitch").call({"images": [png[: len(png) // 2]]})


def test_audio_on_an_image_port_is_a_tool_input_error() -> None:
    with pytest.raises(ToolInputError, match="expects an image, got Audio"):
        get_tool("image.resize").call({"image": tone()}, {"width": 10})

"""Prebuilt graphs made of the built-in media tools (no models needed)."""

from __future__ import annotations

from orchestrator.workflow import Workflow

from . import graph


@graph("narrated-slideshow")
def narrated_slideshow() -> Workflow:
    """Two images and a script -> a slideshow video with the script spoken over it.

    Inputs: ``first`` (image), ``second`` (image), ``script`` (text).
    Outputs: ``video`` (MP4 with a speech track).
    """
    return (
        Workflow("narrated-slideshow", description="Slideshow of two images, narrated by espeak-ng.")
        .add_input("first", "image")
        .add_input("second", "image")
        .add_input("script", "text")
        .add_node("show", "video.slideshow", {"seconds_per_image": 1.5, "fps": 8})
        .connect("first", "show.images")
        .connect("second", "show.images")
        .add_node("narrate", "video.voiceover", inputs={"video": "show.video", "text": "script"})
        .add_output("video", "narrate.video")
    )


@graph("clean-and-visualize")
def clean_and_visualize() -> Workflow:
    """A recording -> noise reduction -> effects by instruction -> cleaned audio plus its waveform image.

    Inputs: ``audio`` (audio), ``instruction`` (text, e.g. "add reverb").
    Outputs: ``audio`` (WAV), ``waveform`` (PNG).
    """
    return (
        Workflow("clean-and-visualize", description="Denoise, apply effects, draw the waveform.")
        .add_input("audio", "audio")
        .add_input("instruction", "text")
        .add_node("denoise", "audio.denoise", inputs={"audio": "audio"})
        .add_node("effects", "audio.effects", inputs={"audio": "denoise.audio", "instruction": "instruction"})
        .add_node("draw", "audio.visualize", {"kind": "waveform"}, inputs={"audio": "effects.audio"})
        .add_output("audio", "effects.audio")
        .add_output("waveform", "draw.image")
    )


@graph("video-soundtrack")
def video_soundtrack() -> Workflow:
    """A video -> its audio track and a spectrogram of it.

    Inputs: ``video`` (video with an audio track).
    Outputs: ``audio`` (WAV), ``spectrogram`` (PNG).
    """
    return (
        Workflow("video-soundtrack", description="Extract a video's audio and draw its spectrogram.")
        .add_input("video", "video")
        .add_node("extract", "video.extract_audio", inputs={"video": "video"})
        .add_node("draw", "audio.visualize", {"kind": "spectrogram"}, inputs={"audio": "extract.audio"})
        .add_output("audio", "extract.audio")
        .add_output("spectrogram", "draw.image")
    )

"""Prebuilt graphs that use several decoders together."""

from __future__ import annotations

from orchestrator.workflow import Workflow

from . import graph


@graph("illustrated-story")
def illustrated_story() -> Workflow:
    """A scene and a script -> an image, music, narration, and a narrated video with the music under it.

    Inputs: ``scene`` (text: what to draw and the mood of the music), ``script`` (text to read aloud).
    Outputs: ``image`` (PNG), ``music`` (WAV), ``narration`` (WAV), ``video`` (MP4: the image held for the
    length of the music, the narration mixed over it).
    """
    return (
        Workflow("illustrated-story", description="Text to image + music + narration, assembled into a video.")
        .add_input("scene", "text")
        .add_input("script", "text")
        .add_node("draw", "image.generate", inputs={"text": "scene"})
        .add_node("compose", "music.generate", {"duration": 4.0}, inputs={"text": "scene"})
        .add_node("narrate", "speech.espeak", inputs={"text": "script"})
        .add_node("assemble", "video.slideshow", {"fps": 8, "fit_audio": "extend"},
                  inputs={"images": "draw.image", "audio": "compose.audio"})
        .add_node("voice", "video.voiceover", {"mode": "mix"}, inputs={"video": "assemble.video", "text": "script"})
        .add_output("image", "draw.image")
        .add_output("music", "compose.audio")
        .add_output("narration", "narrate.audio")
        .add_output("video", "voice.video")
    )

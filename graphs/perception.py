"""Prebuilt graphs that chain encoders (understanding) into decoders (generation).

Each uses the active profile's models (``tiny`` in tests: outputs are noise).
"""

from __future__ import annotations

from orchestrator.workflow import Workflow

from . import graph

__all__ = ["describe_and_detect", "photo_to_speech", "speech_to_image"]


@graph("photo-to-speech")
def photo_to_speech() -> Workflow:
    """A photo -> a caption -> the caption spoken aloud (image-to-text, then text-to-speech).

    Inputs: ``photo`` (image).
    Outputs: ``caption`` (text), ``speech`` (WAV, eSpeak NG voice).
    """
    return (
        Workflow("photo-to-speech", description="Describe a photo in a sentence and speak the description.")
        .add_input("photo", "image", description="The photo to describe.")
        .add_node("caption", "image.caption", inputs={"image": "photo"})
        .add_node("speak", "speech.espeak", inputs={"text": "caption.text"})
        .add_output("caption", "caption.text")
        .add_output("speech", "speak.audio")
    )


@graph("speech-to-image")
def speech_to_image() -> Workflow:
    """Spoken words -> a transcript -> an image of what was said (speech recognition, then text-to-image).

    Inputs: ``speech`` (audio, any rate and length).
    Outputs: ``transcript`` (text), ``segments`` (JSON with timestamps), ``image`` (PNG).
    """
    return (
        Workflow("speech-to-image", description="Transcribe a spoken prompt and draw it.")
        .add_input("speech", "audio", description="A spoken description of the picture wanted.")
        .add_node("transcribe", "speech.transcribe", inputs={"audio": "speech"})
        .add_node("draw", "image.generate", inputs={"text": "transcribe.text"})
        .add_output("transcript", "transcribe.text")
        .add_output("segments", "transcribe.segments")
        .add_output("image", "draw.image")
    )


@graph("describe-and-detect")
def describe_and_detect() -> Workflow:
    """A photo -> objects boxed and a caption, in parallel -> the caption spoken (HuggingGPT style).

    Inputs: ``photo`` (image).
    Outputs: ``annotated`` (the photo with boxes drawn), ``objects`` (JSON), ``caption`` (text),
    ``speech`` (WAV).
    """
    return (
        Workflow("describe-and-detect", description="Detect objects and caption a photo, then narrate the caption.")
        .add_input("photo", "image", description="The photo to analyse.")
        .add_node("detect", "image.detect", inputs={"image": "photo"})
        .add_node("caption", "image.caption", inputs={"image": "photo"})
        .add_node("speak", "speech.espeak", inputs={"text": "caption.text"})
        .add_output("annotated", "detect.image")
        .add_output("objects", "detect.objects")
        .add_output("caption", "caption.text")
        .add_output("speech", "speak.audio")
    )

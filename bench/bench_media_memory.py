"""Peak memory of storing media that costs more than it weighs, streamed vs decoded whole (a benchmark).

Two small files that decode to a lot, as an attacker would upload them:

- a FLAC of silence, 8 channels at 96 kHz for 60 s (a few dozen KiB; 46 million samples);
- an MP4 of 40 black 2048x2048 frames (a few hundred KiB; 168 million pixels).

For each, in one run, it measures the peak resident memory a call adds (``VmHWM`` after the
call less ``VmRSS`` before it, the mark reset first; a fresh process per measurement) of

- ``canonicalize``: what ``store.put`` does now (audio converted block by block, video validated
  or transcoded frame by frame; the decoded-size limits raised here so the files are admitted), and
- the reference, ``encode_object(decode(data))``: decoding the whole file, then encoding it, as
  ``put`` did before.

It prints both and the ratio reference / streamed (goal: >= 3 for both), and, with the default
limits, whether each file is refused before decoding (``max_audio_samples``, ``max_video_pixels``).
``--measure MODALITY FILE MODE`` runs one measurement and prints it as JSON (the test suite uses it).

Usage: .venv/bin/python bench/bench_media_memory.py [--frames 40] [--side 2048]
       .venv/bin/python bench/bench_media_memory.py --measure video clip.mp4 streamed
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_factory import black_mp4, silent_flac  # noqa: E402

from orchestrator.artifacts import Limits  # noqa: E402
from orchestrator.artifacts.codecs import canonicalize, decode, encode_object  # noqa: E402
from orchestrator.errors import ArtifactTooLarge  # noqa: E402

ROOMY = Limits(max_audio_samples=1 << 40, max_video_pixels=1 << 40)


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS


def measure(modality: str, path: str, mode: str) -> dict[str, object]:
    """In this process: the RSS high-water mark added by one ``mode`` call on the file."""
    data = Path(path).read_bytes()
    decode(black_mp4(16, 1), "video")  # load the codecs first: their cost is not the call's
    before = _status_mib("VmRSS")
    _reset_peak()
    try:
        if mode == "streamed":
            canonicalize(data, modality, limits=ROOMY)
        elif mode == "whole":
            encode_object(decode(data, modality, limits=ROOMY), modality, limits=ROOMY)
        else:
            canonicalize(data, modality, limits=Limits())
        outcome = "admitted"
    except ArtifactTooLarge as exc:
        outcome = f"refused ({exc.context.get('limit')})"
    return {"mode": mode, "peak_mib": round(_status_mib("VmHWM") - before, 1), "outcome": outcome}


def measure_in_child(modality: str, data: bytes, mode: str) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=f".{modality}") as f:
        f.write(data)
        f.flush()
        out = subprocess.run([sys.executable, __file__, "--measure", modality, f.name, mode], capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--measure", nargs=3, metavar=("MODALITY", "FILE", "MODE"),
                        help="one measurement (MODE: streamed, whole or default) as JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    cases = [("audio", "FLAC 8 ch 96 kHz 60 s", silent_flac(8, 96_000, 60)),
             ("video", f"MP4 {args.frames} x {args.side}x{args.side}", black_mp4(args.side, args.frames))]
    print(f"{'file':<28}{'bytes':>10}{'streamed MiB':>14}{'whole MiB':>11}{'ratio':>8}  default limits")
    for modality, label, data in cases:
        streamed = float(measure_in_child(modality, data, "streamed")["peak_mib"])  # type: ignore[arg-type]
        whole = float(measure_in_child(modality, data, "whole")["peak_mib"])  # type: ignore[arg-type]
        default = measure_in_child(modality, data, "default")
        print(f"{label:<28}{len(data):>10}{streamed:>14.1f}{whole:>11.1f}{whole / max(streamed, 1.0):>8.1f}"
              f"  {default['outcome']} (+{default['peak_mib']} MiB)")


if __name__ == "__main__":
    main()

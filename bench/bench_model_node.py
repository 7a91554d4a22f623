"""A one-node workflow around a tiny model against the bare model call (not a test).

Text-to-image (``image.generate`` on the tiny zoo's diffusers pipeline) and
captioning (``image.caption`` on the tiny BLIP), warm, cache off, on both stores:
the median time of a one-node workflow run against the median time of calling the
loaded pipeline / model directly with the same settings, rounds taken alternately in
one process (goal: ours/bare <= 1.05). Beside each ratio: the workflow's cost in
milliseconds over the bare call (the median of the per-round differences), the same ratio in
process CPU time (every thread's, mean per call: what the code costs, which a loaded machine
changes far less than wall time), and what one more run costs the store (Redis round trips, or
files the directory store wrote), a count machine load does not change.
A third contender in the same rounds, the bare call as the one node of a plain LangGraph
``StateGraph`` (``invoke``, no store, no events), shows what LangGraph's own run costs
around the call: the floor under any engine compiled to it. Its line gives its ratio to the
bare call and ours to it.
Each workflow is run two ways: ``run()`` (blocking, no cancel flag: LangGraph's sync path, the
model called on the caller's thread) and ``arun()`` on an event loop with a cancel flag (the path
of the agent and the server: the call handed to a tool thread), the latter printed as ``(loop)``.
On a loaded machine each Redis round trip right after a model call costs several
times an idle one (the server has to be woken and scheduled again).

    .venv/bin/python bench/bench_model_node.py [--rounds 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench_workflow import StoreTrips, bench_stores  # noqa: E402

from orchestrator import RedisArtifactStore  # noqa: E402
from orchestrator.registry import get_tool  # noqa: E402
from orchestrator.runtime import ModelManager, build_zoo, get_profile  # noqa: E402
from orchestrator.workflow import CancelFlag, CompiledWorkflow, Workflow  # noqa: E402


def bare_text_to_image(manager: ModelManager, profile: Any) -> Callable[[int], Any]:
    import torch

    choice = profile.resolve("text-to-image", tool="image.generate")
    opts = {"num_inference_steps": int(choice.option("steps", 25)), "guidance_scale": float(choice.option("guidance", 7.5)),
            "width": choice.option("width"), "height": choice.option("height")}

    def call(seed: int) -> Any:
        with manager.use(choice, "diffusers.text2img") as pipe:
            return pipe(prompt=["a lighthouse at dusk"], generator=[torch.Generator().manual_seed(seed)],
                        output_type="pil", **opts).images[0]

    return call


def bare_caption(manager: ModelManager, profile: Any, photo: Image.Image) -> Callable[[int], Any]:
    import torch

    choice = profile.resolve("image-to-text", tool="image.caption")
    max_tokens = int(choice.option("max_tokens", 30))

    def call(seed: int) -> Any:
        with manager.use(choice, "transformers.image-to-text") as (model, processor):
            inputs = processor(images=[photo], return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_tokens, num_beams=1, do_sample=False)
            return processor.batch_decode(out, skip_special_tokens=True)[0].strip()

    return call


def one_node(tool: str, port: str, modality: str) -> Workflow:
    wf = Workflow(f"one-{tool}").add_input(port, modality).add_node("n", tool, inputs={port: port})
    out = "image" if tool == "image.generate" else "text"
    return wf.add_output("out", f"n.{out}")


_LOOP: asyncio.AbstractEventLoop | None = None


def on_loop(compiled: CompiledWorkflow, inputs: dict[str, Any], **options: Any) -> Any:
    """``compiled.arun`` with a cancel flag on one long-lived event loop: the agent's and the server's path."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(compiled.arun(inputs, cancel=CancelFlag(), **options))


def plain_langgraph(bare: Callable[[int], Any]) -> Callable[[int], Any]:
    """``bare`` as the one node of a plain LangGraph graph, invoked per call."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        seed: int
        out: Any

    graph = StateGraph(State)
    graph.add_node("n", lambda state: {"out": bare(state["seed"])})
    graph.add_edge(START, "n")
    graph.add_edge("n", END)
    compiled = graph.compile()
    return lambda seed: compiled.invoke({"seed": seed})["out"]


def compare(label: str, bare: Callable[[int], Any], ours: Callable[[int], Any], rounds: int,
            trips: StoreTrips) -> float:
    calls = {"bare": bare, "langgraph": plain_langgraph(bare), "ours": ours}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call(0)  # warm: load, first call
    for r in range(1, rounds + 1):
        for name, call in calls.items():
            c0, t0 = time.process_time(), time.perf_counter()
            call(r)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    b, lg, o = (statistics.median(wall[name]) * 1e3 for name in calls)

    def over(name: str) -> float:  # ms over the bare call: the median of the per-round differences
        return statistics.median(x - y for x, y in zip(wall[name], wall["bare"])) * 1e3

    cpu_b, cpu_lg, cpu_o = (statistics.mean(cpu[name]) * 1e3 for name in calls)
    cost = trips.per_node(lambda: ours(rounds + 1), 1).replace("/node", "/run")
    print(f"  {label:30s} bare {b:7.2f} ms   one-node workflow {o:7.2f} ms   -> {o / b:.3f}x (goal <= 1.05)"
          f"   {over('ours'):+6.2f} ms; CPU {cpu_o / cpu_b:.3f}x ({cpu_o - cpu_b:+.2f} ms); {cost}")
    print(f"  {'':30s} plain LangGraph around the bare call {lg:7.2f} ms -> {lg / b:.3f}x ({over('langgraph'):+.2f} ms;"
          f" CPU {cpu_lg / cpu_b:.3f}x); ours / plain LangGraph {o / lg:.3f}x (CPU {cpu_o / cpu_lg:.3f}x)")
    return o / b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--redis", default=os.environ.get("ORCHESTRATOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    import torch

    get_tool("image.caption"), get_tool("image.generate")
    from tools._encoding import register_backends

    register_backends()  # the encoders' model backends (the tools register them on first call)
    profile = get_profile("tiny")
    build_zoo(["tiny-sd", "tiny-blip-caption"])
    manager = ModelManager(device="cpu", cpu_threads=args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; torch {torch.get_num_threads()} "
          f"threads; medians of {args.rounds} alternating rounds)")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    t2i = one_node("image.generate", "text", "text").compile()
    cap = one_node("image.caption", "image", "image").compile()
    with tempfile.TemporaryDirectory() as tmp:
        for label, store in bench_stores(tmp, args.redis):
            photo_ref = store.put(photo)
            trips = StoreTrips(store)
            run = {"store": store, "cache": False, "models": manager, "profile": profile}
            compare(f"[{label}] text-to-image", bare_text_to_image(manager, profile),
                    lambda s: t2i.run({"text": "a lighthouse at dusk"}, seed=s, **run), args.rounds, trips)
            compare(f"[{label}] captioning", bare_caption(manager, profile, photo),
                    lambda s: cap.run({"image": photo_ref}, **run), args.rounds, trips)
            compare(f"[{label}] text-to-image (loop)", bare_text_to_image(manager, profile),
                    lambda s: on_loop(t2i, {"text": "a lighthouse at dusk"}, seed=s, **run), args.rounds, trips)
            compare(f"[{label}] captioning (loop)", bare_caption(manager, profile, photo),
                    lambda s: on_loop(cap, {"image": photo_ref}, **run), args.rounds, trips)
            if isinstance(store, RedisArtifactStore):
                store.clear_prefix()


if __name__ == "__main__":
    main()

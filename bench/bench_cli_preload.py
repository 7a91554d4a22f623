"""``orchestrator run`` wall time with and without importing the model libraries while planning (not a test).

A scripted LLM over real HTTP (tests/llm_server.py) plans one text-to-image task and answers
after ``--llm-seconds`` (a remote model thinking); each round runs the CLI as a subprocess
twice, alternating: with the default ``preload_imports`` (torch, transformers, diffusers
import in a background thread meanwhile) and with ``ORCHESTRATOR_PRELOAD_IMPORTS=[]``.
Prints the medians and their ratio. (With the embedded offline planner both compete for one
interpreter lock, so the overlap gains little there; behind a remote planner it hides the imports.)

    .venv/bin/python bench/bench_cli_preload.py [--rounds 3] [--llm-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import Reply, ScriptedLLMServer  # noqa: E402

PLAN = ('{"tasks": [{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a red fox in the snow"}}], '
        '"refusal": null}')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llm-seconds", type=float, default=2.0)
    args = ap.parse_args()

    def answer(body: dict) -> Reply:
        planning = "task planner" in body["messages"][0]["content"]
        return Reply(PLAN if planning else "Here it is: [image]", hang=args.llm_seconds if planning else None)

    times: dict[str, list[float]] = {"preload": [], "none": []}
    with ScriptedLLMServer([answer], repeat_last=True) as srv, tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
        env.update(ORCHESTRATOR_DATA_DIR=str(Path(tmp) / "data"), ORCHESTRATOR_REDIS_URL="", TQDM_DISABLE="1",
                   ORCHESTRATOR_PROFILE="tiny")
        cmd = [sys.executable, "-m", "orchestrator", "run", "draw a red fox in the snow", "--llm",
               f"openai:m@{srv.base_url}", "--no-cache", "-q", "--out", str(Path(tmp) / "out")]
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)  # warm the file cache, build the zoo
        for _ in range(args.rounds):
            for mode in ("preload", "none"):
                run_env = env if mode == "preload" else {**env, "ORCHESTRATOR_PRELOAD_IMPORTS": "[]"}
                started = time.perf_counter()
                subprocess.run(cmd, env=run_env, cwd=ROOT, check=True, capture_output=True)
                times[mode].append(time.perf_counter() - started)
    with_, without = statistics.median(times["preload"]), statistics.median(times["none"])
    print(f"orchestrator run, planner answering after {args.llm_seconds:.1f} s ({args.rounds} rounds, median):")
    print(f"  imports while planning  {with_:6.2f} s")
    print(f"  imports when first used {without:6.2f} s")
    print(f"  {without / with_:.2f}x faster with the preload ({without - with_:+.2f} s)")


if __name__ == "__main__":
    main()

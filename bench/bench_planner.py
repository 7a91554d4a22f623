"""Plan quality with TaskBench's metrics, and planner throughput.

    python bench/bench_planner.py --data IN.jsonl --text FIELD [--llm SPEC] [--predictions OUT.jsonl]

IN: JSON lines, each with ``id`` and the request text in the field named by
``--text``. A line may carry TaskBench gold (``task_nodes``, ``task_links``, and
``type``); then the bench prints node F1 and edge F1 (micro over per-sample sets of
tool names and of (source, target) links), the refusal rate (a refused request
counts as an empty plan), and the same by graph type. Lines without gold are
planned and written, not scored.

OUT: one JSON line per input line::

    {"id": ..., "task_nodes": [{"task": "<TaskBench tool>", "arguments": [...]}],
     "task_links": [{"source": "<name>", "target": "<name>"}], "refused": true|false}

Our task names become TaskBench's 40 tool names through bench/taskbench_tools.toml;
a task with no counterpart is left out, and links through it are joined across it.

The default planner is the offline one (orchestrator.agent.offline); ``--llm SPEC``
selects another through ``orchestrator.agent.make_planner``. Requests/s is the
planning time alone (the embedding model and the tool side are loaded before the clock starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.agent.plan import Plan, TaskCatalog  # noqa: E402
from orchestrator.agent.planner import PlanRequest  # noqa: E402

TOOL_MAP = Path(__file__).with_name("taskbench_tools.toml")


def load_map(path: Path = TOOL_MAP) -> dict[str, str]:
    """Our task name -> TaskBench tool name."""
    return dict(tomllib.loads(path.read_text(encoding="utf-8"))["tasks"])


def to_taskbench(plan: Plan, names: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """A plan as TaskBench nodes and links; unmapped tasks are dropped and links joined across them."""
    by_id = {t.id: t for t in plan.tasks}
    parents = {t.id: sorted({k for _, k in t.refs()} | {d for d in t.dep if d >= 0 and d in by_id}) for t in plan.tasks}

    def mapped_sources(tid: int, seen: frozenset[int] = frozenset()) -> set[int]:
        out: set[int] = set()
        for p in parents.get(tid, []):
            if p in seen:
                continue
            if by_id[p].task in names:
                out.add(p)
            else:
                out |= mapped_sources(p, seen | {p})
        return out

    nodes, links, seen_links = [], [], set()
    for t in plan.tasks:
        name = names.get(t.task)
        if name is None:
            continue
        args = [v for v in (t.args.values()) for v in (v if isinstance(v, list) else [v])]
        nodes.append({"task": name, "arguments": args})
        for s in sorted(mapped_sources(t.id)):
            link = (names[by_id[s].task], name)
            if link not in seen_links:
                seen_links.add(link)
                links.append({"source": link[0], "target": link[1]})
    return nodes, links


@dataclass
class Score:
    """Micro counts over samples."""

    n: int = 0
    refused: int = 0
    node_tp: int = 0
    node_pred: int = 0
    node_gold: int = 0
    edge_tp: int = 0
    edge_pred: int = 0
    edge_gold: int = 0

    def add(self, pred_nodes: set[str], gold_nodes: set[str], pred_edges: set[tuple[str, str]],
            gold_edges: set[tuple[str, str]], refused: bool) -> None:
        self.n += 1
        self.refused += refused
        self.node_tp += len(pred_nodes & gold_nodes)
        self.node_pred += len(pred_nodes)
        self.node_gold += len(gold_nodes)
        self.edge_tp += len(pred_edges & gold_edges)
        self.edge_pred += len(pred_edges)
        self.edge_gold += len(gold_edges)

    @staticmethod
    def f1(tp: int, pred: int, gold: int) -> float:
        if pred == 0 and gold == 0:
            return 1.0
        p = tp / pred if pred else 0.0
        r = tp / gold if gold else 0.0
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def node_f1(self) -> float:
        return self.f1(self.node_tp, self.node_pred, self.node_gold)

    @property
    def edge_f1(self) -> float:
        return self.f1(self.edge_tp, self.edge_pred, self.edge_gold)

    @property
    def refusal_rate(self) -> float:
        return self.refused / self.n if self.n else 0.0


@dataclass
class Report:
    overall: Score = field(default_factory=Score)
    by_type: dict[str, Score] = field(default_factory=lambda: defaultdict(Score))


def score(rows: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]) -> Report:
    """TaskBench's node and edge F1 (micro) and the refusal rate, overall and by ``type``."""
    report = Report()
    for row, pred in zip(rows, predictions, strict=True):
        if "task_nodes" not in row:
            continue
        gold_nodes = {n["task"] for n in row["task_nodes"]}
        gold_edges = {(e["source"], e["target"]) for e in row.get("task_links", [])}
        pred_nodes = {n["task"] for n in pred["task_nodes"]}
        pred_edges = {(e["source"], e["target"]) for e in pred["task_links"]}
        for s in (report.overall, report.by_type[str(row.get("type", "all"))] if "type" in row else None):
            if s is not None:
                s.add(pred_nodes, gold_nodes, pred_edges, gold_edges, bool(pred["refused"]))
    return report


def make_other_planner(spec: str) -> Any:
    from orchestrator.agent import make_planner

    return make_planner(spec)


def plan_all(texts: Sequence[str], catalog: TaskCatalog, planner: Any, batch: int) -> tuple[list[Plan], float]:
    """Plans for ``texts`` and the seconds spent planning."""
    requests = [PlanRequest(t, catalog) for t in texts]
    start = time.perf_counter()
    plans: list[Plan] = []
    if hasattr(planner, "plan_many"):
        for i in range(0, len(requests), batch):
            plans.extend(planner.plan_many(requests[i:i + batch]))
    else:
        async def run() -> list[Plan]:
            return [await planner.plan(r) for r in requests]

        plans = asyncio.run(run())
    return plans, time.perf_counter() - start


def print_report(report: Report, field_name: str, rps: float, planner: str) -> None:
    print(f"planner: {planner}   text field: {field_name}   requests/s: {rps:.1f}")
    print(f"{'type':<8} {'n':>5} {'node F1':>8} {'edge F1':>8} {'refused':>8}")
    rows: Iterable[tuple[str, Score]] = [*sorted(report.by_type.items()), ("all", report.overall)]
    for name, s in rows:
        print(f"{name:<8} {s.n:>5} {s.node_f1:>8.3f} {s.edge_f1:>8.3f} {s.refusal_rate:>7.1%}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="JSON lines with `id` and the text field")
    ap.add_argument("--text", required=True, help="the field holding the request text")
    ap.add_argument("--llm", default=None, help="planner spec for orchestrator.agent.make_planner (default: offline)")
    ap.add_argument("--predictions", type=Path, default=None, help="write one JSON line per input line here")
    ap.add_argument("--batch", type=int, default=64, help="requests planned together (offline planner)")
    ap.add_argument("--no-embeddings", action="store_true", help="offline planner: word overlap, no MiniLM")
    args = ap.parse_args(argv)

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, row in enumerate(rows):
        if args.text not in row or "id" not in row:
            raise SystemExit(f"{args.data}:{i + 1}: each line needs `id` and {args.text!r}")
    from orchestrator.registry import default_registry

    catalog = TaskCatalog(default_registry)
    if args.llm:
        planner, label = make_other_planner(args.llm), args.llm
    else:
        from orchestrator.agent.offline import OfflinePlanner

        planner = OfflinePlanner(use_embeddings=False if args.no_embeddings else None)
        runtime = getattr(planner.encoder, "runtime", None)
        label = f"offline ({planner.encoder.name}{f' on {runtime}' if runtime else ''})"
        planner.plan_texts(["warm up: caption photo.png"], catalog)  # loads the model and the tool side
    texts = [str(r[args.text]) for r in rows]
    cpu = time.process_time()
    plans, seconds = plan_all(texts, catalog, planner, args.batch)
    cpu = time.process_time() - cpu
    names = load_map()
    predictions = []
    for row, plan in zip(rows, plans, strict=True):
        nodes, links = to_taskbench(plan, names)
        predictions.append({"id": row["id"], "task_nodes": nodes, "task_links": links,
                            "refused": plan.refusal is not None or not plan.tasks})
    if args.predictions:
        args.predictions.write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
    report = score(rows, predictions)
    rps = len(rows) / seconds if seconds > 0 else float("inf")
    if report.overall.n:
        print_report(report, args.text, rps, label)
    else:
        print(f"planner: {label}   planned {len(rows)} requests (no gold to score)   requests/s: {rps:.1f}")
    print(f"CPU time: {1000 * cpu / max(1, len(rows)):.2f} ms per request, all threads "
          "(steadier than requests/s on a shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

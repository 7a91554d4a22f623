"""Compile-time checks: flatten nested workflows, resolve tools, bind ports, find cycles.

Every problem is collected (with the node and port it concerns) and raised at
once as one :class:`~orchestrator.errors.WorkflowValidationError`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.artifacts import Modality
from orchestrator.errors import ToolNotFound, WorkflowValidationError
from orchestrator.registry import ToolRegistry
from orchestrator.tool import Port, Tool

from ._builder import InputDecl, NodeDecl, Workflow

__all__ = ["Plan", "ResolvedNode", "Source", "resolve"]


@dataclass(frozen=True)
class Source:
    """Where a port's artifact comes from: a workflow input, or a node's output port."""

    node: str | None  # None: a workflow input
    name: str  # the input name, or the node's output port

    def __str__(self) -> str:
        return self.name if self.node is None else f"{self.node}.{self.name}"


@dataclass
class ResolvedNode:
    id: str
    tool: Tool
    params: BaseModel
    bindings: dict[str, list[Source]]
    seed: int | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    deps: set[str] = field(default_factory=set)
    alone: bool = False
    """No other node of the plan can run beside it (every other one is upstream or downstream),
    so a quick blocking call may hold the event loop without holding back a sibling."""

    @functools.cached_property
    def input_ports(self) -> list[tuple[str, bool, list[Source]]]:
        """(port name, whether it is a ``many`` port, its sources) of each bound input port."""
        return [(name, bool((port := self.tool.spec.input(name)) is not None and port.many), sources)
                for name, sources in self.bindings.items()]

    @functools.cached_property
    def output_ports(self) -> dict[str, Port]:
        """The tool's output ports by name, looked up once (every run stores outputs by port)."""
        return {port.name: port for port in self.tool.spec.outputs}

    @functools.cached_property
    def params_json(self) -> dict[str, Any]:
        """``params`` as JSON data, dumped once (cache keys and provenance of every run use it)."""
        return self.params.model_dump(mode="json")

    @functools.cached_property
    def model(self) -> Any:
        """The ``model`` param (``None``: the tool has none, or leaves it to the profile), looked up once."""
        return getattr(self.params, "model", None)


@dataclass
class Plan:
    """A validated, flattened workflow in dependency order."""

    name: str
    inputs: dict[str, InputDecl]
    nodes: dict[str, ResolvedNode]
    outputs: dict[str, Source]
    order: list[str]


@dataclass
class _Flat:
    id: str
    decl: NodeDecl
    inputs: dict[str, list[str]]


_MEDIA = frozenset({Modality.IMAGE, Modality.AUDIO, Modality.VIDEO})


def _as_list(value: str | list[str]) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def _expanded_size(wf: Workflow, *, max_nodes: int, max_depth: int) -> str | None:
    """Check the size of ``wf`` once its sub-workflows are inlined, without inlining them.

    Each sub-workflow's size is counted once (memoized), so a small document that nests
    the same sub-workflow many times over is measured in time linear in its size, and
    counting stops as soon as a limit is passed. Returns the problem, or ``None``.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(workflow) -> (nodes once inlined, nesting below it)

    def too_deep(path: str) -> str:
        return (f"{path}: workflows nested more than {max_depth} deep (limit max_workflow_depth; "
                "a workflow that contains itself?)")

    def size(w: Workflow, depth: int, path: str) -> tuple[int, int] | str:
        if depth > max_depth:
            return too_deep(path)
        known = measured.get(id(w))
        if known is not None:
            return known if depth + known[1] <= max_depth else too_deep(path)
        total, below = 0, 0
        for node in w.nodes:
            if node.tool.startswith("workflow:"):
                sub = w.subworkflows.get(node.tool.split(":", 1)[1])
                if sub is None:
                    continue  # reported by _flatten
                inner = size(sub, depth + 1, f"{path}/{node.id}")
                if isinstance(inner, str):
                    return inner
                total, below = total + inner[0], max(below, inner[1] + 1)
            else:
                total += 1
            if total > max_nodes:
                return (f"{path}: the workflow expands to more than {max_nodes} nodes once its sub-workflows "
                        "are inlined (limit max_workflow_nodes)")
        measured[id(w)] = (total, below)
        return total, below

    found = size(wf, 0, wf.name)
    return found if isinstance(found, str) else None


def _flatten(
    wf: Workflow, prefix: str, input_map: dict[str, list[str]] | None, problems: list[str], depth: int = 0
) -> tuple[list[_Flat], dict[str, str]]:
    """Inline nested workflows (their size was checked first). Returns the flat nodes and this
    workflow's output -> source map."""
    local_ids = {n.id for n in wf.nodes}
    input_names = {i.name for i in wf.inputs}

    def rewrite(src: str) -> list[str]:
        node_id, dot, port = src.partition(".")
        if dot and node_id in local_ids:
            return [f"{prefix}{node_id}.{port}"]
        if not dot and input_map is not None and src in input_names:
            return input_map.get(src, [])
        return [src] if input_map is None else [f"{prefix}{src}"]

    flat: list[_Flat] = []
    sub_outputs: dict[str, dict[str, str]] = {}
    for node in wf.nodes:
        bound = {port: [s for src in _as_list(v) for s in rewrite(src)] for port, v in node.inputs.items()}
        if node.tool.startswith("workflow:"):
            key = node.tool.split(":", 1)[1]
            sub = wf.subworkflows.get(key)
            if sub is None:
                problems.append(f"node {prefix}{node.id!s}: unknown subworkflow {key!r}")
                continue
            unknown = sorted(set(bound) - {i.name for i in sub.inputs})
            for port in unknown:
                problems.append(f"node {prefix}{node.id}: subworkflow {sub.name!r} has no input {port!r}")
            inner, outs = _flatten(sub, f"{prefix}{node.id}/", bound, problems, depth + 1)
            for i in sub.inputs:
                if i.name not in bound and not i.optional:
                    problems.append(f"node {prefix}{node.id}: required input {i.name!r} of subworkflow {sub.name!r} is unbound")
            flat.extend(inner)
            sub_outputs[node.id] = outs
        else:
            flat.append(_Flat(f"{prefix}{node.id}", node, bound))
    # references to a subworkflow node's outputs point at the inner producer
    def through(src: str) -> str:
        head, dot, port = src.partition(".")
        for sub_id, outs in sub_outputs.items():
            if dot and head == f"{prefix}{sub_id}" and port in outs:
                return outs[port]
        return src

    for f in flat:
        f.inputs = {p: [through(s) for s in srcs] for p, srcs in f.inputs.items()}
    outputs = {o.name: through(rewrite(o.source)[0] if rewrite(o.source) else o.source) for o in wf.outputs}
    return flat, outputs


def resolve(wf: Workflow, registry: ToolRegistry, *, settings: Any = None) -> Plan:
    """Validate ``wf`` against ``registry``; return a :class:`Plan` or raise listing every problem.

    ``settings`` (default: the process's) give ``max_workflow_nodes`` and ``max_workflow_depth``,
    checked before any sub-workflow is inlined."""
    if settings is None:
        from orchestrator.settings import get_settings

        settings = get_settings()
    too_big = _expanded_size(wf, max_nodes=settings.max_workflow_nodes, max_depth=settings.max_workflow_depth)
    if too_big is not None:
        raise WorkflowValidationError([too_big])
    problems: list[str] = []
    inputs: dict[str, InputDecl] = {}
    for decl in wf.inputs:
        if decl.name in inputs:
            problems.append(f"input {decl.name!r} is declared twice")
        inputs[decl.name] = decl
    flat, out_sources = _flatten(wf, "", None, problems)

    seen: set[str] = set()
    for f in flat:
        if f.id in seen:
            problems.append(f"node {f.id!r} is declared twice")
        if f.id in inputs:
            problems.append(f"node {f.id!r} has the same name as a workflow input")
        seen.add(f.id)

    tools: dict[str, Tool] = {}
    nodes: dict[str, ResolvedNode] = {}
    for f in flat:
        try:
            tools[f.id] = registry.get(f.decl.tool)
        except ToolNotFound:
            problems.append(f"node {f.id!r}: unknown tool {f.decl.tool!r}")
    media = sum(1 for t in tools.values() if any(p.modality in _MEDIA for p in t.spec.outputs))
    if media > settings.max_run_media:
        problems.append(f"{media} nodes generate media (image, audio or video); at most "
                        f"{settings.max_run_media} may in one run (limit max_run_media)")
    for f in flat:
        t = tools.get(f.id)
        if t is None:
            continue
        try:
            params = t.validate_params(f.decl.params)
        except ValidationError as exc:
            for e in exc.errors():
                loc = ".".join(str(p) for p in e["loc"]) or "<params>"
                problems.append(f"node {f.id!r}: param {loc!r} of tool {t.name!r}: {e['msg']}")
            continue
        bindings: dict[str, list[Source]] = {}
        for port_name, srcs in f.inputs.items():
            port = t.spec.input(port_name)
            if port is None:
                problems.append(f"node {f.id!r}: tool {t.name!r} has no input port {port_name!r} (ports: {[p.name for p in t.spec.inputs]})")
                continue
            if len(srcs) > 1 and not port.many:
                problems.append(f"node {f.id!r}: port {port_name!r} takes one source, got {len(srcs)} ({', '.join(srcs)})")
            resolved = []
            for src in srcs:
                source, modality = _source(
                    src, inputs, tools, problems, f"node {f.id!r} port {port_name!r}", single=not port.many
                )
                if source is None:
                    continue
                if modality is not None and modality is not port.modality:
                    problems.append(
                        f"node {f.id!r}: port {port_name!r} expects {port.modality.value} but {src!r} gives {modality.value}"
                    )
                resolved.append(source)
            bindings[port_name] = resolved
        for port in t.spec.inputs:
            if not port.optional and port.name not in f.inputs:
                problems.append(f"node {f.id!r}: required input port {port.name!r} ({port.modality.value}) is unbound")
        nodes[f.id] = ResolvedNode(
            id=f.id, tool=t, params=params, bindings=bindings, seed=f.decl.seed, retries=f.decl.retries,
            retry_delay=f.decl.retry_delay, timeout=f.decl.timeout,
            deps={s.node for srcs in bindings.values() for s in srcs if s.node is not None},
        )

    outputs: dict[str, Source] = {}
    seen_outputs: set[str] = set()
    for decl in wf.outputs:
        if decl.name in seen_outputs:
            problems.append(f"output {decl.name!r} is declared twice")
        seen_outputs.add(decl.name)
    for name, src in out_sources.items():
        if "." not in src:
            problems.append(f"output {name!r}: {src!r} is not 'node.port' (passing a workflow input straight "
                            "through is not supported; outputs come from nodes)")
            continue
        source, _ = _source(src, inputs, tools, problems, f"output {name!r}")
        if source is not None:
            outputs[name] = source
    if not flat:
        problems.append("the workflow has no nodes (add_node)")
    if not wf.outputs:
        problems.append("the workflow declares no outputs (add_output)")

    order = _toposort(nodes, problems)
    if problems:
        raise WorkflowValidationError(problems, workflow=wf.name)
    plan = Plan(name=wf.name, inputs=inputs, nodes=nodes, outputs=outputs, order=order)
    _mark_alone(plan)
    return plan


def _mark_alone(plan: Plan) -> None:
    """Set ``alone`` on the nodes that every other node precedes or follows, in O(nodes + edges).

    In dependency order, every node before ``v`` is upstream of it exactly when, once ``v`` is
    added, the nodes so far have one sink (``v``): any earlier node leads to a sink. Likewise,
    in reverse, every later node is downstream of ``v`` when the nodes from ``v`` on have one source.
    """
    children: dict[str, list[str]] = {node_id: [] for node_id in plan.order}
    after_all: set[str] = set()
    sinks: set[str] = set()
    for node_id in plan.order:
        deps = plan.nodes[node_id].deps
        for dep in deps:
            children[dep].append(node_id)
        sinks.difference_update(deps)
        sinks.add(node_id)
        if len(sinks) == 1:
            after_all.add(node_id)
    sources: set[str] = set()
    for node_id in reversed(plan.order):
        sources.difference_update(children[node_id])
        sources.add(node_id)
        plan.nodes[node_id].alone = len(sources) == 1 and node_id in after_all


def _source(
    src: str, inputs: dict[str, InputDecl], tools: dict[str, Tool], problems: list[str], where: str,
    single: bool = False,
) -> tuple[Source | None, Modality | None]:
    node_id, _, port = src.rpartition(".")
    if "." not in src:
        decl = inputs.get(src)
        if decl is None:
            problems.append(f"{where}: {src!r} is neither a workflow input nor 'node.port'")
            return None, None
        return Source(None, src), decl.modality
    if node_id not in tools:
        problems.append(f"{where}: source {src!r} names a missing node {node_id!r}")
        return None, None
    out = tools[node_id].spec.output(port)
    if out is None:
        names = [p.name for p in tools[node_id].spec.outputs]
        problems.append(f"{where}: node {node_id!r} has no output port {port!r} (outputs: {names})")
        return None, None
    if single and out.many:
        problems.append(f"{where}: takes one artifact but {src!r} is a list ('many' port); bind it to a 'many' port")
    return Source(node_id, port), out.modality


def _toposort(nodes: dict[str, ResolvedNode], problems: list[str]) -> list[str]:
    """Kahn's algorithm over a reverse index (O(N + E)), in declaration order where free."""
    dependents: dict[str, list[str]] = {n: [] for n in nodes}
    indegree: dict[str, int] = {}
    for n, r in nodes.items():
        deps = r.deps & nodes.keys()
        indegree[n] = len(deps)
        for d in deps:
            dependents[d].append(n)
    order = [n for n, d in indegree.items() if d == 0]
    i = 0
    while i < len(order):
        for n in dependents[order[i]]:
            indegree[n] -= 1
            if indegree[n] == 0:
                order.append(n)
        i += 1
    if len(order) < len(nodes):
        cyclic = sorted(set(nodes) - set(order))
        problems.append(f"cycle among nodes {cyclic}")
    return order


def describe_inputs(plan: Plan) -> dict[str, Any]:
    return {k: v.modality.value for k, v in plan.inputs.items()}

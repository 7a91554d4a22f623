"""The ``orchestrator`` command line.

::

    orchestrator run "draw a lighthouse at dusk and read this caption aloud" --out out/
    orchestrator run --graph clean-and-visualize -i audio=talk.wav -i instruction="add reverb"
    orchestrator plan "transcribe talk.wav, summarize it, read the summary aloud" -i talk.wav=talk.wav --json
    orchestrator chat                      # interactive, media saved as it arrives
    orchestrator serve --port 8000         # the REST server (docs/server.md)
    orchestrator run --executor ray …      # node calls on Ray Serve deployments (docs/ray.md)
    orchestrator deploy serve.yaml         # start (or update) those deployments
    orchestrator tools [--json]            # the tool catalog
    orchestrator graphs [--json]           # prebuilt graphs
    orchestrator zoo build tiny            # the tiny offline checkpoints
    orchestrator artifacts get sha256:… -o file.png

Settings come from ``ORCHESTRATOR_*`` environment variables (see
:class:`orchestrator.settings.Settings`); ``--redis-url`` / ``--data-dir`` override
the store. With nothing configured everything is embedded: the offline planner,
the tiny profile (its checkpoints built on demand) and a directory store under
``./.orchestrator``: no Redis, no network, no GPU.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.artifacts import ArtifactRef, ArtifactStore, Modality, open_store, sniff
from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings

if TYPE_CHECKING:  # the run service (and the agent behind it) load when a command needs them
    from orchestrator.runs import AgentBackend, Outcome, RunKind, RunRecord, Step

__all__ = ["app", "main"]

logger = logging.getLogger("orchestrator.cli")

app = typer.Typer(
    name="orchestrator",
    help="Any-to-any orchestration: plan a request, run tools and generators, get files back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="The tiny offline model zoo (random checkpoints built locally).", no_args_is_help=True)
artifacts_app = typer.Typer(help="Read and write artifacts in the store.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
app.add_typer(artifacts_app, name="artifacts")

console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


class _Options:
    redis_url: str | None = None
    data_dir: Path | None = None


_opts = _Options()


@app.callback()
def _main(
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="use this Redis as the store")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="embedded store and zoo folder")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug logs")] = 0,
) -> None:
    _opts.redis_url, _opts.data_dir = redis_url, data_dir
    # the same values for library code that reads the process settings (the zoo, the model runtime)
    if redis_url:
        os.environ["ORCHESTRATOR_REDIS_URL"] = redis_url
    if data_dir is not None:
        os.environ["ORCHESTRATOR_DATA_DIR"] = str(data_dir)
    if redis_url or data_dir is not None:
        from orchestrator.settings import get_settings

        get_settings.cache_clear()
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # library progress bars and chatter (tiny-config and torchvision notices) would tear the live
    # displays and the chat transcript; -v shows them
    if verbose == 0:
        for name, value in (("TQDM_DISABLE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                            ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error")):
            os.environ.setdefault(name, value)


def _settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if _opts.redis_url:
        values["redis_url"] = _opts.redis_url
    if _opts.data_dir is not None:
        values["data_dir"] = _opts.data_dir
    return Settings(**values)


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


# ====================================================================== run
def _parse_inputs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise _fail(f"--input expects NAME=PATH (or NAME=text), got {item!r}", 2)
        out[name.strip()] = value
    return out


def _store_value(store: ArtifactStore, name: str, value: str, modality: Modality | None) -> ArtifactRef:
    """A CLI input value -> a stored ref: an artifact id, a file, or (for text) the text itself."""
    if value.startswith("sha256:"):
        return store.stat(value)
    path = Path(value).expanduser()
    if path.is_file():
        data = path.read_bytes()
        kind = modality or sniff(data)
        if kind is None:
            guessed = mimetypes.guess_type(path.name)[0] or ""
            major = guessed.split("/", 1)[0]
            kind = Modality(major) if major in ("image", "audio", "video") else Modality.TEXT
        try:
            return store.put(data, modality=kind)
        except OrchestratorError as exc:
            raise OrchestratorError(f"input {name!r} ({path}): {exc}") from exc
    if modality in (None, Modality.TEXT):
        return store.put(value, modality=Modality.TEXT)
    raise OrchestratorError(f"input {name!r}: {value!r} is not a file (this input expects {modality.value})")


def _load_workflow(graph: str) -> Any:
    from orchestrator.workflow import Workflow

    path = Path(graph)
    if graph.endswith(".json") or path.is_file():
        if not path.is_file():
            raise OrchestratorError(f"workflow file {graph!r} does not exist")
        try:
            return Workflow.from_json(path.read_text())
        except OrchestratorError as exc:
            raise OrchestratorError(f"workflow file {graph}: {exc}") from exc
    from graphs import get_graph

    return get_graph(graph)


class _ProgressView:
    """A bar per node (steps within it), fed by run events after the run service folded them
    into ``nodes`` (the run record's node summaries)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.planning: TaskID | None = None
        self.lock = threading.Lock()

    def _task(self, node: str) -> TaskID:
        if node not in self.tasks:
            self.tasks[node] = self.progress.add_task(f"[dim]{node}[/] waiting", total=None)
        return self.tasks[node]

    def start_planning(self, text: str) -> None:
        self.planning = self.progress.add_task(text, total=None)

    def stop_planning(self, text: str) -> None:
        if self.planning is not None:
            self.progress.update(self.planning, description=text, total=1, completed=1)
            self.planning = None

    def __call__(self, doc: dict[str, Any]) -> None:
        with self.lock:
            self._handle(doc)

    def _handle(self, doc: dict[str, Any]) -> None:
        kind = doc.get("type")
        node = doc.get("node")
        if kind in ("plan_ready", "plan"):
            tasks = (doc.get("plan") or {}).get("tasks") if isinstance(doc.get("plan"), dict) else doc.get("plan")
            count = len(tasks) if isinstance(tasks, list) else "?"
            self.stop_planning(f"[green]planned[/] {count} task(s)")
            return
        if kind == "models_selected":
            for task_id, choice in (doc.get("selections") or {}).items():
                node = f"t{task_id}"
                task = self._task(node)
                self.progress.update(task, description=f"[dim]{node} {choice.get('tool') or ''} waiting[/]")
            return
        if kind == "run_started":
            self.stop_planning("[green]planned[/]")
            for n in doc.get("nodes") or []:
                self._task(n)
            return
        if not node:
            return
        task = self._task(node)
        info = self.nodes.get(node) or {"status": "pending"}
        if kind == "node_started":
            self.progress.update(task, description=f"[cyan]{node}[/] {doc.get('tool', '')}")
            self.progress.start_task(task)
        elif kind == "node_progress":
            total = max(1, int(doc.get("total") or 1))
            self.progress.update(task, total=total, completed=min(int(doc.get("step") or 0), total))
        elif kind in ("node_finished", "node_cached"):
            label = "cached" if kind == "node_cached" else f"{doc.get('seconds', 0.0):.2f}s"
            self.progress.update(task, description=f"[green]{node}[/] {info.get('tool', '')} ({label})",
                                 total=1, completed=1)
        elif kind == "node_failed":
            message = str(info.get("error") or "failed")
            self.progress.update(task, description=f"[red]{node} {info['status']}[/]: {message[:80]}")
            self.progress.stop_task(task)
        elif kind == "node_skipped":
            self.progress.update(task, description=f"[yellow]{node} skipped[/]")
            self.progress.stop_task(task)


async def _execute(prompt: str | None, graph: str | None, inputs: dict[str, str], settings: Settings,
                   store: ArtifactStore, *, llm: str | None, seed: int | None, cache: bool,
                   view: _ProgressView) -> tuple[RunRecord, Outcome]:
    """Run a graph or a prompt through the run service; returns its finished record and outcome."""
    from orchestrator.runs import AgentBackend, RunRecord, RunService, execute

    settings_for_agent = settings.model_copy(update={"llm": llm}) if llm else settings
    service = RunService(store, agent=AgentBackend(store=store, core_settings=settings_for_agent))
    options = {"profile": settings.profile, "seed": seed, "cache": cache, "session_id": None}
    run_id = uuid4_hex()
    steps: AsyncIterator[Step]
    if graph is not None:
        wf = _load_workflow(graph)
        try:  # validate before storing any input
            compiled = wf.compile(settings=settings)
        except OrchestratorError as exc:
            raise OrchestratorError(f"{graph}: {exc}") from exc
        declared = {i.name: Modality(i.modality) for i in wf.inputs}
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise OrchestratorError(f"unknown input(s) {unknown}; {wf.name!r} takes {sorted(declared)}")
        refs = {n: _store_value(store, n, v, declared[n]) for n, v in inputs.items()}
        if prompt:
            free_text = [i.name for i in wf.inputs if Modality(i.modality) is Modality.TEXT and i.name not in refs]
            if not free_text:
                raise OrchestratorError(f"{wf.name!r} has no free text input for the prompt; pass inputs with -i")
            refs[free_text[0]] = store.put(prompt, modality=Modality.TEXT)
        kind: RunKind = "workflow" if graph.endswith(".json") or Path(graph).is_file() else "graph"
        record = RunRecord(id=run_id, kind=kind, request={"graph": graph, "workflow": compiled.name}, options=options,
                           executor=settings.executor)
        steps = service.workflow(compiled, refs, run_id=run_id, seed=seed, cache=cache, profile=settings.profile)
    else:
        assert prompt is not None
        refs = {n: _store_value(store, n, v, None) for n, v in inputs.items()}
        record = RunRecord(id=run_id, kind="prompt", request={"prompt": prompt, "llm": settings_for_agent.llm},
                           options=options, executor=settings.executor)
        view.start_planning(f"planning with {settings_for_agent.llm}")
        steps = service.prompt(prompt, refs, run_id=run_id, cancel=threading.Event(), seed=seed, cache=cache,
                               profile=settings.profile)
    record.inputs = {n: ref.model_dump(mode="json") for n, ref in refs.items()}
    view.nodes = record.nodes  # the bars follow the record's node summaries

    async def show(doc: dict[str, Any]) -> None:
        view(doc)

    record.start()
    outcome = await execute(record, steps, emit=show)
    record.finish(outcome)
    view.stop_planning("[green]done[/]")
    return record, outcome


def _write_outputs(outcome: Outcome, out: Path, store: ArtifactStore) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for name, ref in outcome.outputs.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"
        path = out / f"{safe}{ref.extension}"
        path.write_bytes(store.get_bytes(ref))
        files[name] = {"id": ref.id, "modality": ref.modality.value, "mime": ref.mime, "size": ref.size,
                       "file": str(path), "meta": ref.meta.model_dump(mode="json", exclude_none=True)}
    return files


@app.command()
def run(
    prompt: Annotated[str | None, typer.Argument(help="the request, in plain words")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=PATH (or NAME=text); repeatable")] = [],  # noqa: A002,B006
    graph: Annotated[str | None, typer.Option("--graph", "-g", help="a prebuilt graph name or a workflow .json file")] = None,
    profile: Annotated[str | None, typer.Option(help="model profile: offline (the default: real packaged models + tiny zoo), tiny or default")] = None,
    llm: Annotated[str | None, typer.Option(help="offline | openai:<model>[@base_url] | ollama:<model> | transformers:<id or path> | smollm2")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the outputs and run.json")] = Path("out"),
    seed: Annotated[int | None, typer.Option(help="run seed (reproducible generation)")] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="reuse cached node results")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
    executor: Annotated[str | None, typer.Option(help="where node calls run: local (default) or ray")] = None,
) -> None:
    """Run a request end to end: plan it (or run --graph), show progress, write the outputs into OUT.

    Exit status: 0 succeeded, 1 failed or cancelled, 2 partial (some tasks failed, were skipped or
    refused; what could run did), 3 refused (nothing of the request can be done here; the reason is printed).
    """
    # 1. Check inputs
    if prompt is None and graph is None:
        raise _fail("give a prompt, or --graph NAME", 2)
    inputs = _parse_inputs(input)
    settings = _settings(profile=profile, executor=_executor_choice(executor))
    started = time.time()
    if settings.executor == "local":  # models run here: import their libraries while planning
        from orchestrator.runtime._imports import preload

        preload(settings.preload_imports)
    # 2. Run with live progress
    try:
        store = open_store(settings)
        _start_executor(settings, store, quiet=quiet)
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=quiet, transient=False)
    view = _ProgressView(progress)
    try:
        with progress:
            record, outcome = asyncio.run(_execute(prompt, graph, inputs, settings, store, llm=llm, seed=seed,
                                                   cache=cache, view=view))
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    # 3. Outputs, manifest (the run record, with the files written), summary
    files = _write_outputs(outcome, out, store)
    seconds = time.time() - started
    doc = record.to_json()
    manifest = {
        **{k: doc[k] for k in ("id", "kind", "status", "request", "options", "answer", "plan", "errors", "error",
                               "refusals", "nodes", "executor", "created_at", "started_at", "finished_at")},
        "inputs": inputs,
        "input_refs": doc["inputs"],
        "profile": settings.profile,
        "outputs": files,
        "timings": {"total_seconds": round(seconds, 3),
                    "nodes": {n: {**{k: v for k, v in info.items() if k in ("tool", "status", "seconds", "error")},
                                  "outputs": _node_files(info, files)}
                              for n, info in record.nodes.items()}},
    }
    manifest_path = out / "run.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str))
    _summary(record, files)
    if outcome.answer:
        out_console.print(_with_paths(outcome.answer, files), markup=False, soft_wrap=True)
    if outcome.status == "refused":
        console.print("[bold yellow]refused:[/] ", end="")
        console.print("; ".join(outcome.refusals) or (outcome.error or {}).get("message", ""),
                      markup=False, soft_wrap=True)
        out_console.print(f"manifest: {manifest_path}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED)
    if outcome.status in ("failed", "cancelled"):
        reason = (outcome.error or {}).get("message") or "; ".join(f"{k}: {v}" for k, v in outcome.errors.items())
        console.print(f"[bold red]run {outcome.status}:[/] ", end="")
        console.print(reason, markup=False, soft_wrap=True)
        out_console.print(f"manifest: {manifest_path}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    if outcome.status == "partial":
        for k, v in outcome.errors.items():
            console.print(f"[yellow]not done[/] {k}: ", end="")
            console.print(v, markup=False, soft_wrap=True)
    out_console.print(f"{outcome.status} in {seconds:.1f}s", markup=False)
    out_console.print(f"files:    {', '.join(f['file'] for f in files.values()) or '(none)'}", markup=False, soft_wrap=True)
    out_console.print(f"manifest: {manifest_path}", markup=False, soft_wrap=True)
    if outcome.status == "partial":
        raise typer.Exit(2)


_REF = re.compile(r"\[(\w+): (sha256:[0-9a-f]{64})\]")
EXIT_REFUSED = 3
"""Exit status of ``run`` when the request is refused (nothing of it can be done here)."""


def _node_files(info: dict[str, Any], files: dict[str, dict[str, Any]]) -> list[str]:
    """The files written for a node's outputs (cached nodes list theirs like any other)."""
    by_id = {f["id"]: f["file"] for f in files.values()}
    refs = [r for v in (info.get("outputs") or {}).values() for r in (v if isinstance(v, list) else [v])]
    return [by_id[r["id"]] for r in refs if isinstance(r, dict) and r.get("id") in by_id]


def _with_paths(text: str, files: dict[str, dict[str, Any]]) -> str:
    """``[image: sha256:…]`` refs in an answer -> ``[image: out/t0_image.png]`` where the file was written."""
    by_id = {info["id"]: info["file"] for info in files.values()}
    return _REF.sub(lambda m: f"[{m.group(1)}: {by_id.get(m.group(2), m.group(2))}]", text)


def _summary(record: RunRecord, files: dict[str, dict[str, Any]]) -> None:
    if record.nodes:
        table = Table(title="nodes", title_justify="left")
        for col in ("node", "tool", "status", "seconds", "outputs"):
            table.add_column(col)
        for node, info in record.nodes.items():
            color = {"succeeded": "green", "cached": "green", "failed": "red", "skipped": "yellow",
                     "refused": "yellow"}.get(info["status"], "")
            status = f"[{color}]{info['status']}[/]" if color else info["status"]
            secs = info.get("seconds")
            table.add_row(node, str(info.get("tool") or ""), status, f"{secs:.2f}" if isinstance(secs, float) else "",
                          ", ".join(_node_files(info, files)))
        console.print(table)
    if files:
        table = Table(title="outputs", title_justify="left")
        for col in ("name", "modality", "size", "file"):
            table.add_column(col)
        for name, info in files.items():
            table.add_row(name, info["modality"], f"{info['size']:,}", info["file"])
        console.print(table)


# ====================================================================== plan
@app.command("plan")
def plan_command(
    prompt: Annotated[str, typer.Argument(help="the request, in plain words")],
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=PATH the request refers to; repeatable")] = [],  # noqa: A002,B006
    llm: Annotated[str | None, typer.Option(help="offline | openai:<model>[@base_url] | ollama:<model> | transformers:<id or path> | smollm2")] = None,
    profile: Annotated[str | None, typer.Option(help="model profile used to select tools: tiny or default")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Plan a request without running it: the tasks, their dependencies and arguments, the tools selected.

    Exit status: 0 a valid plan, 1 no valid plan (the problems are printed), 3 refused.
    """
    import dataclasses

    from orchestrator.runs import AgentBackend

    settings = _settings(llm=llm, profile=profile)
    try:
        store = open_store(settings)
        agent = AgentBackend(store=store, core_settings=settings).get()
        inputs = {name: value for name, value in _parse_inputs(input).items()}
        plan, vplan, problems = asyncio.run(agent.aplan(prompt, inputs))
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    status = "planned" if vplan is not None else "refused" if plan.refusal and not problems else "invalid"
    tasks = []
    for t in plan.tasks:
        bound = vplan.tasks.get(t.id) if vplan is not None else None
        tasks.append({**t.model_dump(), "tool": bound.tool if bound else None, "model": bound.model if bound else None,
                      **({"unavailable": bound.unavailable} if bound is not None and bound.unavailable else {})})
    doc = {"request": prompt, "planner": agent.planner.name, "status": status, "tasks": tasks,
           "refusal": plan.refusal, "notes": plan.notes, "warnings": vplan.warnings if vplan is not None else [],
           "problems": [dataclasses.asdict(p) for p in problems]}
    if as_json:
        out_console.print_json(json.dumps(doc))
    else:
        for t in tasks:
            deps = ", ".join(str(d) for d in t["dep"] if d >= 0) or "-"
            args = ", ".join(f"{k}={v}" for k, v in t["args"].items())
            out_console.print(f"{t['id']}. {t['task']} ({t['tool'] or 'no tool'}) deps: {deps}  {args}", markup=False)
        for note in plan.notes:
            out_console.print(f"note: {note}", markup=False)
        if plan.refusal:
            out_console.print(f"refused: {plan.refusal}", markup=False)
        for p in problems:
            out_console.print(f"problem: {p}", markup=False)
    if status == "refused":
        raise typer.Exit(EXIT_REFUSED)
    if status == "invalid":
        raise typer.Exit(1)


# ====================================================================== chat
@app.command()
def chat(
    session: Annotated[str | None, typer.Option(help="session id (memory is kept per session, in the store)")] = None,
    llm: Annotated[str | None, typer.Option(help="offline | openai:<model>[@base_url] | ollama:<model> | transformers:<id or path> | smollm2")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder where media are saved as they arrive")] = Path("out/chat"),
    seed: Annotated[int | None, typer.Option(help="seed for generated media")] = None,
) -> None:
    """Chat with signal spans: media generated while the answer streams, saved as they arrive.

    Type a message and Enter. ``/attach PATH`` attaches a file to the next message,
    ``/quit`` (or end of input) leaves.
    """
    import uuid

    from orchestrator.runs import AgentBackend

    settings = _settings(llm=llm)
    try:
        store = open_store(settings)
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    backend = AgentBackend(store=store, core_settings=settings)
    session_id = session or uuid.uuid4().hex[:12]
    out.mkdir(parents=True, exist_ok=True)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(f"session [bold]{session_id}[/] · media go to {out}/ · /attach PATH · /quit")
    attached: dict[str, ArtifactRef] = {}  # by file name, as the message can refer to it
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        message = line.strip()
        if not message:
            continue
        if message in ("/quit", "/exit"):
            break
        if message.startswith("/attach "):
            try:
                path = message[8:].strip()
                ref = _store_value(store, "attachment", path, None)
                attached[Path(path).name] = ref
                console.print(f"attached {Path(path).name}: {ref.modality.value} {ref.id[:19]}…")
            except OrchestratorError as exc:
                console.print(f"[red]{exc}[/]")
            continue
        try:
            asyncio.run(_chat_turn(backend, session_id, message, attached, out, seed))
        except OrchestratorError as exc:
            console.print(f"[red]error:[/] {exc}")
        attached = {}


async def _chat_turn(backend: AgentBackend, session_id: str, message: str, media: dict[str, ArtifactRef], out: Path,
                     seed: int | None) -> None:
    import threading as _threading

    from orchestrator.agent.events import AnswerDelta, SpanFinished
    from orchestrator.runs import Outcome

    saved: set[str] = set()

    def save(ref: ArtifactRef, name: str | None = None) -> None:
        if ref.id in saved:
            return
        saved.add(ref.id)
        path = out / f"{name or ref.modality.value}-{ref.hex[:10]}{ref.extension}"
        path.write_bytes(backend.store.get_bytes(ref))
        out_console.print(f"\n[saved {ref.modality.value}: {path}]", style="green", markup=False, soft_wrap=True)

    streamed = False
    async for item in backend.chat(message, media=media, run_id=uuid4_hex(), cancel=_threading.Event(),
                                   session_id=session_id, seed=seed):
        if isinstance(item, Outcome):
            if not streamed and item.answer:
                out_console.print(item.answer, markup=False, soft_wrap=True)
            for name, ref in item.outputs.items():
                save(ref, name)
            if item.status == "failed":
                console.print(f"[red]failed:[/] {(item.error or {}).get('message', '')}")
        elif isinstance(item, AnswerDelta):
            out_console.print(item.text, end="", markup=False, soft_wrap=True)
            streamed = True
        elif isinstance(item, SpanFinished):
            for i, ref in enumerate(item.refs):
                save(ref, f"{item.kind}_{item.index + 1}" + (f"_{i + 1}" if i else ""))
    if streamed:
        out_console.print()


def uuid4_hex() -> str:
    import uuid

    return uuid.uuid4().hex


# ====================================================================== serve
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    api_key: Annotated[list[str], typer.Option("--api-key", help="require this bearer key; repeatable")] = [],  # noqa: B006
    concurrency: Annotated[int | None, typer.Option(help="runs executed at once")] = None,
    queue: Annotated[int | None, typer.Option(help="runs that may wait for a worker")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    executor: Annotated[str | None, typer.Option(help="where node calls run: local (default) or ray")] = None,
    workers: Annotated[int | None, typer.Option(help="server processes sharing the port and the store")] = None,
) -> None:
    """Start the REST server (runs, events, artifacts, OpenAI-compatible chat). See docs/server.md."""
    try:
        from orchestrator.server import ServerSettings
        from orchestrator.server import serve as run_server
    except ImportError as exc:  # pragma: no cover - the serve extra is missing
        raise _fail(f"the server needs the 'serve' extra (pip install 'any2any-orchestrator[serve]'): {exc}") from exc
    from orchestrator.server.settings import api_key_problem

    if api_key_problem(api_key):
        raise _fail(f"--api-key: {api_key_problem(api_key)}")
    overrides: dict[str, Any] = {"host": host, "port": port, "max_concurrent_runs": concurrency,
                                 "max_queued_runs": queue, "workers": workers}
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        server_settings = ServerSettings(**values)
    except ValueError as exc:  # pydantic's ValidationError: a bad ORCHESTRATOR_* value
        raise _fail(f"invalid server settings: {exc}") from exc
    if api_key:
        server_settings.api_keys = [*server_settings.api_keys, *api_key]
    from orchestrator.server import create_app

    def build_app() -> Any:  # in each worker process when there are several
        _start_executor(core, open_store(core), quiet=False)
        return create_app(server_settings, core_settings=core)

    try:
        core = _settings(executor=_executor_choice(executor))
        run_server(settings=server_settings, log_level=log_level, app_factory=build_app)
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc


def _executor_choice(value: str | None) -> str | None:
    if value is not None and value not in ("local", "ray"):
        raise _fail(f"--executor must be 'local' or 'ray', got {value!r}", 2)
    return value


def _start_executor(settings: Settings, store: ArtifactStore, *, quiet: bool) -> None:
    """With the Ray executor: refuse a store replicas cannot reach, then start (or join) Ray
    and the deployments now, so a bad address or config fails before any work."""
    if settings.executor == "local":
        return
    from orchestrator.runtime.executors import get_executor

    executor = get_executor(settings)
    executor.check_store(store)
    if not quiet:
        console.print(f"[dim]starting the {executor.name} executor ({executor!r})…[/]")
    start = getattr(executor, "start", None)
    if start is not None:
        start()


# ====================================================================== deploy
@app.command()
def deploy(
    config: Annotated[Path, typer.Argument(help="a Ray Serve config whose app is orchestrator.runtime.executors:build_app")],
    address: Annotated[str | None, typer.Option(help="Ray cluster to deploy to ('auto', host:port, ray://…); "
                                                     "default: ORCHESTRATOR_RAY_ADDRESS, else a local Ray")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="keep a local Ray running until Ctrl-C")] = True,
) -> None:
    """Start (or update) the tool deployments of CONFIG on Ray Serve (docs/ray.md).

    Without an address this is ``serve run``: a local Ray holds the deployments until Ctrl-C
    (point ``ORCHESTRATOR_RAY_ADDRESS`` at it from other processes). With one, the
    deployments are applied to that cluster (as ``serve deploy`` does) and the command returns.
    """
    from orchestrator.runtime.executors import RayExecutor

    settings = _settings()
    try:
        executor = RayExecutor(settings, config=config, address=address)
        started = time.perf_counter()
        executor.start(redeploy=True)
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    groups = ", ".join(f"{g.name} ({', '.join(g.tools)})" for g in executor.config.args.groups)
    out_console.print(f"deployed {executor.config.app_name!r} in {time.perf_counter() - started:.1f}s: {groups}",
                      markup=False, soft_wrap=True)
    if executor.address or not wait:
        return
    out_console.print("local Ray running; Ctrl-C stops it", markup=False)
    import signal

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        executor.shutdown()


# ====================================================================== catalog
@app.command()
def tools(
    as_json: Annotated[bool, typer.Option("--json", help="full descriptions as JSON (ports, params schemas)")] = False,
    task: Annotated[str | None, typer.Option(help="only tools for this task")] = None,
) -> None:
    """List the registered tools: name, task, inputs -> outputs."""
    from orchestrator.registry import default_registry

    found = default_registry.find(task=task)
    if as_json:
        out_console.print_json(json.dumps([t.spec.describe() for t in found]))
        return
    table = Table(title=f"{len(found)} tools (--json for ports and params schemas)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("inputs -> outputs", overflow="fold")
    table.add_column("description", overflow="fold", ratio=1)
    for t in found:
        ports_in = ", ".join(f"{p.name}:{p.modality.value}{'*' if p.many else ''}" for p in t.spec.inputs)
        ports_out = ", ".join(f"{p.name}:{p.modality.value}" for p in t.spec.outputs)
        first = t.spec.description.split(". ")[0].rstrip(".")
        table.add_row(t.name, t.spec.task, f"{ports_in} -> {ports_out}", first)
    out_console.print(table)


@app.command()
def graphs(as_json: Annotated[bool, typer.Option("--json", help="as JSON")] = False) -> None:
    """List the prebuilt graphs (run one with ``orchestrator run --graph NAME``)."""
    from graphs import list_graphs

    docs = [g.describe() for g in list_graphs()]
    if as_json:
        out_console.print_json(json.dumps(docs))
        return
    table = Table(title=f"{len(docs)} prebuilt graphs", title_justify="left")
    for col in ("name", "inputs", "outputs", "description"):
        table.add_column(col, overflow="fold")
    for d in docs:
        ins = ", ".join(f"{i['name']}:{i['modality']}" for i in d["inputs"])
        table.add_row(d["name"], ins, ", ".join(d["outputs"]), d["description"])
    out_console.print(table)


# ====================================================================== zoo
@zoo_app.command("build")
def zoo_build(
    zoo: Annotated[str, typer.Argument(help="which zoo: tiny (the only one)")] = "tiny",
    only: Annotated[list[str], typer.Option("--only", help="build just these checkpoints; repeatable")] = [],  # noqa: B006
    directory: Annotated[Path | None, typer.Option("--dir", help="where to build (default <data_dir>/zoo)")] = None,
    force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
) -> None:
    """Build the tiny zoo's random checkpoints (offline, seconds); cached afterwards."""
    if zoo != "tiny":
        raise _fail(f"unknown zoo {zoo!r}; the only zoo is 'tiny'", 2)
    from orchestrator.runtime import build_zoo, list_zoo

    names = list(only) or list(list_zoo())
    root = directory or (_opts.data_dir / "zoo" if _opts.data_dir else None)
    table = Table(title="tiny zoo", title_justify="left")
    for col in ("name", "seconds", "path"):
        table.add_column(col)
    for name in names:
        started = time.perf_counter()
        try:
            path = build_zoo([name], root=root, force=force)[name]
        except OrchestratorError as exc:
            raise _fail(str(exc)) from exc
        table.add_row(name, f"{time.perf_counter() - started:.2f}", str(path))
    out_console.print(table)


@zoo_app.command("list")
def zoo_list() -> None:
    """List the tiny zoo's checkpoints."""
    from orchestrator.runtime import list_zoo

    table = Table(title="tiny zoo (orchestrator zoo build tiny)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("what", overflow="fold")
    for name, entry in list_zoo().items():
        table.add_row(name, entry.description)
    out_console.print(table)


# ====================================================================== artifacts
@artifacts_app.command("get")
def artifacts_get(
    artifact_id: Annotated[str, typer.Argument(help="sha256:<hex> (or the bare hex)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write ('-' for stdout)")],
    server: Annotated[str | None, typer.Option(help="fetch from a running server (URL) instead of the store")] = None,
    api_key: Annotated[str | None, typer.Option(help="bearer key for --server")] = None,
) -> None:
    """Write an artifact's bytes to a file."""
    if server:
        import httpx

        from orchestrator.artifacts import normalize_id

        try:
            artifact_id = normalize_id(artifact_id)
        except OrchestratorError as exc:
            raise _fail(str(exc), 2) from exc
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = httpx.get(f"{server.rstrip('/')}/v1/artifacts/{artifact_id}", headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            raise _fail(f"cannot reach the server at {server}: {exc}") from exc
        if response.status_code != 200:
            raise _fail(f"server answered {response.status_code}: {response.text[:300]}")
        data = response.content
    else:
        try:
            store = open_store(_settings())
            data = store.get_bytes(artifact_id)
        except OrchestratorError as exc:
            raise _fail(str(exc)) from exc
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    console.print(f"wrote {len(data):,} bytes to {output}")


@artifacts_app.command("put")
def artifacts_put(
    path: Annotated[Path, typer.Argument(help="file to store", exists=True, dir_okay=False)],
    modality: Annotated[str | None, typer.Option(help="text|image|audio|video|embedding|json (default: sniffed)")] = None,
) -> None:
    """Validate a file and store it; prints its ref as JSON."""
    try:
        store = open_store(_settings())
        ref = _store_value(store, path.name, str(path), Modality(modality) if modality else None)
    except (OrchestratorError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    out_console.print_json(ref.model_dump_json())


@artifacts_app.command("meta")
def artifacts_meta(artifact_id: Annotated[str, typer.Argument(help="sha256:<hex>")]) -> None:
    """Print an artifact's ref (modality, MIME type, size, metadata, provenance)."""
    try:
        ref = open_store(_settings()).stat(artifact_id)
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    out_console.print_json(ref.model_dump_json())


def main() -> None:
    """Entry point for ``python -m orchestrator``."""
    app()

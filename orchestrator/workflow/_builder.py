"""The workflow builder and its JSON document form."""

from __future__ import annotations

import json
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.artifacts import Modality
from orchestrator.errors import WorkflowError, WorkflowValidationError

__all__ = ["InputDecl", "NodeDecl", "OutputDecl", "Workflow", "WorkflowDoc"]

SCHEMA_VERSION = 1
_ID = r"^[A-Za-z_][A-Za-z0-9_\-]*$"


class InputDecl(BaseModel):
    """A workflow input: a name and a modality."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_ID)
    modality: Modality
    optional: bool = False
    description: str = ""


class NodeDecl(BaseModel):
    """A node: a registered tool (by name, never code), its params and input bindings.

    ``inputs`` maps each input port to one source, or a list of sources for a
    ``many`` port. A source is a workflow input name or ``"node.port"``.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID)
    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    seed: int | None = None
    retries: int = Field(default=0, ge=0, le=10)
    retry_delay: float = Field(default=0.0, ge=0)
    timeout: float | None = Field(default=None, gt=0)


class OutputDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_ID)
    source: str


class WorkflowDoc(BaseModel):
    """The JSON document form of a workflow (published as JSON Schema)."""

    model_config = ConfigDict(extra="forbid", title="OrchestratorWorkflow")

    schema_version: int = SCHEMA_VERSION
    name: str = "workflow"
    description: str = ""
    inputs: list[InputDecl] = Field(default_factory=list)
    nodes: list[NodeDecl] = Field(default_factory=list)
    outputs: list[OutputDecl] = Field(default_factory=list)
    subworkflows: dict[str, WorkflowDoc] = Field(default_factory=dict)
    """Nested workflows used as nodes: a node whose ``tool`` is ``workflow:<key>``."""


class Workflow:
    """Build a workflow of tool nodes in Python, then :meth:`compile` it.

    >>> wf = (Workflow("shout")
    ...       .add_input("text", "text")
    ...       .add_node("up", "text.template", params={"template": "{text}!"}, inputs={"text": "text"})
    ...       .add_output("result", "up.text"))
    >>> [n.id for n in wf.nodes]
    ['up']
    """

    def __init__(self, name: str = "workflow", description: str = "") -> None:
        self.name = name
        self.description = description
        self.inputs: list[InputDecl] = []
        self.nodes: list[NodeDecl] = []
        self.outputs: list[OutputDecl] = []
        self.subworkflows: dict[str, Workflow] = {}

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, nodes={[n.id for n in self.nodes]})"

    # -------------------------------------------------- building
    def add_input(self, name: str, modality: Modality | str, *, optional: bool = False, description: str = "") -> Self:
        self.inputs.append(_decl(InputDecl, name=name, modality=modality, optional=optional, description=description))
        return self

    def add_node(
        self,
        node_id: str,
        tool: str,
        params: dict[str, Any] | None = None,
        *,
        inputs: dict[str, str | list[str]] | None = None,
        seed: int | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
    ) -> Self:
        """Add a node running ``tool``; ``inputs`` binds ports inline (``{"image": "photo"}``)."""
        self.nodes.append(
            _decl(
                NodeDecl, id=node_id, tool=tool, params=dict(params or {}), inputs=dict(inputs or {}), seed=seed,
                retries=retries, retry_delay=retry_delay, timeout=timeout,
            )
        )
        return self

    def add_workflow(self, node_id: str, workflow: Workflow, *, inputs: dict[str, str | list[str]] | None = None) -> Self:
        """Use another workflow as one node: its inputs and outputs become the node's ports."""
        key = workflow.name
        if key in self.subworkflows and self.subworkflows[key] is not workflow:
            key = f"{workflow.name}_{len(self.subworkflows)}"
        self.subworkflows[key] = workflow
        return self.add_node(node_id, f"workflow:{key}", inputs=inputs)

    def connect(self, source: str, target: str) -> Self:
        """Bind ``source`` (a workflow input or ``"node.port"``) to ``target`` (``"node.port"``).

        Connecting twice to the same port makes a list (for ``many`` ports).
        """
        node_id, _, port = target.partition(".")
        node = self._node(node_id)
        if not port:
            raise WorkflowError(f"target {target!r} must be 'node.port'", node=node_id)
        current = node.inputs.get(port)
        if current is None:
            node.inputs[port] = source
        elif isinstance(current, list):
            current.append(source)
        else:
            node.inputs[port] = [current, source]
        return self

    def add_output(self, name: str, source: str) -> Self:
        self.outputs.append(_decl(OutputDecl, name=name, source=source))
        return self

    def _node(self, node_id: str) -> NodeDecl:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise WorkflowError(f"Need to add_node {node_id!r} first", node=node_id)

    # -------------------------------------------------- compile
    def compile(self, *, registry: Any = None, settings: Any = None) -> Any:
        """Validate everything, then build the engine (see :class:`CompiledWorkflow`)."""
        from ._engine import CompiledWorkflow

        return CompiledWorkflow(self, registry=registry, settings=settings)

    # -------------------------------------------------- documents
    def to_doc(self) -> WorkflowDoc:
        return WorkflowDoc(
            name=self.name,
            description=self.description,
            inputs=[i.model_copy() for i in self.inputs],
            nodes=[n.model_copy(deep=True) for n in self.nodes],
            outputs=[o.model_copy() for o in self.outputs],
            subworkflows={k: w.to_doc() for k, w in self.subworkflows.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_doc().model_dump(mode="json", exclude_defaults=False)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_doc(cls, doc: WorkflowDoc) -> Workflow:
        wf = cls(doc.name, doc.description)
        wf.inputs = list(doc.inputs)
        wf.nodes = [n.model_copy(deep=True) for n in doc.nodes]
        wf.outputs = list(doc.outputs)
        wf.subworkflows = {k: cls.from_doc(d) for k, d in doc.subworkflows.items()}
        return wf

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workflow:
        """Load a document; malformed documents raise :class:`WorkflowValidationError`."""
        try:
            doc = WorkflowDoc.model_validate(data)
        except ValidationError as exc:
            raise WorkflowValidationError([_where(e) for e in exc.errors()]) from exc
        if doc.schema_version != SCHEMA_VERSION:
            raise WorkflowValidationError([f"schema_version {doc.schema_version} is not supported (expected {SCHEMA_VERSION})"])
        return cls.from_doc(doc)

    @classmethod
    def from_json(cls, text: str | bytes) -> Workflow:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowValidationError([f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from exc
        if not isinstance(data, dict):
            raise WorkflowValidationError([f"a workflow document is a JSON object, got {type(data).__name__}"])
        return cls.from_dict(data)

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """The published JSON Schema of workflow documents (draft 2020-12)."""
        schema = WorkflowDoc.model_json_schema()
        defs = schema.get("$defs", {})
        root = defs.get("WorkflowDoc", schema)  # the model is recursive (subworkflows): hoist its definition
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": defs}


def _where(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "<document>"
    return f"{loc}: {err['msg']}"


def _decl(model: type[BaseModel], **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as exc:
        raise WorkflowValidationError([_where(e) for e in exc.errors()]) from exc

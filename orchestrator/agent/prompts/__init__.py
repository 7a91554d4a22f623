"""Versioned system prompts, one Markdown file each: ``<name>.v<version>.md``.

Prompts are data: edit the file, or add ``<name>.v2.md`` and select it with
``load_prompt(name, version=2)`` (or ``Agent(prompt_versions={"planner": 2})``).
Placeholders are ``$name`` (``string.Template``), so JSON braces in examples need
no escaping. Lines starting with ``<!--`` at the top are comments, not sent.

>>> p = load_prompt("planner")
>>> p.name, p.version
('planner', 1)
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

__all__ = ["Prompt", "list_prompts", "load_prompt"]

PROMPTS_DIR = Path(__file__).parent
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.md$")


@dataclass(frozen=True)
class Prompt:
    """A prompt template; :meth:`render` fills its ``$placeholders``."""

    name: str
    version: int
    template: str

    def render(self, **values: Any) -> str:
        return string.Template(self.template).safe_substitute({k: str(v) for k, v in values.items()}).strip()

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"


def list_prompts() -> dict[str, list[int]]:
    """Every prompt name with its available versions (ascending)."""
    out: dict[str, list[int]] = {}
    for path in PROMPTS_DIR.glob("*.md"):
        m = _FILE.match(path.name)
        if m:
            out.setdefault(m.group("name"), []).append(int(m.group("version")))
    return {k: sorted(v) for k, v in sorted(out.items())}


@lru_cache(maxsize=64)
def load_prompt(name: str, version: int | None = None) -> Prompt:
    """The prompt ``name`` at ``version`` (default: the highest version present)."""
    versions = list_prompts().get(name)
    if not versions:
        raise ConfigError(f"no prompt named {name!r} in {PROMPTS_DIR} (have: {sorted(list_prompts())})")
    v = versions[-1] if version is None else version
    if v not in versions:
        raise ConfigError(f"prompt {name!r} has no version {v} (have: {versions})")
    text = (PROMPTS_DIR / f"{name}.v{v}.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    while lines and (lines[0].startswith("<!--") or not lines[0].strip()):
        lines.pop(0)
    return Prompt(name=name, version=v, template="\n".join(lines))

"""The offline planner: plans from the tool catalog alone, no language model.

>>> from orchestrator.agent.offline import OfflinePlanner
>>> planner = OfflinePlanner()            # MiniLM embeddings when the extra is installed
>>> plans = planner.plan_texts(["Caption photo.png and read the caption aloud"], catalog)  # doctest: +SKIP

See docs/planner.md: how requests are cut into steps, matched and wired, the
task phrasings (tasks.toml), the search backend seam, and the figures.
"""

from __future__ import annotations

from ._match import LexicalEncoder, MiniLMEncoder, embeddings_available, task_notes
from ._planner import OfflinePlanner
from ._text import Mention, Step, find_mentions, split_steps

__all__ = [
    "LexicalEncoder",
    "Mention",
    "MiniLMEncoder",
    "OfflinePlanner",
    "Step",
    "embeddings_available",
    "find_mentions",
    "split_steps",
    "task_notes",
]

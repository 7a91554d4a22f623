"""The server's routes, one module per area: runs, artifacts, chat, catalog, ops."""

from . import artifacts, catalog, chat, ops, runs

__all__ = ["artifacts", "catalog", "chat", "ops", "runs"]

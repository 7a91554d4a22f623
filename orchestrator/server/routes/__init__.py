"""The server's routes, one module per area: runs, artifacts, chat, catalog, ops, OpenAI media
(images, audio, embeddings), the web playground."""

from . import artifacts, audio, catalog, chat, embeddings, images, ops, playground, runs

__all__ = ["artifacts", "audio", "catalog", "chat", "embeddings", "images", "ops", "playground", "runs"]

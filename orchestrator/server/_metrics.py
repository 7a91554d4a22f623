"""Prometheus metrics of one server: runs, node latencies, cache hits, model loads, queue depth.

Each app gets its own :class:`prometheus_client.CollectorRegistry`, so several apps
in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

logger = logging.getLogger("orchestrator.server")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The counters the run manager and routes update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_submitted = Counter("orchestrator_runs_submitted", "Runs accepted", ["kind"], registry=r)
        self.runs_rejected = Counter("orchestrator_runs_rejected", "Runs refused because the queue was full", registry=r)
        self.runs_finished = Counter("orchestrator_runs_finished", "Runs that ended", ["kind", "status"], registry=r)
        self.run_seconds = Histogram("orchestrator_run_seconds", "Run wall time, start to end", ["kind"],
                                     buckets=_BUCKETS, registry=r)
        self.queue_wait_seconds = Histogram("orchestrator_run_queue_wait_seconds", "Time a run waited for a worker",
                                            buckets=_BUCKETS, registry=r)
        self.runs_running = Gauge("orchestrator_runs_running", "Runs executing now", registry=r)
        self.queue_depth = Gauge("orchestrator_run_queue_depth", "Runs waiting for a worker", registry=r)
        self.node_seconds = Histogram("orchestrator_node_seconds", "Node latency (tool call plus storing outputs)",
                                      ["tool"], buckets=_BUCKETS, registry=r)
        self.node_cache_hits = Counter("orchestrator_node_cache_hits", "Nodes answered from the cache", ["tool"], registry=r)
        self.node_failures = Counter("orchestrator_node_failures", "Nodes that failed after retries", ["tool"], registry=r)
        self.uploads = Counter("orchestrator_artifact_uploads", "Artifact uploads", ["result"], registry=r)
        self.downloads = Counter("orchestrator_artifact_downloads", "Artifact downloads", ["range"], registry=r)
        self.chat_completions = Counter("orchestrator_chat_completions", "Chat completions", ["model", "stream"], registry=r)
        r.register(_ModelCollector())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCollector(Collector):
    """Model loads, evictions, failures and memory from the runtime's model manager."""

    def collect(self) -> Iterator[Any]:
        stats = _model_stats()
        for key, name, doc in (
            ("loads", "orchestrator_model_loads", "Models loaded by the model manager"),
            ("hits", "orchestrator_model_hits", "Model requests served by an already loaded model"),
            ("evictions", "orchestrator_model_evictions", "Models evicted to stay under the memory budget"),
            ("failures", "orchestrator_model_load_failures", "Model loads that failed"),
            ("load_seconds", "orchestrator_model_load_seconds", "Total seconds spent loading models"),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(stats.get(key, 0) or 0))
            yield family
        resident = GaugeMetricFamily("orchestrator_models_resident", "Models held in memory now")
        resident.add_metric([], float(len(stats.get("resident") or [])))
        yield resident
        used = GaugeMetricFamily("orchestrator_model_memory_bytes", "Estimated memory held by loaded models")
        used.add_metric([], float(stats.get("used_bytes", 0) or 0))
        yield used

    def describe(self) -> Iterator[Any]:
        return iter(())


def _model_stats() -> dict[str, Any]:
    """``ModelManager.stats()`` of the process's model manager; an absent runtime reports zeros."""
    try:
        from orchestrator import runtime

        getter: Callable[[], Any] = runtime.get_model_manager
        stats = getter().stats()
    except Exception:  # noqa: BLE001 - no runtime: no model metrics
        return {}
    return stats if isinstance(stats, dict) else {}

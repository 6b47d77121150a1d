"""Prometheus metrics of one process (``GET /metrics``). Each process keeps its own registry
and is scraped on its own address: run one ``homeward serve`` per port (replicas), not
``--workers N`` behind one port, when the numbers matter."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("decode", "detect", "embed", "search")


@dataclass(frozen=True)
class Vitals:
    """The service's state at scrape time."""

    model_id: str
    index_backend: str
    index_type: str
    index_templates: int
    index_generation: int
    review_queue: int
    deliveries: dict[str, int] = field(default_factory=dict)  # by state


class _VitalsCollector(Collector):
    def __init__(self, read: Callable[[], Vitals | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        vitals = self.read()
        if vitals is None:  # still starting
            return
        info = GaugeMetricFamily(
            "homeward_model_info", "The face model and index in use", labels=["model_id", "index"]
        )
        info.add_metric([vitals.model_id, f"{vitals.index_backend}-{vitals.index_type}"], 1)
        yield info
        yield GaugeMetricFamily(
            "homeward_index_templates",
            "Templates in the vector index",
            value=vitals.index_templates,
        )
        yield GaugeMetricFamily(
            "homeward_index_generation",
            "The registry change the index includes",
            value=vitals.index_generation,
        )
        yield GaugeMetricFamily(
            "homeward_review_queue_candidates",
            "Candidates waiting for review",
            value=vitals.review_queue,
        )
        deliveries = GaugeMetricFamily(
            "homeward_webhook_deliveries", "Webhook deliveries by state", labels=["state"]
        )
        for state in ("pending", "delivered", "failed"):
            deliveries.add_metric([state], vitals.deliveries.get(state, 0))
        yield deliveries


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "homeward_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "homeward_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "homeward_match_stage_seconds",
            "Time of each stage of matching a photo (decode, detect, embed, search)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "homeward_rate_limit_refusals_total", "Requests refused by a rate limit", registry=r
        )
        self.worker_runs = Counter(
            "homeward_worker_runs_total",
            "Background loop runs by loop and outcome",
            ["loop", "outcome"],
            registry=r,
        )
        self.worker_last_run = Gauge(
            "homeward_worker_last_run_timestamp_seconds",
            "When each background loop last finished",
            ["loop"],
            registry=r,
        )

    def watch(self, read: Callable[[], Vitals | None]) -> None:
        """Report ``read()`` at every scrape."""
        self.registry.register(_VitalsCollector(read))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages.labels(name).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)

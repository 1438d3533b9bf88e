"""Prometheus metrics (spec operations/health-and-monitoring). One registry per server, so tests and several apps in
one process never share counters. Labels never carry a secret path, value or token."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Where a request's time goes, so a slow tail can be pinned on a stage (docs/performance.md, "Where the time goes").
REQUEST_STAGES = (
    "authenticate",  # token verification (cached per token) and the identity mirror's roles
    "authorize",  # policy evaluation (cached per caller and generation)
    "read_model",  # the query of a secret's row
    "decrypt",  # opening the data key and the value
    "audit_durable",  # waiting for the request's access record to be committed by the group commit
    "command",  # a write command's transaction, from its first statement to its commit
)


class Stopwatch:
    """Times a ``with`` block into one stage's histogram: ``with metrics.stage["read_model"]: ...``."""

    __slots__ = ("_observe", "_started")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._observe(time.perf_counter() - self._started)


class StageTimers:
    """One ``Stopwatch`` factory per stage; each ``[stage]`` gives a fresh one, so concurrent requests never share."""

    __slots__ = ("_observers",)

    def __init__(self, histogram: Histogram) -> None:
        self._observers = {stage: histogram.labels(stage).observe for stage in REQUEST_STAGES}

    def __getitem__(self, stage: str) -> Stopwatch:
        return Stopwatch(self._observers[stage])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "scaivault_requests_total", "Requests", ["method", "path_category", "status"], registry=r
        )
        self.request_duration = Histogram(
            "scaivault_request_duration_seconds", "Request latency", ["method", "path_category"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.request_stage = Histogram(
            "scaivault_request_stage_seconds", "Time requests spend in each stage", ["stage"],
            buckets=STAGE_BUCKETS, registry=r,
        )
        self.stage = StageTimers(self.request_stage)
        self.active_requests = Gauge("scaivault_active_requests", "Requests in flight", ["path_category"], registry=r)
        self.secret_reads = Counter(
            "scaivault_secret_reads_total", "Secret values read", ["tenant", "secret_type"], registry=r
        )
        self.secret_writes = Counter("scaivault_secret_writes_total", "Secret versions written", ["tenant"], registry=r)
        self.access_record_batches = Histogram(
            "scaivault_access_record_batch_size", "Access records made durable per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000), registry=r,
        )
        self.access_record_failures = Counter(
            "scaivault_access_record_failures_total", "Requests refused because their access record was not durable",
            registry=r,
        )
        self.projection_position = Gauge(
            "scaivault_projection_position", "Last event applied by each projection (this process)", ["projection"],
            registry=r,
        )
        self.projection_lag = Gauge(
            "scaivault_projection_lag_events", "Events committed but not yet applied, per projection", ["projection"],
            registry=r,
        )
        self.db_pool_size = Gauge("scaivault_db_pool_size", "Database pool connections", registry=r)
        self.db_pool_available = Gauge("scaivault_db_pool_available", "Idle database pool connections", registry=r)

    def watch_pool(self, size: Callable[[], int], idle: Callable[[], int]) -> None:
        self.db_pool_size.set_function(size)
        self.db_pool_available.set_function(idle)

    def projection_progress(self, name: str, position: int, head: int) -> None:
        self.projection_position.labels(name).set(position)
        self.projection_lag.labels(name).set(max(head - position, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def path_category(canonical_route: str) -> str:
    """``/v1/t/{tenant_id}/secrets/{path}`` -> ``secrets``; ``/v1/partner/secrets`` -> ``partner_secrets``."""
    parts = [part for part in canonical_route.split("/") if part and part != "v1"]
    if parts[:1] == ["t"]:
        parts = parts[2:]
    if parts[:1] == ["partner"]:
        return "partner_" + (parts[1] if len(parts) > 1 else "root")
    return parts[0] if parts and not parts[0].startswith("{") else "unmatched"

"""Prometheus metrics of the service, in a registry owned by the service context.

Each `Metrics` has its own `CollectorRegistry` rather than the process-global
default, so several service contexts (tests build many) never collide on
metric names, and `/metrics` shows exactly this service's figures. The
embedding core's series carry an `encoder` label: one process may run a
batcher per encoder.

Every label takes a bounded set of values (methods, status codes, outcomes,
sectors, factors, detectors, store operations), never a tenant, customer,
session or credential id: a series per tenant would multiply every histogram
by the number of tenants, and ids belong in the access log and the audit
trail, not in a time-series database. Sector (general, finance, health) is
the bounded stand-in for the tenant. docs/observability.md lists them all.

The counting helpers below (`rpc_done`, `decided`, ...) cache their label
children: the RPC and decision paths are measured in calls per core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Batch sizes are small integers; powers of two up to the largest sensible max_batch.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: From sub-millisecond (an idle queue) to seconds (a saturated CPU at 512 callers).
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: RPCs: a unary call takes milliseconds, a Verify stream lasts as long as the phone call.
RPC_BUCKETS = (*SECONDS_BUCKETS[:-1], 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Store operations: a query on SQLite's thread takes tens of microseconds, a unit of work
#: waiting for PostgreSQL's pool up to its 5 s timeout.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, *SECONDS_BUCKETS[:-2])


class Metrics:
    """The batching core's metrics; see the module docstring for why a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server: Any = None
        reg = self.registry
        self.batch_size = Histogram(
            "authsvc_embed_batch_size",
            "Requests per encoder forward call (after dropping expired or cancelled ones).",
            ["encoder"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "authsvc_embed_queue_wait_seconds",
            "Time from submission until the request's batch starts computing.",
            ["encoder"],
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self.compute = Histogram(
            "authsvc_embed_compute_seconds",
            "Wall time of one batch's encoder call.",
            ["encoder"],
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            "authsvc_embed_queue_depth",
            "Requests waiting for a batch.",
            ["encoder"],
            registry=reg,
        )
        self.refused = Counter(
            "authsvc_embed_refused",
            "Requests refused because the queue was full (answered RESOURCE_EXHAUSTED).",
            ["encoder"],
            registry=reg,
        )
        self.dropped = Counter(
            "authsvc_embed_dropped",
            "Queued requests dropped before compute: deadline passed or caller gone.",
            ["encoder", "reason"],
            registry=reg,
        )
        self.audio_seconds = Counter(
            "authsvc_embed_audio_seconds",
            "Seconds of audio embedded.",
            ["encoder"],
            registry=reg,
        )

        self.bridge_connections = Counter(
            "authsvc_bridge_connections",
            "Media bridge connections by how they ended (completed, refused, protocol_error, idle, error).",
            ["bridge", "outcome"],
            registry=reg,
        )
        self.bridge_errors = Counter(
            "authsvc_bridge_protocol_errors",
            "Frames or messages a bridge refused, by reason.",
            ["bridge", "reason"],
            registry=reg,
        )
        self.webhook_deliveries = Counter(
            "authsvc_webhook_deliveries",
            "Webhook deliveries by result (delivered, retried, failed, dropped).",
            ["outcome"],
            registry=reg,
        )
        self.bridge_active = Gauge(
            "authsvc_bridge_active_connections",
            "Media bridge connections open now.",
            ["bridge"],
            registry=reg,
        )

        # -- RPCs (authsvc.server.observe) ---------------------------------------------------
        self.rpc_requests = Counter(
            "authsvc_rpc_requests",
            "RPCs finished, by full method name and status code name (OK, UNAUTHENTICATED, ...).",
            ["method", "code"],
            registry=reg,
        )
        self.rpc_duration = Histogram(
            "authsvc_rpc_duration_seconds",
            "Time from an RPC's start to its status; for a stream, the whole stream.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=reg,
        )
        self.verify_first_decision = Histogram(
            "authsvc_verify_first_decision_seconds",
            "Time from a Verify stream's start to its first decision other than PENDING "
            "(the caller's speech included).",
            buckets=RPC_BUCKETS,
            registry=reg,
        )
        # -- decisions (authsvc.session) -----------------------------------------------------
        self.decisions = Counter(
            "authsvc_decisions",
            "Decisions sent, rolling re-decisions included, by outcome, the tenant policy's sector "
            "and whether it was the call's final one.",
            ["outcome", "sector", "final"],
            registry=reg,
        )
        self.look_seconds = Histogram(
            "authsvc_look_seconds",
            "Stages of a voice look: receive (the chunk that completed its speech), embed, score "
            "(fraud detectors and scoring), decide (the engine and its unit of work), total.",
            ["stage"],
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self.fraud_risks = Counter(
            "authsvc_fraud_risks",
            "Fraud detector judgements made for a look, by detector and level.",
            ["detector", "level"],
            registry=reg,
        )
        # -- second factors and lockouts (authsvc.factors, authsvc.attempts) ----------------
        self.step_ups = Counter(
            "authsvc_stepups",
            "Second-factor events by factor and result (passed, failed, locked_out, code_sent, send_failed).",
            ["factor", "result"],
            registry=reg,
        )
        self.lockouts = Counter(
            "authsvc_lockouts",
            "Lockouts begun, by kind (biometric_disabled, biometric_delayed, factor_locked, "
            "factor_disabled, source).",
            ["kind"],
            registry=reg,
        )
        # -- the store (authsvc.store.timed, wrapped by the service context) ------------------
        self.store_duration = Histogram(
            "authsvc_store_operation_duration_seconds",
            "Store latency by operation: begin (until a unit of work is open: pool or write lock), "
            "commit, transaction (a whole unit of work), ping, and each query method.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=reg,
        )
        self._children: dict[tuple, Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def rpc_done(self, method: str, code: str, seconds: float) -> None:
        self._child(self.rpc_requests, method, code).inc()
        self._child(self.rpc_duration, method).observe(seconds)

    def decided(self, outcome: str, sector: str, final: bool) -> None:
        self._child(self.decisions, outcome, sector, "true" if final else "false").inc()

    def step_up(self, factor: str, result: str) -> None:
        self._child(self.step_ups, factor, result).inc()

    def lockout(self, kind: str) -> None:
        self._child(self.lockouts, kind).inc()

    def fraud_risk(self, detector: str, level: str) -> None:
        self._child(self.fraud_risks, detector, level).inc()

    def look_stage(self, stage: str, seconds: float) -> None:
        self._child(self.look_seconds, stage).observe(seconds)

    def store_timer(self, operation: str) -> Callable[[float], None]:
        """The observe function of one store operation's latency (authsvc.store.timed)."""
        return self._child(self.store_duration, operation).observe

    def series_names(self) -> set[str]:
        """Every series name this registry can expose (`_total`, `_bucket`, ... included),
        whether or not a labelled child exists yet: what a dashboard's queries may name."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",),
            "summary": ("", "_sum", "_count", "_created"),
        }
        names: set[str] = set()
        for family in self.registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        return names

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> str:
        """Expose this registry over HTTP in a daemon thread; returns the scrape URL.

        Port 0 picks a free port, and the URL names the one actually bound.
        """
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        return f"http://{shown}:{bound_port}/metrics"

    def close(self) -> None:
        """Stop the HTTP endpoint, if `serve` started one."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

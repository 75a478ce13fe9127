"""Prometheus metrics of the embedding core, in a registry owned by the service.

Each `Metrics` has its own `CollectorRegistry` rather than the process-global
default, so several service contexts (tests build many) never collide on
metric names, and `/metrics` shows exactly this service's figures. Every
series carries an `encoder` label: one process may run a batcher per encoder.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Batch sizes are small integers; powers of two up to the largest sensible max_batch.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: From sub-millisecond (an idle queue) to seconds (a saturated CPU at 512 callers).
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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

"""Optional OpenTelemetry traces of a voice decision: receive -> embed -> score -> decide.

A look (authsvc.session) records when each of its stages ended, on the
monotonic clock, at the cost of one clock read per stage. When the look's
decision is out, `LookTrace.end` puts the stage durations into the
`authsvc_look_seconds` histogram and, where `opentelemetry-api` is installed
and a tracer provider records (`authsvc serve --otel`, or the process run
under `opentelemetry-instrument`), turns them into one `authsvc.look` span
with a child span per stage, stamped after the fact with the stages' times:
no span context travels through the session's awaits, and nothing at all is
built when no provider records. Without the package, this module is the
histogram alone (no import error).

Span attributes are never biometric: the call (session) id, the tenant and
its sector, the look's number, its outcome and finality, and the net speech
it was scored on. No customer id, score, threshold, LLR, audio or code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

try:
    from opentelemetry import trace as _otel
except ImportError:  # the otel extra is not installed: histograms only
    _otel = None

TRACER_NAME = "authsvc"
LOOK_SPAN = "authsvc.look"
RECEIVE, EMBED, SCORE, DECIDE = "receive", "embed", "score", "decide"
TOTAL = "total"

_tracer: Any = _otel.get_tracer(TRACER_NAME) if _otel is not None else None


def available() -> bool:
    """Whether the OpenTelemetry API is importable (spans are made once a provider records)."""
    return _otel is not None


class LookTrace:
    """The stage boundaries of one look; `start_ns` from time.perf_counter_ns()."""

    __slots__ = ("_marks",)

    def __init__(self, start_ns: int | None = None) -> None:
        self._marks: list[tuple[str, int]] = [("", time.perf_counter_ns() if start_ns is None else start_ns)]

    def mark(self, stage: str) -> None:
        """The stage named `stage` ends now (it began where the previous one ended)."""
        self._marks.append((stage, time.perf_counter_ns()))

    def end(self, observe: Callable[[str, float], None], attributes: Callable[[], dict[str, Any]]) -> None:
        """Reports the stages to `observe(stage, seconds)` (and the whole look as "total"), and
        as spans where a tracer provider records; `attributes` is only called then."""
        marks = self._marks
        start = previous = marks[0][1]
        for stage, at in marks[1:]:
            observe(stage, (at - previous) / 1e9)
            previous = at
        observe(TOTAL, (previous - start) / 1e9)
        if _tracer is None:
            return
        # perf_counter -> wall clock (spans carry epoch nanoseconds).
        offset = time.time_ns() - time.perf_counter_ns()
        root = _tracer.start_span(LOOK_SPAN, start_time=start + offset)
        if not root.is_recording():
            return
        root.set_attributes(attributes())
        parent = _otel.set_span_in_context(root)
        begun = start
        for stage, at in marks[1:]:
            child = _tracer.start_span(f"authsvc.{stage}", context=parent, start_time=begun + offset)
            child.end(end_time=at + offset)
            begun = at
        root.end(end_time=previous + offset)


def configure_otlp() -> Any:
    """Installs an SDK tracer provider exporting spans over OTLP (the standard OTEL_EXPORTER_OTLP_*
    variables say where); -> the provider, to shut down at exit. Raises RuntimeError naming the
    package that is missing."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise RuntimeError("--otel needs the OpenTelemetry SDK: pip install 'authsvc[otel]'") from None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise RuntimeError(
                "--otel needs an OTLP exporter: pip install opentelemetry-exporter-otlp"
            ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "authsvc")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _otel.set_tracer_provider(provider)  # type: ignore[union-attr]
    return provider

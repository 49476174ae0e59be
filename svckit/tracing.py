"""OpenTelemetry tracing: one trace from an RPC through every event it causes.

Why it is shaped like this:
- The server interceptor opens a SERVER span per RPC; `outbox_entry` stamps the
  span's W3C `traceparent` into the event's Kafka headers at commit time; the
  consumer opens a CONSUMER span for each applied event as a child of that
  header. So "create customer in accounts -> orders applies it" is one trace,
  even though the relay publishes later and in another task.
- A real TracerProvider is always installed (`configure`), with an OTLP
  exporter only when OTEL_EXPORTER_OTLP_ENDPOINT is set: without an exporter,
  spans cost little but still give every log line a trace id.
- The global provider can be set once per process, so `configure` and the
  tests' `memory_exporter` share one provider and only add span processors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
SERVICE_ATTRIBUTE = "storefront.service"
"""Span attribute naming the service; the resource alone cannot tell apart services that
share one process (the in-process integration tests)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_memory: InMemorySpanExporter | None = None
_exporting_to: set[str] = set()


def provider(service_name: str = "storefront") -> TracerProvider:
    """The process's SDK TracerProvider, installed globally on first use."""
    global _provider
    if _provider is None:
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            _provider = existing  # someone (a test, an agent) installed one: share it
        else:
            _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
            trace.set_tracer_provider(_provider)
    return _provider


def configure(service_name: str, endpoint: str | None = None) -> TracerProvider:
    """Install tracing for a service process; export over OTLP/gRPC only if `endpoint`."""
    tp = provider(service_name)
    if endpoint and endpoint not in _exporting_to:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # http:// means plaintext, the usual in-cluster collector; https:// uses TLS.
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        tp.add_span_processor(BatchSpanProcessor(exporter))
        _exporting_to.add(endpoint)
        log.info("exporting traces over OTLP to %s", endpoint)
    return tp


def shutdown() -> None:
    """Flush batched spans before the process exits; a no-op when nothing was configured."""
    if _provider is not None:
        _provider.shutdown()


def memory_exporter() -> InMemorySpanExporter:
    """An in-memory exporter receiving every finished span (for tests); one per process."""
    global _memory
    if _memory is None:
        _memory = InMemorySpanExporter()
        provider().add_span_processor(SimpleSpanProcessor(_memory))
    return _memory


def tracer() -> trace.Tracer:
    return trace.get_tracer("svckit")


def current_traceparent() -> str | None:
    """The active span as a W3C `traceparent` value, or None outside any (sampled) span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def parent_context(traceparent: str | None) -> otel_context.Context | None:
    """The context to start a child span in; None (a new root) if absent or malformed."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def context_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context | None:
    """The caller's trace from gRPC metadata (Envoy and OTel clients send `traceparent`)."""
    headers: Mapping[str, str | bytes] = dict(metadata or ())
    value = headers.get(TRACEPARENT)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return parent_context(value)


def event_span(
    name: str,
    traceparent: str | None,
    attributes: Mapping[str, AttributeValue],
    *,
    start_ns: int,
    end_ns: int,
    batch: trace.SpanContext | None = None,
) -> None:
    """Record one event's CONSUMER span after it was applied as part of a batch.

    A batch mixes events from many traces, so its own span can parent none of them; each
    event still gets a span in the trace that caused it, timed as the batch and linked to it.
    """
    links = [trace.Link(batch)] if batch is not None and batch.is_valid else None
    span = tracer().start_span(
        name,
        context=parent_context(traceparent),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        start_time=start_ns,
    )
    span.end(end_time=end_ns)


def current_ids() -> tuple[str, str]:
    """(trace_id, span_id) of the active span as lowercase hex, or ("", "") outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")

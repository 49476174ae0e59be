"""OpenTelemetry tracing: one trace from an RPC through every event it causes.

Why it is shaped like this:
- The server interceptor opens a SERVER span per RPC, its parent taken from the request's
  metadata by the propagators OTEL_PROPAGATORS names (W3C by default; `b3` or `b3multi` in an
  Istio mesh, so the sidecars' spans and ours form one trace). `outbox_entry` stamps the
  span's W3C `traceparent` into the event's Kafka headers at commit time (the event
  envelope's format, whatever the mesh speaks); the consumer opens a CONSUMER span for each
  applied event as a child of that header. So "create customer in accounts -> orders applies
  it" is one trace, even though the relay publishes later and in another task.
- Configured by OpenTelemetry's own variables (`TracingConfig.from_env`): OTEL_SERVICE_NAME
  and OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and _PROTOCOL (grpc or
  http/protobuf), OTEL_PROPAGATORS, OTEL_TRACES_SAMPLER, OTEL_SDK_DISABLED,
  OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
- Database spans by OpenTelemetry's pymongo instrumentation (`instrument_clients`), while spans
  are received; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=pymongo turns them off.
- Until something receives spans (an OTLP exporter, the tests' memory exporter) every span is
  dropped at birth: a non-recording span that still has ids, so log lines and events still
  carry a trace id across services, at a fraction of a recorded span's cost
  (bench/tracing_cost.py).
- The global provider can be set once per process, so `configure` and the
  tests' `memory_exporter` share one provider and only add span processors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import export as trace_export
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.trace import TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue

from svckit import envvars
from svckit.envvars import ConfigError

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
SERVICE_ATTRIBUTE = "storefront.service"
"""Span attribute naming the service; the resource alone cannot tell apart services that
share one process (the in-process integration tests)."""

PROTOCOLS = ("grpc", "http/protobuf")
"""OTLP transports; grpc is the default, as in OpenTelemetry Python's own configuration."""
DEFAULT_PROPAGATORS = "tracecontext,baggage"

_EVENTS = TraceContextTextMapPropagator()
"""Events carry W3C `traceparent`, the envelope's header, whatever the mesh propagates."""
_incoming: TextMapPropagator = CompositePropagator([_EVENTS])
"""Reads a caller's trace from request metadata; `configure` sets it from OTEL_PROPAGATORS."""
_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_memory: InMemorySpanExporter | None = None
_exporting = False


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry's environment variables, checked at start-up (a bad one names itself)."""

    disabled: bool = False
    """OTEL_SDK_DISABLED=true: no SDK at all; every span is the API's no-op."""
    exports: bool = False
    """An OTLP endpoint is set (for traces or all signals)."""
    protocol: str = "grpc"
    propagators: Sequence[str] = ("tracecontext", "baggage")
    propagator: TextMapPropagator = field(
        default_factory=lambda: CompositePropagator([_EVENTS]), compare=False, repr=False
    )
    without: frozenset[str] = frozenset()
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: instrumentations not to install (``pymongo``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingConfig:
        env = os.environ if env is None else env
        disabled = envvars.choice(env, "OTEL_SDK_DISABLED", "false", ("true", "false")) == "true"
        protocol = envvars.choice(
            env,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            envvars.choice(env, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", PROTOCOLS),
            PROTOCOLS,
        )
        exports = bool(
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        names = [
            n.strip()
            for n in envvars.text(env, "OTEL_PROPAGATORS", DEFAULT_PROPAGATORS).split(",")
            if n.strip()
        ]
        without = frozenset(
            n.strip()
            for n in envvars.text(env, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
            if n.strip()
        )
        return cls(disabled, exports, protocol, tuple(names), _propagators(names), without)


def _propagators(names: Sequence[str]) -> TextMapPropagator:
    """The propagators named, as OpenTelemetry's registry of them (entry points) knows them."""
    if "none" in names:
        return CompositePropagator([])
    found = []
    for name in names:
        points = entry_points(group="opentelemetry_propagator", name=name)
        if not points:
            known = sorted(p.name for p in entry_points(group="opentelemetry_propagator"))
            raise ConfigError(
                f"OTEL_PROPAGATORS: {name!r} is not an installed propagator "
                f"(installed: {', '.join(known)}, or none)"
            )
        found.append(next(iter(points)).load()())
    return CompositePropagator(found)


class _WhileExporting(Sampler):
    """Drops every span until something receives them, then samples as configured."""

    def __init__(self, then: Sampler) -> None:
        self._then = then

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = self._then if _exporting else ALWAYS_OFF
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"WhileExporting{{{self._then.get_description()}}}"


def _resource(service_name: str) -> Resource:
    """OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins over our name."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: service_name}))
    return detected


def provider(service_name: str = "storefront") -> TracerProvider:
    """The process's SDK TracerProvider, installed globally on first use."""
    global _provider
    if _provider is None:
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            _provider = existing  # someone (a test, an agent) installed one: share it
        else:
            # OTEL_TRACES_SAMPLER and _ARG decide once spans are received (the SDK reads them).
            configured = TracerProvider(shutdown_on_exit=False).sampler
            _provider = TracerProvider(
                resource=_resource(service_name), sampler=_WhileExporting(configured)
            )
            trace.set_tracer_provider(_provider)
    return _provider


def _receive(processor: SpanProcessor) -> None:
    global _exporting
    provider().add_span_processor(processor)
    _exporting = True


def configure(service_name: str, config: TracingConfig | None = None) -> None:
    """Install tracing for a service process: read the caller's trace with the configured
    propagators; record and export spans over OTLP only when an endpoint is set."""
    global _incoming
    config = config or TracingConfig()
    _incoming = config.propagator
    if config.disabled:
        log.info("tracing disabled (OTEL_SDK_DISABLED)")
        return
    provider(service_name)
    if config.exports and not _exporting:
        _receive(BatchSpanProcessor(_otlp_exporter(config.protocol)))
        log.info("exporting traces over OTLP (%s)", config.protocol)


def instrument_clients(service_name: str, config: TracingConfig | None = None) -> None:
    """A CLIENT span for every MongoDB command (OpenTelemetry's pymongo instrumentation, which
    works with AsyncMongoClient: its command listener runs in the task that awaits the
    command, so the span is a child of the RPC's or the event's), when spans are received
    (an OTLP endpoint is configured, or the tests' memory exporter is on) and
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS does not name ``pymongo``.

    Call it before creating the clients: pymongo gives a listener only to clients made after
    it is registered. Not installed while nothing receives spans, so a command costs no span
    then (a dropped span per command would still cost its sampling and ids). The statement
    is not recorded (the instrumentation's default): filters hold customers' data.
    aiokafka's instrumentation is not used: docs/observability.md says why."""
    config = config or TracingConfig()
    if config.disabled or "pymongo" in config.without or not (config.exports or _exporting):
        return
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    instrumentor = PymongoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider(service_name))


def _otlp_exporter(protocol: str) -> trace_export.SpanExporter:
    """The exporter reads its endpoint, headers, certificates and timeouts from the
    OTEL_EXPORTER_OTLP_[TRACES_]* variables itself (http:// means plaintext for gRPC)."""
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

    return Grpc()


def shutdown() -> None:
    """Flush batched spans before the process exits; a no-op when nothing was configured."""
    if _provider is not None:
        _provider.shutdown()


def memory_exporter() -> InMemorySpanExporter:
    """An in-memory exporter receiving every finished span (for tests); one per process."""
    global _memory
    if _memory is None:
        _memory = InMemorySpanExporter()
        _receive(SimpleSpanProcessor(_memory))
    return _memory


def tracer() -> trace.Tracer:
    """The project's tracer, looked up once (``get_tracer`` builds one per call)."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("svckit")
    return _tracer


def current_traceparent() -> str | None:
    """The active span as a W3C `traceparent` value, or None outside any (sampled) span."""
    carrier: dict[str, str] = {}
    _EVENTS.inject(carrier)
    return carrier.get(TRACEPARENT)


def parent_context(traceparent: str | None) -> otel_context.Context | None:
    """The context to start a child span in; None (a new root) if absent or malformed."""
    if not traceparent:
        return None
    ctx = _EVENTS.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def context_from_metadata(
    metadata: Mapping[str, str] | Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context | None:
    """The caller's trace from gRPC metadata, by the configured propagators (Envoy and OTel
    clients send `traceparent`; Istio's sidecars B3 headers); None (a new root) without one.

    `metadata` is the request's pairs, or the dict svckit.auth.headers_of made of them (the
    server's path: read once per call). Without any header the propagators read, they are not
    asked at all."""
    if isinstance(metadata, Mapping):
        headers = metadata
    else:
        headers = {
            k.lower(): v.decode(errors="replace") if isinstance(v, bytes) else v
            for k, v in metadata or ()
        }
    if headers.keys().isdisjoint(_fields_read()):
        return None
    ctx = _incoming.extract(headers)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


_fields: tuple[TextMapPropagator, frozenset[str]] | None = None


def _fields_read() -> frozenset[str]:
    """The header names the configured propagators read (a composite builds the set anew each
    time it is asked: once per propagator here)."""
    global _fields
    if _fields is None or _fields[0] is not _incoming:
        _fields = (_incoming, frozenset(_incoming.fields))
    return _fields[1]


class ServerSpan:
    """The SERVER span of one RPC, made current while the handler runs (``with``).

    While something receives spans it is the SDK's (sampled as configured). Until then no SDK
    span is built: the sampler would drop it anyway, and building it (sampler, attributes,
    the SDK's context manager) cost 65-77 us a call, more than the rest of the interceptor.
    What the dropped span would have been is made here directly: a non-recording span with
    a fresh span id in the caller's trace (or a new one), so logs and events still carry the
    trace id. With the SDK off (OTEL_SDK_DISABLED), the API's no-op: the caller's context.
    """

    __slots__ = ("_name", "_parent", "_attributes", "_cm", "_token", "span")

    def __init__(
        self,
        name: str,
        parent: otel_context.Context | None,
        attributes: Mapping[str, AttributeValue],
    ) -> None:
        self._name = name
        self._parent = parent
        self._attributes = attributes
        self._cm: Any = None
        self._token: object = None
        self.span: trace.Span = trace.INVALID_SPAN

    def __enter__(self) -> trace.Span:
        if _exporting:
            self._cm = tracer().start_as_current_span(
                self._name,
                context=self._parent,
                kind=trace.SpanKind.SERVER,
                attributes=self._attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            self.span = self._cm.__enter__()
            return self.span
        caller = trace.get_current_span(self._parent).get_span_context()
        if _provider is None:
            self.span = trace.NonRecordingSpan(caller)
        else:
            ids = _provider.id_generator
            self.span = trace.NonRecordingSpan(
                trace.SpanContext(
                    caller.trace_id if caller.is_valid else ids.generate_trace_id(),
                    ids.generate_span_id(),
                    is_remote=False,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
                    trace_state=caller.trace_state if caller.is_valid else None,
                )
            )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, self._parent))
        return self.span

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
        else:
            otel_context.detach(self._token)  # type: ignore[arg-type]


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

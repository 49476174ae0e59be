"""Trace context crosses Kafka in the `traceparent` header: written by outbox_entry
from the active span, read back by the consumer as its parent."""

from __future__ import annotations

from opentelemetry.sdk.trace import Span, TracerProvider

import topology
from storefront.accounts.v1 import events_pb2
from svckit import tracing
from svckit.envelope import decode
from svckit.outbox import outbox_entry

TYPES = ["storefront.accounts.v1.CustomerChanged"]
tracer = TracerProvider().get_tracer("test")  # private: unit tests leave the global alone


def entry_headers(traceparent: str | None = None) -> tuple[list[tuple[str, bytes]], bytes]:
    """The Kafka headers and value the relay would send for a fresh outbox entry."""
    event = events_pb2.CustomerChanged(customer_id="c-1", version=1)
    entry = outbox_entry(
        topology.CUSTOMER_CHANGES, "c-1", event, source="//t", seq=1, traceparent=traceparent
    )
    return [(k, v.encode()) for k, v in entry["headers"].items()], entry["value"]


def test_outbox_entry_inside_a_span_carries_its_traceparent() -> None:
    with tracer.start_as_current_span("rpc") as span:
        headers, value = entry_headers()
        ctx = span.get_span_context()
    envelope = decode(value, headers, key=b"c-1", accepted_types=TYPES)
    assert envelope.traceparent is not None
    assert envelope.traceparent.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    parent = tracing.parent_context(envelope.traceparent)
    assert parent is not None
    with tracer.start_as_current_span("apply", context=parent) as child:
        assert child.get_span_context().trace_id == ctx.trace_id
        assert isinstance(child, Span) and child.parent is not None
        assert child.parent.span_id == ctx.span_id


def test_outside_a_span_there_is_no_traceparent() -> None:
    headers, value = entry_headers()
    assert decode(value, headers, key=b"c-1", accepted_types=TYPES).traceparent is None
    assert tracing.current_traceparent() is None


def test_an_explicit_traceparent_wins() -> None:
    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with tracer.start_as_current_span("rpc"):
        headers, value = entry_headers(traceparent=given)
    assert decode(value, headers, key=b"c-1", accepted_types=TYPES).traceparent == given


def test_malformed_traceparent_starts_a_new_trace() -> None:
    assert tracing.parent_context("not-a-traceparent") is None
    assert tracing.parent_context(None) is None


def test_grpc_metadata_traceparent_is_the_parent() -> None:
    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parent = tracing.context_from_metadata([("user-agent", "x"), ("traceparent", given)])
    assert parent is not None
    with tracer.start_as_current_span("rpc", context=parent) as span:
        assert f"{span.get_span_context().trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"

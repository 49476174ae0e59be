"""What a span costs a service, per RPC-shaped span (start, two attributes, end), in each way
svckit.tracing can run: `uv run python -m bench.tracing_cost`.

- disabled: OTEL_SDK_DISABLED=true, the API's no-op;
- dropped: the default, nothing receives spans (ids kept for logs and events), as an SDK span
  the sampler drops, and as the interceptor makes it (svckit.tracing.ServerSpan: no SDK span
  built, the same ids);
- recorded: spans recorded and handed to a processor that discards them (what every span cost
  before spans were dropped while nothing exports; an exporter adds its own work on top).

Printed as microseconds per span and as a ratio to the no-op, measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from svckit import tracing

SPANS = 20_000


class _Discard(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        pass


def per_span_us(tracer: trace.Tracer) -> float:
    def one() -> None:
        with tracer.start_as_current_span("storefront.orders.v1.OrdersService/CreateOrder") as s:
            s.set_attribute("rpc.system", "grpc")
            s.set_attribute("storefront.service", "orders")

    for _ in range(1000):  # warm-up
        one()
    started = time.perf_counter()
    for _ in range(SPANS):
        one()
    return (time.perf_counter() - started) / SPANS * 1e6


def server_span_us() -> float:
    """The interceptor's SERVER span while nothing receives spans (svckit.tracing.ServerSpan)."""
    tracing.provider("bench")  # the SDK installed, as in a service; no processor added
    attributes = {"rpc.system": "grpc", "storefront.service": "orders"}

    def one() -> None:
        with tracing.ServerSpan("storefront.orders.v1.OrdersService/CreateOrder", None, attributes):
            pass

    for _ in range(1000):
        one()
    started = time.perf_counter()
    for _ in range(SPANS):
        one()
    return (time.perf_counter() - started) / SPANS * 1e6


def main() -> None:
    recorded = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    recorded.add_span_processor(_Discard())
    ways: dict[str, Callable[[], trace.Tracer]] = {
        "disabled (no-op)": lambda: trace.NoOpTracer(),
        # svckit's sampler while no processor receives spans (as in a service without export).
        "dropped (default)": lambda: TracerProvider(
            sampler=tracing._WhileExporting(ALWAYS_ON), shutdown_on_exit=False
        ).get_tracer("bench"),
        "recorded": lambda: recorded.get_tracer("bench"),
    }
    figures = {name: per_span_us(make()) for name, make in ways.items()}
    figures["dropped (ServerSpan)"] = server_span_us()
    base = figures["disabled (no-op)"]
    print(f"{'tracing':20} {'us/span':>8} {'x no-op':>8}")
    for name, us in figures.items():
        print(f"{name:20} {us:8.2f} {us / base:8.1f}")


if __name__ == "__main__":
    main()

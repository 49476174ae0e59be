"""Tracing follows OpenTelemetry's own environment variables: the service name, per-signal
endpoint and protocol, the propagators (B3 for an Istio mesh), the SDK switch; and spans are
dropped at birth while nothing receives them."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from svckit import tracing
from svckit.envvars import ConfigError
from svckit.tracing import TracingConfig

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
tracer = TracerProvider().get_tracer("test")  # private: unit tests leave the global alone


def test_defaults_export_nothing_and_read_w3c() -> None:
    config = TracingConfig.from_env({})
    assert (config.disabled, config.exports, config.protocol) == (False, False, "grpc")
    assert config.propagators == ("tracecontext", "baggage")


def test_a_traces_endpoint_alone_turns_export_on_and_its_protocol_wins() -> None:
    config = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
    )
    assert (config.exports, config.protocol) == (True, "http/protobuf")
    assert TracingConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}).exports


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"),
        ("OTEL_PROPAGATORS", "tracecontext,zipkin"),
        ("OTEL_SDK_DISABLED", "yes"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        TracingConfig.from_env({name: value})


@pytest.mark.parametrize(
    ("propagators", "metadata"),
    [
        ("tracecontext,baggage", [("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01")]),
        (
            "tracecontext,b3multi",
            [("x-b3-traceid", TRACE_ID), ("x-b3-spanid", SPAN_ID), ("x-b3-sampled", "1")],
        ),
        ("b3", [("b3", f"{TRACE_ID}-{SPAN_ID}-1")]),
        # gRPC metadata keys arrive lowercase, but a proxy may have sent them capitalised.
        ("b3multi", [("X-B3-TraceId", TRACE_ID.encode()), ("X-B3-SpanId", SPAN_ID.encode())]),
    ],
)
def test_the_callers_trace_is_read_by_the_configured_propagators(
    propagators: str, metadata: list[tuple[str, str | bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TracingConfig.from_env({"OTEL_PROPAGATORS": propagators})
    monkeypatch.setattr(tracing, "_incoming", config.propagator)
    parent = tracing.context_from_metadata([("user-agent", "x"), *metadata])
    assert parent is not None
    with tracer.start_as_current_span("rpc", context=parent) as span:
        assert f"{span.get_span_context().trace_id:032x}" == TRACE_ID


def test_b3_headers_are_ignored_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_incoming", TracingConfig.from_env({}).propagator)
    b3 = [("x-b3-traceid", TRACE_ID), ("x-b3-spanid", SPAN_ID)]
    assert tracing.context_from_metadata(b3) is None


def test_otel_service_name_wins_over_the_services_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert tracing._resource("orders").attributes["service.name"] == "orders"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=shop")
    assert tracing._resource("orders").attributes["service.name"] == "from-attrs"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-eu")
    resource = tracing._resource("orders")
    assert (resource.attributes["service.name"], resource.attributes["team"]) == (
        "orders-eu",
        "shop",
    )


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        body = self.rfile.read(int(self.headers["content-length"]))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """A local OTLP/HTTP endpoint recording what it receives."""
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# A service process's tracing, as svckit.app.run does it: configure, one span, shut down.
SCRIPT = """
from svckit import tracing
tracing.configure("orders", tracing.TracingConfig.from_env())
with tracing.tracer().start_as_current_span("CreateOrder") as span:
    ids = tracing.current_ids()
    print(span.is_recording(), bool(ids[0]), tracing.current_traceparent() is not None)
tracing.shutdown()
"""


def run_service_tracing(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


def test_spans_go_to_the_traces_endpoint_over_http_named_by_otel_service_name(
    collector: str,
) -> None:
    seen = run_service_tracing(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{collector}/custom/traces",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="orders-eu",
    )
    assert seen == ["True", "True", "True"]
    [(path, body)] = _Collector.received
    assert path == "/custom/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in spans.resource.attributes}["service.name"]
    assert service == "orders-eu"
    assert [s.name for s in spans.scope_spans[0].spans] == ["CreateOrder"]


def test_without_an_endpoint_spans_are_dropped_but_keep_their_ids() -> None:
    # Not recording: no attributes kept, no processor called; the ids still reach the logs
    # and the events' traceparent.
    assert run_service_tracing() == ["False", "True", "True"]


def test_otel_sdk_disabled_records_and_sends_nothing(collector: str) -> None:
    seen = run_service_tracing(
        OTEL_SDK_DISABLED="true",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{collector}/v1/traces",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
    )
    assert seen == ["False", "False", "False"]
    assert _Collector.received == []

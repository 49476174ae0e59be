"""Issue 24, the hot path: what depends only on the method is done once per method, and a
span costs nothing recorded while nothing receives spans (docs/performance.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from svckit import auth, metrics, tracing
from svckit.interceptors import ServerInterceptor
from tests.support import accounts_served

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Accounts(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace.SpanContext] = []

    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        self.spans.append(trace.get_current_span().get_span_context())
        if request.customer_id == "slow":
            await asyncio.sleep(5)
        return accounts_pb2.Customer(id=request.customer_id)


@pytest.fixture
async def served() -> AsyncIterator[tuple[accounts_pb2_grpc.AccountsServiceStub, Accounts]]:
    accounts = Accounts()  # type: ignore[abstract]  # the generated base answers the rest
    async with accounts_served(accounts, ServerInterceptor("hot")) as channel:
        yield accounts_pb2_grpc.AccountsServiceStub(channel), accounts


async def test_a_method_is_wrapped_once_and_reused() -> None:
    interceptor = ServerInterceptor("hot")
    built: list[str] = []

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        built.append(details.method)
        return grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    class Details:
        method = "/storefront.accounts.v1.AccountsService/GetCustomer"
        invocation_metadata = ()

    first = await interceptor.intercept_service(continuation, Details())
    second = await interceptor.intercept_service(continuation, Details())
    assert first is second
    assert built == [Details.method]


async def test_metric_series_are_bound_once_per_method(
    served: tuple[accounts_pb2_grpc.AccountsServiceStub, Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub, _ = served
    await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id="c-0"))
    lookups: list[tuple[str, ...]] = []
    for metric in (metrics.GRPC_STARTED, metrics.GRPC_HANDLED, metrics.GRPC_HANDLING_SECONDS):
        original = metric.labels

        def counting(*labels: str, _original: Any = original) -> Any:
            lookups.append(labels)
            return _original(*labels)

        monkeypatch.setattr(metric, "labels", counting)
    before = metrics.GRPC_HANDLED.labels(
        "hot", "unary", "storefront.accounts.v1.AccountsService", "GetCustomer", "OK"
    )._value.get()
    lookups.clear()
    for i in range(5):
        await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=f"c-{i}"))
    assert lookups == []
    after = metrics.GRPC_HANDLED.labels(
        "hot", "unary", "storefront.accounts.v1.AccountsService", "GetCustomer", "OK"
    )._value.get()
    assert after - before == 5


async def test_without_an_exporter_no_sdk_span_is_built_yet_the_trace_goes_on(
    served: tuple[accounts_pb2_grpc.AccountsServiceStub, Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub, accounts = served
    tracing.provider("hot")
    monkeypatch.setattr(tracing, "_exporting", False)

    def no_tracer() -> trace.Tracer:
        raise AssertionError("an SDK span was built while nothing receives spans")

    monkeypatch.setattr(tracing, "tracer", no_tracer)
    await stub.GetCustomer(
        accounts_pb2.GetCustomerRequest(customer_id="c-1"), metadata=[("traceparent", CALLER)]
    )
    await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id="c-2"))
    joined, fresh = accounts.spans
    # The caller's trace goes on (logs and committed events carry its id), in a span of ours.
    assert f"{joined.trace_id:032x}" == TRACE_ID and f"{joined.span_id:016x}" != CALLER[36:52]
    assert not joined.trace_flags.sampled
    # Without a caller, a new trace: still ids, for the logs and the events.
    assert fresh.is_valid and f"{fresh.trace_id:032x}" != TRACE_ID


async def test_while_exporting_the_server_span_is_recorded(
    served: tuple[accounts_pb2_grpc.AccountsServiceStub, Accounts],
) -> None:
    stub, _ = served
    exporter = tracing.memory_exporter()
    exporter.clear()
    await stub.GetCustomer(
        accounts_pb2.GetCustomerRequest(customer_id="c-3"), metadata=[("traceparent", CALLER)]
    )
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert span.name == "storefront.accounts.v1.AccountsService/GetCustomer"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 0


async def test_a_call_past_its_deadline_is_counted_as_such(
    served: tuple[accounts_pb2_grpc.AccountsServiceStub, Accounts],
) -> None:
    stub, _ = served
    labels = ("hot", "unary", "storefront.accounts.v1.AccountsService", "GetCustomer")
    before = metrics.GRPC_HANDLED.labels(*labels, "DEADLINE_EXCEEDED")._value.get()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id="slow"), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(50):  # the server's side ends a moment after the caller's
        if metrics.GRPC_HANDLED.labels(*labels, "DEADLINE_EXCEEDED")._value.get() > before:
            break
        await asyncio.sleep(0.05)
    assert metrics.GRPC_HANDLED.labels(*labels, "DEADLINE_EXCEEDED")._value.get() == before + 1


def test_the_tracer_is_looked_up_once() -> None:
    assert tracing.tracer() is tracing.tracer()


def test_metadata_is_read_once_into_headers_for_the_token_and_the_trace() -> None:
    headers = auth.headers_of(
        [("Authorization", b"Bearer t.o.k"), ("traceparent", CALLER), ("x-b", "1")]
    )
    assert auth.bearer_token(headers) == "t.o.k"
    parent = tracing.context_from_metadata(headers)
    assert parent is not None
    assert f"{trace.get_current_span(parent).get_span_context().trace_id:032x}" == TRACE_ID
    assert tracing.context_from_metadata({"user-agent": "x"}) is None

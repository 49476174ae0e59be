"""One trace per business action, across services and Kafka: the RPC's SERVER span is
the parent of the CONSUMER span that applies the event it committed, in another service.

The three services run in-process here (one TracerProvider, one in-memory exporter), which
is why spans carry `storefront.service`: the resource alone cannot tell them apart.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from pymongo import MongoClient

import topology
from accounts_svc.main import build as build_accounts
from catalog_svc.main import build as build_catalog
from fulfillment_svc.main import build as build_fulfillment
from orders_svc.main import build as build_orders
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import accounts_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients
from storefront_cli.demo import PEOPLE, customer_draft, load_catalog, order_draft, place_order
from svckit import tracing
from svckit.app import ServiceApp
from svckit.settings import Settings
from tests.support import eventually, running, settings_for, tokens_of

pytestmark = pytest.mark.integration

BUILDERS: dict[str, Callable[[Settings], ServiceApp]] = {
    "accounts": build_accounts,
    "orders": build_orders,
    "fulfillment": build_fulfillment,
    "catalog": build_catalog,
}


@pytest.fixture
def databases(stack: EmbeddedStack) -> Iterator[dict[str, str]]:
    prefix = f"trace_{uuid.uuid4().hex[:10]}"
    names = {service: f"{prefix}_{service}" for service in BUILDERS}
    yield names
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        for name in names.values():
            client.drop_database(name)


@pytest.fixture
async def clients(stack: EmbeddedStack, databases: dict[str, str]) -> AsyncIterator[Clients]:
    tracing.memory_exporter()  # before the apps start, so every span is recorded
    async with contextlib.AsyncExitStack() as apps:
        started = {
            service: await apps.enter_async_context(
                running(build, settings_for(stack, service, databases[service]))
            )
            for service, build in BUILDERS.items()
        }
        c = Clients.connect(
            *(f"127.0.0.1:{started[s].bound_port}" for s in BUILDERS), tokens=tokens_of(stack)
        )
        try:
            yield c
        finally:
            await c.close()


def server_span(rpc: str, service: str) -> Callable[[], ReadableSpan | None]:
    """The newest finished SERVER span of `rpc` (Service/Method suffix) in `service`."""

    def find() -> ReadableSpan | None:
        found = [
            s
            for s in tracing.memory_exporter().get_finished_spans()
            if s.kind is SpanKind.SERVER
            and s.name.endswith(rpc)
            and (s.attributes or {}).get(tracing.SERVICE_ATTRIBUTE) == service
        ]
        return found[-1] if found else None

    return find


def applied_span(
    parent: ReadableSpan, service: str, topic: str, key: str
) -> Callable[[], ReadableSpan | None]:
    """The CONSUMER span in `service` that applied `key`'s event from `topic` under `parent`."""
    assert parent.context is not None

    def find() -> ReadableSpan | None:
        spans: Sequence[ReadableSpan] = tracing.memory_exporter().get_finished_spans()
        for s in spans:
            attrs = s.attributes or {}
            if (
                s.kind is SpanKind.CONSUMER
                and s.context is not None
                and s.context.trace_id == parent.context.trace_id
                and attrs.get(tracing.SERVICE_ATTRIBUTE) == service
                and attrs.get("messaging.destination.name") == topic
                and attrs.get("messaging.kafka.message.key") == key
            ):
                return s
        return None

    return find


async def wait_for(find: Callable[[], ReadableSpan | None], what: str) -> ReadableSpan:
    async def probe() -> ReadableSpan | None:
        return find()

    return await eventually(probe, timeout=60, what=what)


async def test_accounts_rpc_and_orders_apply_are_one_trace(clients: Clients) -> None:
    customer = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]))
    )
    rpc = await wait_for(server_span("/CreateCustomer", "accounts"), "CreateCustomer span")
    apply = await wait_for(
        applied_span(rpc, "orders", topology.CUSTOMER_CHANGES, customer.id),
        "orders' apply span in the same trace",
    )
    assert rpc.context is not None and apply.parent is not None
    assert apply.parent.span_id == rpc.context.span_id  # a direct child, across Kafka
    assert (apply.attributes or {}).get("storefront.outcome") == "applied"
    assert (rpc.attributes or {}).get("rpc.grpc.status_code") == grpc.StatusCode.OK.value[0]


async def test_each_database_command_is_a_client_span_of_the_rpc(clients: Clients) -> None:
    """pymongo's OpenTelemetry instrumentation with AsyncMongoClient (svckit.tracing
    .instrument_clients): GetCustomer's read is a CLIENT span, a child of the RPC's span."""
    customer = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[2]))
    )
    await clients.accounts.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id=customer.id))
    rpc = await wait_for(server_span("/GetCustomer", "accounts"), "GetCustomer span")
    assert rpc.context is not None
    reads = [
        s
        for s in tracing.memory_exporter().get_finished_spans()
        if s.kind is SpanKind.CLIENT
        and s.parent is not None
        and s.parent.span_id == rpc.context.span_id
    ]
    assert reads, "no database span under GetCustomer"
    attributes = [dict(s.attributes or {}) for s in reads]
    assert {a.get("db.system") for a in attributes} == {"mongodb"}
    assert topology.CUSTOMERS in {a.get("db.mongodb.collection") for a in attributes}
    assert all(s.context is not None and s.context.trace_id == rpc.context.trace_id for s in reads)
    # The statement is not recorded: filters hold customers' data.
    assert not any(customer.id in str(a.get("db.statement", "")) for a in attributes)


async def test_order_approval_and_shipping_steps_trace_into_the_other_service(
    clients: Clients,
) -> None:
    customer = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[1]))
    )
    get_copy = orders_pb2.GetCustomerOrdersRequest(customer_id=customer.id)
    await eventually(lambda: clients.orders.GetCustomerOrders(get_copy), what="customer copy")
    await load_catalog(clients, log=lambda _: None)
    order = await place_order(clients, customer.id, order_draft((0, 1)))
    oid = order.order_id
    await clients.orders.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=oid))
    approve = await wait_for(server_span("/ApproveOrder", "orders"), "ApproveOrder span")
    requested = await wait_for(
        applied_span(approve, "fulfillment", topology.ORDER_FULFILLMENT, oid),
        "fulfillment's apply span in the approval's trace",
    )
    assert requested.parent is not None and approve.context is not None
    assert requested.parent.span_id == approve.context.span_id

    await clients.fulfillment.ProcessFulfillment(
        fulfillment_pb2.ProcessFulfillmentRequest(order_id=oid)
    )
    step = await wait_for(
        server_span("/ProcessFulfillment", "fulfillment"), "ProcessFulfillment span"
    )
    status_changed = await wait_for(
        applied_span(step, "orders", topology.ORDER_STATUS, oid),
        "orders' apply span in the shipping step's trace",
    )
    assert status_changed.parent is not None and step.context is not None
    assert status_changed.parent.span_id == step.context.span_id

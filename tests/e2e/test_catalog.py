"""The catalog end to end, against the services as processes: orders priced by orders' copy of
the catalog whatever price a client sends (JSON through Envoy, gRPC, gRPC-Web), a price change
that reaches the copy and new orders only, the catalog's REST surface, and a consumer other
than fulfillment following an order's facts on orders.order.change from created to received."""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pymongo import AsyncMongoClient

import topology
from storefront.accounts.v1 import accounts_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import events_pb2 as orders_events
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft, place_order
from svckit.consumer import EventConsumer, Outcome
from svckit.envelope import Envelope
from svckit.kafka import EventProducer
from tests.e2e.test_flows import FULL_LIFECYCLE
from tests.support import System, issuer_of, unique

pytestmark = pytest.mark.e2e
Status = common_pb2.OrderStatus
CREATE_ORDER = "/storefront.orders.v1.OrdersService/CreateOrder"


async def a_product(c: Clients, units: int, nanos: int) -> catalog_pb2.Product:
    product = catalog_pb2.Product(title="Kettle", description="Boils water")
    product.price.currency_code, product.price.units, product.price.nanos = "USD", units, nanos
    return await c.catalog.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product, product_id=unique("kettle"))
    )


async def a_customer(c: Clients) -> str:
    created = await c.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]))
    )
    return created.id


async def copy_of(system: System, product_id: str, version: int) -> dict[str, Any] | None:
    """Orders' copy of a product once it is at `version` (read as `storefront check` does)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(system.stack.mongodb_uri)
    try:
        copies = client[system.database(topology.ORDERS)][topology.PRODUCT_COPIES]
        doc = await copies.find_one({"_id": product_id})
    finally:
        await client.close()
    return doc if doc is not None and doc["version"] >= version else None


def cheap_order(product_id: str) -> orders_pb2.Order:
    """One line at a client-sent price of 0.01, which orders must not store."""
    order = orders_pb2.Order()
    item = order.items.add(quantity=1)
    item.product.id, item.product.title = product_id, "a bargain"
    item.product.price.currency_code, item.product.price.nanos = "USD", 10_000_000
    return order


def post_json(system: System, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        system.envoy_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=20) as reply:
        return dict(json.loads(reply.read()))


def grpc_web(system: System, token: str, path: str, request: bytes) -> list[bytes]:
    """One unary gRPC-Web call through Envoy, framed as a browser's client library does; the
    reply's data frames (grpc-status must be 0)."""
    conn = http.client.HTTPConnection("127.0.0.1", system.ports.envoy, timeout=20)
    try:
        conn.request(
            "POST",
            path,
            body=b"\0" + len(request).to_bytes(4, "big") + request,
            headers={
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "authorization": f"Bearer {token}",
            },
        )
        reply = conn.getresponse()
        status, headers, body = reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()
    assert status == 200, (status, headers)
    frames, trailers, at = [], b"", 0
    while at < len(body):
        flag, size = body[at], int.from_bytes(body[at + 1 : at + 5], "big")
        frame = body[at + 5 : at + 5 + size]
        if flag & 0x80:
            trailers += frame
        else:
            frames.append(frame)
        at += 5 + size
    assert b"grpc-status:0" in trailers.replace(b" ", b"") or headers.get("grpc-status") == "0"
    return frames


async def test_a_client_price_is_never_stored_through_json_grpc_and_grpc_web(
    running_system: System, clients: Clients
) -> None:
    product = await a_product(clients, 12, 340_000_000)
    await eventually(lambda: copy_of(running_system, product.id, 1), what="orders' copy")
    cid = await a_customer(clients)
    token = issuer_of(running_system.stack).customer(cid)

    via_grpc = await place_order(clients, cid, cheap_order(product.id))
    request = orders_pb2.CreateOrderRequest(customer_id=cid, order=cheap_order(product.id))
    [frame] = await asyncio.to_thread(
        grpc_web, running_system, token, CREATE_ORDER, request.SerializeToString()
    )
    via_grpc_web = orders_pb2.Order.FromString(frame)
    body = {
        "items": [
            {
                "product": {
                    "id": product.id,
                    "title": "a bargain",
                    "price": {"currencyCode": "USD", "units": "0", "nanos": 10_000_000},
                },
                "quantity": 1,
            }
        ]
    }
    via_json = await asyncio.to_thread(
        post_json, running_system, token, f"/v1/customers/{cid}/orders", body
    )

    for order_id in (via_grpc.order_id, via_grpc_web.order_id, via_json["orderId"]):
        stored = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
        line = stored.items[0].product
        assert (line.title, line.price) == (product.title, product.price), order_id
        assert stored.total == product.price, order_id


async def test_a_price_change_reaches_orders_copy_and_new_orders_only(
    running_system: System, clients: Clients
) -> None:
    product = await a_product(clients, 5, 0)
    cid = await a_customer(clients)
    before = await place_order(clients, cid, cheap_order(product.id))
    patch = catalog_pb2.Product(id=product.id, etag=product.etag)
    patch.price.CopyFrom(product.price)
    patch.price.units = 6
    raised = await clients.catalog.UpdateProduct(
        catalog_pb2.UpdateProductRequest(
            product=patch, update_mask=field_mask_pb2.FieldMask(paths=["price"])
        )
    )
    copy = await eventually(lambda: copy_of(running_system, product.id, 2), what="copy v2")
    assert int(copy["price"]["units"]) == 6
    after = await place_order(clients, cid, cheap_order(product.id))
    assert (before.total.units, after.total.units) == (5, 6)
    kept = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=before.order_id))
    assert kept.total == before.total and raised.version == 2

    await clients.catalog.DiscontinueProduct(
        catalog_pb2.DiscontinueProductRequest(product_id=product.id)
    )
    await eventually(lambda: copy_of(running_system, product.id, 3), what="copy v3")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(customer_id=cid, order=cheap_order(product.id))
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "discontinued" in (refused.value.details() or "")


class FactFollower:
    """A consumer of orders' facts with a group of its own: what a reporting or notification
    service would be. It keeps, per order, the statuses in the order it saw them."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, int]]] = {}

    async def apply(self, envelope: Envelope) -> Outcome:
        fact = envelope.payload(orders_events.OrderChanged)
        self.seen.setdefault(fact.order_id, []).append((fact.version, fact.status))
        return Outcome.APPLIED


@pytest.fixture
async def follower(running_system: System) -> AsyncIterator[FactFollower]:
    kafka = running_system.stack.kafka
    follower = FactFollower()
    producer = EventProducer(kafka, "fact-follower")
    consumer = EventConsumer(
        kafka=kafka,
        group_id=unique("fact-follower"),
        topics=[topology.ORDER_CHANGES],
        handlers={orders_events.OrderChanged.DESCRIPTOR.full_name: follower.apply},
        producer=producer,
        service="fact-follower",
    )
    await producer.start()
    await consumer.start()
    try:
        yield follower
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_consumer_other_than_fulfillment_follows_an_order_to_received(
    clients: Clients, follower: FactFollower
) -> None:
    cid = await a_customer(clients)
    order = await place_order(clients, cid, cheap_order("sku-100"))
    oid = order.order_id
    await clients.orders.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=oid))
    get = fulfillment_pb2.GetFulfillmentRequest(order_id=oid)
    await eventually(lambda: clients.fulfillment.GetFulfillment(get), what="fulfillment")
    f = clients.fulfillment
    await f.ProcessFulfillment(fulfillment_pb2.ProcessFulfillmentRequest(order_id=oid))
    await f.ShipFulfillment(fulfillment_pb2.ShipFulfillmentRequest(order_id=oid))
    await f.MarkFulfillmentInTransit(fulfillment_pb2.MarkFulfillmentInTransitRequest(order_id=oid))
    await f.ConfirmFulfillmentReceived(
        fulfillment_pb2.ConfirmFulfillmentReceivedRequest(order_id=oid)
    )

    async def received() -> list[tuple[int, int]] | None:
        seen = follower.seen.get(oid, [])
        return seen if Status.ORDER_STATUS_RECEIVED in {s for _, s in seen} else None

    seen = await eventually(received, timeout=60, what="the follower to see RECEIVED")
    assert [status for _, status in seen] == FULL_LIFECYCLE
    assert [version for version, _ in seen] == list(range(1, 7))

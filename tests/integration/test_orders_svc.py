"""orders_svc against the real broker and database: accounts', catalog's and fulfillment's
events in, FulfillmentRequested and the order facts out. Events are produced here as the
owning services would produce them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf import json_format

import topology
from orders_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.catalog.v1 import catalog_pb2
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from storefront_cli.clients import channel
from svckit import names
from svckit.app import ServiceApp
from svckit.envelope import Envelope, encode
from tests.support import eventually, read_topic, running, settings_for, tokens_of, unique

pytestmark = pytest.mark.integration
Status = common_pb2.OrderStatus


@pytest.fixture
async def orders(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[ServiceApp]:
    async with running(build, settings_for(stack, "orders", mongo_db_name)) as app:
        yield app


@pytest.fixture
async def stub(
    stack: EmbeddedStack, orders: ServiceApp
) -> AsyncIterator[orders_pb2_grpc.OrdersServiceStub]:
    async with channel(f"127.0.0.1:{orders.bound_port}", tokens_of(stack)) as channel_:
        yield orders_pb2_grpc.OrdersServiceStub(channel_)


@pytest.fixture
async def producer(stack: EmbeddedStack) -> AsyncIterator[AIOKafkaProducer]:
    p = stack.kafka.producer(acks="all")
    await p.start()
    yield p
    await p.stop()


def customer_changed(customer_id: str, version: int, email: str) -> accounts_events.CustomerChanged:
    body = {
        "customerId": customer_id,
        "version": version,
        "name": {"firstName": "Ann", "lastName": "Lee"},
        "contact": {"primaryPhone": "555-123-4567", "email": email},
        "addresses": [
            {
                "type": "ADDRESS_TYPE_SHIPPING",
                "address1": "1 Main St",
                "city": "Austin",
                "state": "TX",
                "postalCode": "73301",
            }
        ],
    }
    return json_format.ParseDict(body, accounts_events.CustomerChanged())


async def publish(
    producer: AIOKafkaProducer, topic: str, key: str, message: object, source: str
) -> None:
    value, headers = encode(message, source=source, key=key)  # type: ignore[arg-type]
    await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)


async def copy_email(stub: orders_pb2_grpc.OrdersServiceStub, cid: str, version: int) -> str | None:
    copy = await stub.GetCustomerOrders(orders_pb2.GetCustomerOrdersRequest(customer_id=cid))
    return copy.contact.email if copy.customer_version == version else None


def product_changed(sku: str, version: int, units: int) -> catalog_events.ProductChanged:
    event = catalog_events.ProductChanged(
        product_id=sku, version=version, title="Mug", state=catalog_pb2.PRODUCT_STATE_ACTIVE
    )
    event.price.currency_code, event.price.units = "USD", units
    return event


@pytest.fixture
async def mug(producer: AIOKafkaProducer) -> str:
    """A product of this test's own, as catalog states it: a mug at 7 USD."""
    sku = unique("mug")
    await publish(
        producer,
        topology.PRODUCT_CHANGES,
        sku,
        product_changed(sku, 1, 7),
        names.source(topology.CATALOG),
    )
    return sku


def an_order(sku: str = "mug") -> orders_pb2.Order:
    """Product id and quantity, as a client sends them, plus a price orders must ignore."""
    order = orders_pb2.Order()
    item = order.items.add(quantity=2)
    item.product.id = sku
    item.product.price.currency_code, item.product.price.nanos = "USD", 10_000_000
    return order


async def test_customer_copy_only_moves_forward(
    orders: ServiceApp, stub: orders_pb2_grpc.OrdersServiceStub, producer: AIOKafkaProducer
) -> None:
    cid = unique("cust")
    topic, src = topology.CUSTOMER_CHANGES, names.source(topology.ACCOUNTS)
    await publish(producer, topic, cid, customer_changed(cid, 2, "v2@example.com"), src)
    assert await eventually(lambda: copy_email(stub, cid, 2), what="copy v2") == "v2@example.com"
    # An older version arriving late, then a duplicate of v2, then v3.
    await publish(producer, topic, cid, customer_changed(cid, 1, "v1@example.com"), src)
    await publish(producer, topic, cid, customer_changed(cid, 2, "v2@example.com"), src)
    await publish(producer, topic, cid, customer_changed(cid, 3, "v3@example.com"), src)
    assert await eventually(lambda: copy_email(stub, cid, 3), what="copy v3") == "v3@example.com"
    deleted = accounts_events.CustomerDeleted(customer_id=cid, version=4)
    await publish(producer, topic, cid, deleted, src)

    async def gone() -> bool | None:
        try:
            await stub.GetCustomerOrders(orders_pb2.GetCustomerOrdersRequest(customer_id=cid))
            return None
        except grpc.aio.AioRpcError as exc:
            return True if exc.code() == grpc.StatusCode.NOT_FOUND else None

    await eventually(gone, what="copy deleted")
    # A late CustomerChanged must not resurrect a deleted customer.
    await publish(producer, topic, cid, customer_changed(cid, 3, "v3@example.com"), src)
    marker = unique("cust")
    await publish(producer, topic, marker, customer_changed(marker, 1, "m@example.com"), src)
    await eventually(lambda: copy_email(stub, marker, 1), what="marker applied")
    tombstone = await orders.db[topology.CUSTOMER_COPIES].find_one({"_id": cid})
    assert tombstone is not None and tombstone["deleted"] is True


async def test_order_lifecycle_emits_fulfillment_and_applies_status_once(
    stack: EmbeddedStack,
    orders: ServiceApp,
    stub: orders_pb2_grpc.OrdersServiceStub,
    producer: AIOKafkaProducer,
    mug: str,
) -> None:
    cid = unique("cust")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOrder(orders_pb2.CreateOrderRequest(customer_id=cid, order=an_order()))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await publish(
        producer,
        topology.CUSTOMER_CHANGES,
        cid,
        customer_changed(cid, 1, "a@example.com"),
        names.source(topology.ACCOUNTS),
    )
    await eventually(lambda: copy_email(stub, cid, 1), what="copy")
    order = await place(stub, cid, mug)
    assert (order.status, order.total.units, order.total.nanos) == (
        Status.ORDER_STATUS_CREATED,
        14,
        0,
    )
    assert order.items[0].product.title == "Mug"
    approved = await stub.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
    assert approved.status == Status.ORDER_STATUS_APPROVED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RejectOrder(orders_pb2.RejectOrderRequest(order_id=order.order_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def requested() -> list[Envelope] | None:
        found = await read_topic(
            stack.kafka,
            topology.ORDER_FULFILLMENT,
            ["storefront.orders.v1.FulfillmentRequested"],
            key=order.order_id,
        )
        return found or None

    [event] = await eventually(requested, what="FulfillmentRequested")
    assert event.message.shipping_address.city == "Austin"
    assert event.message.name.first_name == "Ann"

    changed = fulfillment_events.OrderStatusChanged(
        order_id=order.order_id, version=2, status=Status.ORDER_STATUS_PROCESSING, note="picking"
    )
    changed.change_time.FromDatetime(datetime.now(UTC))
    for _ in range(3):  # redelivered: must appear once
        await publish(
            producer,
            topology.ORDER_STATUS,
            order.order_id,
            changed,
            names.source(topology.FULFILLMENT),
        )

    async def processing() -> orders_pb2.Order | None:
        got = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order.order_id))
        return got if got.status == Status.ORDER_STATUS_PROCESSING else None

    await eventually(processing, what="PROCESSING applied")
    marker = unique("cust")
    await publish(
        producer,
        topology.CUSTOMER_CHANGES,
        marker,
        customer_changed(marker, 1, "m@example.com"),
        names.source(topology.ACCOUNTS),
    )
    await eventually(lambda: copy_email(stub, marker, 1), what="later event applied")
    final = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order.order_id))
    assert [e.status for e in final.status_events] == [
        Status.ORDER_STATUS_CREATED,
        Status.ORDER_STATUS_APPROVED,
        Status.ORDER_STATUS_PROCESSING,
    ]
    by_status = await stub.ListOrders(
        orders_pb2.ListOrdersRequest(customer_id=cid, status=Status.ORDER_STATUS_PROCESSING)
    )
    assert [o.order_id for o in by_status.orders] == [order.order_id]


async def test_cancel_after_approval_requests_fulfillment_cancellation(
    stack: EmbeddedStack,
    stub: orders_pb2_grpc.OrdersServiceStub,
    producer: AIOKafkaProducer,
    mug: str,
) -> None:
    cid = await known_customer(stub, producer)
    order = await place(stub, cid, mug)
    await stub.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
    cancelled = await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=order.order_id, reason="oops")
    )
    assert cancelled.status == Status.ORDER_STATUS_CANCELLED

    async def both() -> list[Envelope] | None:
        found = await read_topic(
            stack.kafka,
            topology.ORDER_FULFILLMENT,
            [
                "storefront.orders.v1.FulfillmentRequested",
                "storefront.orders.v1.FulfillmentCancelled",
            ],
            key=order.order_id,
        )
        return found if len(found) == 2 else None

    events = await eventually(both, what="requested + cancelled")
    assert [e.type.rsplit(".", 1)[1] for e in events] == [
        "FulfillmentRequested",
        "FulfillmentCancelled",
    ]


async def test_bad_order_is_rejected_and_nothing_stored(
    orders: ServiceApp, stub: orders_pb2_grpc.OrdersServiceStub
) -> None:
    bad = an_order()
    bad.items[0].quantity = 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOrder(orders_pb2.CreateOrderRequest(customer_id="c", order=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await orders.db[topology.ORDER_DOCUMENTS].count_documents({}) == 0


async def known_customer(
    stub: orders_pb2_grpc.OrdersServiceStub, producer: AIOKafkaProducer
) -> str:
    """A customer accounts announced and orders has copied."""
    cid = unique("cust")
    changed = customer_changed(cid, 1, "a@example.com")
    await publish(producer, topology.CUSTOMER_CHANGES, cid, changed, names.source(topology.ACCOUNTS))
    await eventually(lambda: copy_email(stub, cid, 1), what="copy")
    return cid


async def place(stub: orders_pb2_grpc.OrdersServiceStub, cid: str, sku: str) -> orders_pb2.Order:
    """CreateOrder once orders' copy of the catalog has the product (FAILED_PRECONDITION
    until then), under one order id so a retry never places it twice."""
    request = orders_pb2.CreateOrderRequest(
        customer_id=cid, order=an_order(sku), order_id=unique("order")
    )
    return await eventually(lambda: stub.CreateOrder(request), what="catalog copy")


async def test_the_catalog_copy_prices_new_orders_only_and_refuses_what_it_lacks(
    stack: EmbeddedStack,
    orders: ServiceApp,
    stub: orders_pb2_grpc.OrdersServiceStub,
    producer: AIOKafkaProducer,
    mug: str,
) -> None:
    cid = await known_customer(stub, producer)
    src = names.source(topology.CATALOG)
    first = await place(stub, cid, mug)
    sku = unique("lamp")
    for version, units in ((2, 30), (1, 20), (2, 30)):  # late and duplicate: no effect
        await publish(
            producer, topology.PRODUCT_CHANGES, sku, product_changed(sku, version, units), src
        )
    await publish(producer, topology.PRODUCT_CHANGES, mug, product_changed(mug, 2, 9), src)

    async def repriced() -> orders_pb2.Order | None:
        order = await place(stub, cid, mug)
        return order if order.total.units == 18 else None

    second = await eventually(repriced, what="the new price in orders' copy")
    assert second.total.units == 18
    kept = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=first.order_id))
    assert (kept.total.units, kept.items[0].product.price.units) == (14, 7)
    copy = await orders.db[topology.PRODUCT_COPIES].find_one({"_id": sku})
    assert copy is not None and copy["version"] == 2
    unknown = an_order()
    unknown.items[0].product.id = "no-such-product"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOrder(orders_pb2.CreateOrderRequest(customer_id=cid, order=unknown))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "order.items[0].product.id" in str(err.value.trailing_metadata())


async def test_each_change_of_an_order_is_a_fact_on_its_topic(
    stack: EmbeddedStack,
    stub: orders_pb2_grpc.OrdersServiceStub,
    producer: AIOKafkaProducer,
    mug: str,
) -> None:
    cid = await known_customer(stub, producer)
    order = await place(stub, cid, mug)
    await stub.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
    await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order.order_id, reason="no"))

    async def facts() -> list[Envelope] | None:
        found = await read_topic(
            stack.kafka,
            topology.ORDER_CHANGES,
            ["storefront.orders.v1.OrderChanged"],
            key=order.order_id,
        )
        return found if len(found) >= 3 else None

    events = await eventually(facts, what="three facts")
    assert [(e.message.version, e.message.status) for e in events] == [
        (1, Status.ORDER_STATUS_CREATED),
        (2, Status.ORDER_STATUS_APPROVED),
        (3, Status.ORDER_STATUS_CANCELLED),
    ]
    assert all(e.source == names.source(topology.ORDERS) for e in events)
    assert events[-1].message.order.total.units == 14

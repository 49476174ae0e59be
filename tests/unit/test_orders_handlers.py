"""OrdersHandlers with in-memory fakes (tests/unit/fakes.py): the order RPCs, pricing from the
catalog's copy, the facts every change states, the customer and product copies and status
changes orders consumes, and the repair it owns; no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

import topology
from orders_svc import domain
from orders_svc.handlers import OrdersHandlers
from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.catalog.v1 import catalog_pb2
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import events_pb2 as orders_events
from storefront_cli.demo import PRODUCTS, catalog_copy, order_draft
from svckit import names
from svckit.consumer import Outcome
from svckit.envelope import Envelope, decode, encode
from svckit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.unit.fakes import FakeCatalog, FakeCopies, FakeOrders, RecordingNotifier

NOW = datetime(2026, 5, 1, tzinfo=UTC)
Status = domain.Status
TO_FULFILLMENT = [
    orders_events.FulfillmentRequested.DESCRIPTOR.full_name,
    orders_events.FulfillmentCancelled.DESCRIPTOR.full_name,
]
FACTS = [orders_events.OrderChanged.DESCRIPTOR.full_name]
World = tuple[OrdersHandlers, FakeOrders, FakeCopies, RecordingNotifier]


def envelope(event: Message, source: str) -> Envelope:
    key = getattr(event, "customer_id", "") or getattr(event, "order_id", "")
    value, headers = encode(event, source=source, key=key)
    return decode(value, headers, key=key.encode(), accepted_types=[event.DESCRIPTOR.full_name])


def changed(customer_id: str, version: int, city: str = "Austin") -> Envelope:
    event = json_format.ParseDict(
        {
            "customerId": customer_id,
            "version": version,
            "name": {"firstName": "Ann", "lastName": "Lee"},
            "contact": {"primaryPhone": "555-123-4567", "email": "ann@example.com"},
            "addresses": [
                {
                    "type": "ADDRESS_TYPE_SHIPPING",
                    "address1": "1 Main St",
                    "city": city,
                    "state": "TX",
                    "postalCode": "73301",
                }
            ],
        },
        accounts_events.CustomerChanged(),
    )
    return envelope(event, names.source(topology.ACCOUNTS))


def deleted(customer_id: str, version: int) -> Envelope:
    event = accounts_events.CustomerDeleted(customer_id=customer_id, version=version)
    return envelope(event, names.source(topology.ACCOUNTS))


def status_changed(order_id: str, version: int, status: int) -> Envelope:
    event = fulfillment_events.OrderStatusChanged(
        order_id=order_id, version=version, status=Status.ValueType(status)
    )
    event.change_time.FromDatetime(NOW)
    return envelope(event, names.source(topology.FULFILLMENT))


@pytest.fixture
async def world() -> World:
    orders, copies, relay = FakeOrders(), FakeCopies(), RecordingNotifier()
    handlers = OrdersHandlers(orders, copies, FakeCatalog(catalog_copy()), relay, clock=lambda: NOW)
    assert await handlers.apply_customer_changed(changed("c-1", 1)) == Outcome.APPLIED
    return handlers, orders, copies, relay


async def placed(handlers: OrdersHandlers, order_id: str = "o-1") -> str:
    order = await handlers.create_order("c-1", order_draft((0, 1)), order_id)
    return order.order_id


async def test_an_order_for_a_customer_orders_does_not_know_is_refused(world: World) -> None:
    handlers, orders, _, _ = world
    with pytest.raises(FailedPrecondition):
        await handlers.create_order("c-unknown", order_draft((0, 1)), "o-x")
    assert orders.state == {}


async def test_a_chosen_order_id_is_scoped_to_its_customer(world: World) -> None:
    """Issue 25, finding 8: ids were global, so a customer could take an id another would
    choose, and learn from ALREADY_EXISTS which ids another had used."""
    handlers, orders, _, _ = world
    assert await handlers.apply_customer_changed(changed("c-2", 1)) == Outcome.APPLIED
    theirs = await handlers.create_order("c-2", order_draft((0, 1)), "o-1")
    mine = await handlers.create_order("c-1", order_draft((1, 1)), "o-1")
    assert (theirs.order_id, mine.order_id) == ("c-2.o-1", "c-1.o-1")
    with pytest.raises(AlreadyExists, match="c-1.o-1"):  # a retry of one's own create
        await handlers.create_order("c-1", order_draft((1, 1)), "o-1")
    assert set(orders.state) == {"c-2.o-1", "c-1.o-1"}
    # nor can a chosen id reach into another's: "c-2.o-2" is refused at the entrypoint
    # (tests/unit/test_request_shape.py)


async def test_approval_queues_the_request_with_what_fulfillment_needs(world: World) -> None:
    handlers, orders, _, relay = world
    oid = await placed(handlers)
    approved = await handlers.approve_order(oid, note="ok")
    assert approved.status == Status.ORDER_STATUS_APPROVED
    [request] = [e.message for e in orders.events(oid, TO_FULFILLMENT)]
    assert isinstance(request, orders_events.FulfillmentRequested)
    assert (request.version, request.name.first_name) == (approved.version, "Ann")
    assert request.shipping_address.city == "Austin"
    assert relay.notified == [oid, oid]  # placed, approved


async def test_a_cancellation_tells_fulfillment_only_once_it_was_asked(world: World) -> None:
    handlers, orders, _, _ = world
    before = await placed(handlers, "o-1")
    await handlers.cancel_order(before, reason="changed mind")
    assert orders.events(before, TO_FULFILLMENT) == []  # fulfillment never heard of it
    after = await placed(handlers, "o-2")
    await handlers.approve_order(after)
    await handlers.cancel_order(after, reason="changed mind")
    kinds = [type(e.message).__name__ for e in orders.events(after, TO_FULFILLMENT)]
    assert kinds == ["FulfillmentRequested", "FulfillmentCancelled"]


async def test_an_illegal_transition_stores_nothing(world: World) -> None:
    handlers, orders, _, relay = world
    oid = await placed(handlers)
    await handlers.reject_order(oid, reason="out of stock")
    version, queued = orders.state[oid].version, len(orders.outbox[oid])
    relay.notified.clear()
    with pytest.raises(FailedPrecondition):
        await handlers.approve_order(oid)
    assert orders.state[oid].version == version and len(orders.outbox[oid]) == queued
    assert relay.notified == []
    with pytest.raises(NotFound):
        await handlers.approve_order("no-such-order")


async def test_a_command_that_loses_a_race_is_decided_again(world: World) -> None:
    handlers, orders, _, _ = world
    oid = await placed(handlers)
    orders.lose_next = 3
    approved = await handlers.approve_order(oid)
    assert approved.status == Status.ORDER_STATUS_APPROVED and orders.lose_next == 0
    assert len(orders.events(oid, TO_FULFILLMENT)) == 1  # one request, not one per attempt
    assert [e.message.version for e in orders.events(oid, FACTS)] == [1, 2]


async def test_copies_move_only_forward_and_deletions_stay(world: World) -> None:
    handlers, _, copies, _ = world
    assert await handlers.apply_customer_changed(changed("c-1", 1)) == Outcome.DUPLICATE
    assert await handlers.apply_customer_changed(changed("c-1", 3, "Dallas")) == Outcome.APPLIED
    assert await handlers.apply_customer_changed(changed("c-1", 2, "Waco")) == Outcome.STALE
    copy = await copies.get("c-1")
    assert copy is not None and copy.addresses[0].city == "Dallas"
    assert await handlers.apply_customer_deleted(deleted("c-1", 4)) == Outcome.APPLIED
    assert await handlers.apply_customer_changed(changed("c-1", 3)) == Outcome.STALE
    assert await copies.get("c-1") is None


async def test_a_batch_of_customer_events_has_the_outcomes_of_one_by_one(world: World) -> None:
    handlers, _, _, _ = world
    run = [changed("c-2", 1), changed("c-2", 2), changed("c-2", 1), deleted("c-3", 5)]
    outcomes = await handlers.apply_customer_events(run)
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.STALE, Outcome.APPLIED]


async def test_a_status_change_is_applied_once_and_one_for_an_unknown_order_ignored(
    world: World,
) -> None:
    handlers, orders, _, _ = world
    oid = await placed(handlers)
    await handlers.approve_order(oid)
    processing = status_changed(oid, 2, Status.ORDER_STATUS_PROCESSING)
    assert await handlers.apply_order_status_changed(processing) == Outcome.APPLIED
    assert await handlers.apply_order_status_changed(processing) == Outcome.DUPLICATE
    order = await handlers.get_order(oid)
    assert order.status == Status.ORDER_STATUS_PROCESSING
    assert orders.applied[oid] == [2]
    unknown = status_changed("o-none", 2, Status.ORDER_STATUS_PROCESSING)
    assert await handlers.apply_order_status_changed(unknown) == Outcome.IGNORED


async def test_republish_sends_what_each_order_status_means_for_fulfillment(world: World) -> None:
    handlers, orders, _, relay = world
    approved, cancelled, created = [await placed(handlers, f"o-{i}") for i in range(3)]
    await handlers.approve_order(approved)
    await handlers.approve_order(cancelled)
    await handlers.cancel_order(cancelled)
    for oid in orders.outbox:
        orders.outbox[oid].clear()  # all published
    relay.notified.clear()
    done = await handlers.republish([approved, cancelled, created, "o-none"])
    assert done.queued == [approved, cancelled, created]  # the facts of each, at least
    assert done.not_found == ["o-none"]
    assert orders.events(created, TO_FULFILLMENT) == []
    resent = {
        oid: [type(e.message).__name__ for e in orders.events(oid, TO_FULFILLMENT)]
        for oid in (approved, cancelled)
    }
    assert resent == {approved: ["FulfillmentRequested"], cancelled: ["FulfillmentCancelled"]}
    assert relay.notified == [approved, cancelled, created]
    facts = {oid: [e.message.status for e in orders.events(oid, FACTS)] for oid in done.queued}
    assert facts == {
        approved: [Status.ORDER_STATUS_APPROVED],
        cancelled: [Status.ORDER_STATUS_CANCELLED],
        created: [Status.ORDER_STATUS_CREATED],
    }


async def test_forget_drops_what_each_consumed_topic_built(world: World) -> None:
    handlers, _, copies, _ = world
    assert await handlers.forget(topology.CUSTOMER_CHANGES) == 1 and copies.copies == {}
    with pytest.raises(ValueError):
        await handlers.forget(topology.ORDER_FULFILLMENT)


# --- pricing from orders' copy of the catalog ------------------------------------------------


def product_changed(
    sku: str,
    version: int,
    units: int,
    state: catalog_pb2.ProductState.ValueType = catalog_pb2.PRODUCT_STATE_ACTIVE,
) -> Envelope:
    event = catalog_events.ProductChanged(
        product_id=sku, version=version, title=f"title {version}", state=state
    )
    event.price.currency_code, event.price.units = "USD", units
    return envelope(event, names.source(topology.CATALOG))


async def test_an_order_is_priced_from_the_catalog_and_a_client_price_ignored(
    world: World,
) -> None:
    handlers, orders, _, _ = world
    draft = order_draft((0, 2))
    draft.items[0].product.title = "cheap"
    draft.items[0].product.price.currency_code = "USD"
    draft.items[0].product.price.nanos = 10_000_000  # 0.01
    order = await handlers.create_order("c-1", draft, "o-1")
    sku, title, units, nanos = PRODUCTS[0]
    line = orders.state[order.order_id].items[0]
    assert (line.product.id, line.product.title) == (sku, title)
    assert (line.product.price.units, line.product.price.nanos) == (units, nanos)
    assert (order.total.units, order.total.nanos) == (2 * units + 1, 2 * nanos - 10**9)


async def test_a_later_price_change_prices_new_orders_only(world: World) -> None:
    handlers, orders, _, _ = world
    sku = PRODUCTS[1][0]
    first = await handlers.create_order("c-1", order_draft((1, 1)), "o-1")
    assert await handlers.apply_product_changed(product_changed(sku, 2, 100)) == Outcome.APPLIED
    assert await handlers.apply_product_changed(product_changed(sku, 1, 5)) == Outcome.STALE
    second = await handlers.create_order("c-1", order_draft((1, 1)), "o-2")
    assert (second.total.units, second.items[0].product.title) == (100, "title 2")
    assert orders.state[first.order_id].total == first.total and first.total.units == PRODUCTS[1][2]


async def test_unknown_and_discontinued_products_are_refused_naming_their_lines(
    world: World,
) -> None:
    handlers, orders, _, _ = world
    discontinued = catalog_pb2.PRODUCT_STATE_DISCONTINUED
    assert (
        await handlers.apply_product_changed(product_changed(PRODUCTS[2][0], 2, 24, discontinued))
        == Outcome.APPLIED
    )
    draft = order_draft((0, 1), (2, 1))
    draft.items.add(quantity=1).product.id = "sku-none"
    with pytest.raises(FailedPrecondition) as refused:
        await handlers.create_order("c-1", draft, "o-1")
    lines = [refused.value.subject, *(m.field for m in refused.value.more)]
    assert lines == ["order.items[1].product.id", "order.items[2].product.id"]
    assert "discontinued" in refused.value.message
    assert orders.state == {}
    with pytest.raises(InvalidArgument) as bad:
        await handlers.create_order("c-1", orders_pb2_order_without_product(), "o-2")
    assert [v.field for v in bad.value.violations] == ["order.items[0].product.id"]


def orders_pb2_order_without_product() -> domain.Order:
    order = domain.Order()
    order.items.add(quantity=1)
    return order


async def test_every_change_of_an_order_states_its_new_state_as_a_fact(world: World) -> None:
    handlers, orders, _, _ = world
    oid = await placed(handlers)
    await handlers.approve_order(oid)
    await handlers.apply_order_status_changed(
        status_changed(oid, 2, Status.ORDER_STATUS_PROCESSING)
    )
    await handlers.cancel_order(oid, reason="changed mind")
    facts = [e.message for e in orders.events(oid, FACTS)]
    assert [(f.version, f.status) for f in facts] == [
        (1, Status.ORDER_STATUS_CREATED),
        (2, Status.ORDER_STATUS_APPROVED),
        (3, Status.ORDER_STATUS_PROCESSING),
        (4, Status.ORDER_STATUS_CANCELLED),
    ]
    assert all(f.order_id == oid and f.customer_id == "c-1" for f in facts)
    assert facts[-1].order == orders.state[oid]
    assert {e.key for e in orders.events(oid, FACTS)} == {oid}


async def test_forget_the_catalog_copy_before_a_rebuild(world: World) -> None:
    handlers, _, _, _ = world
    assert await handlers.forget(topology.PRODUCT_CHANGES) == len(PRODUCTS)
    with pytest.raises(FailedPrecondition):
        await handlers.create_order("c-1", order_draft((0, 1)), "o-1")

"""FulfillmentHandlers with in-memory fakes (tests/unit/fakes.py): each use case, its stored
state, the events it queues and the relay it wakes; no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import topology
from fulfillment_svc import domain
from fulfillment_svc.handlers import FulfillmentHandlers
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from storefront.orders.v1 import events_pb2 as orders_events
from svckit import names
from svckit.consumer import Outcome
from svckit.envelope import Envelope, decode, encode
from svckit.errors import FailedPrecondition, NotFound, Unavailable
from tests.unit.fakes import FakeFulfillments, RecordingNotifier

NOW = datetime(2026, 5, 1, tzinfo=UTC)
STATUS_CHANGED = [fulfillment_events.OrderStatusChanged.DESCRIPTOR.full_name]


def envelope(
    event: orders_events.FulfillmentRequested | orders_events.FulfillmentCancelled,
) -> Envelope:
    value, headers = encode(event, source=names.source(topology.ORDERS), key=event.order_id)
    accepted = [type(event).DESCRIPTOR.full_name]
    return decode(value, headers, key=event.order_id.encode(), accepted_types=accepted)


def requested(order_id: str = "o-1") -> orders_events.FulfillmentRequested:
    event = orders_events.FulfillmentRequested(order_id=order_id, version=2, customer_id="c-1")
    event.items.add(quantity=1).product.id = "sku-1"
    event.approve_time.FromDatetime(NOW)
    return event


def cancelled(order_id: str = "o-1") -> orders_events.FulfillmentCancelled:
    event = orders_events.FulfillmentCancelled(order_id=order_id, version=3, reason="changed mind")
    event.cancel_time.FromDatetime(NOW)
    return event


World = tuple[FulfillmentHandlers, FakeFulfillments, RecordingNotifier]


@pytest.fixture
def world() -> World:
    store, relay = FakeFulfillments(), RecordingNotifier()
    return FulfillmentHandlers(store, relay, clock=lambda: NOW), store, relay


async def test_a_request_creates_one_fulfillment_and_a_redelivery_is_a_duplicate(
    world: World,
) -> None:
    handlers, store, relay = world
    assert await handlers.apply_fulfillment_requested(envelope(requested())) == Outcome.APPLIED
    assert await handlers.apply_fulfillment_requested(envelope(requested())) == Outcome.DUPLICATE
    stored = await handlers.get_fulfillment("o-1")
    assert (stored.status, stored.version) == (domain.APPROVED, 1)
    assert store.outbox["o-1"] == [] and relay.notified == []  # orders knows it is APPROVED


async def test_each_step_stores_the_transition_and_queues_its_status_change(world: World) -> None:
    handlers, store, relay = world
    await handlers.apply_fulfillment_requested(envelope(requested()))
    await handlers.process_fulfillment("o-1", note="picked")
    await handlers.ship_fulfillment("o-1")
    shipped = await handlers.get_fulfillment("o-1")
    assert (shipped.status, shipped.version) == (domain.SHIPPED, 3)
    changes = [e.message for e in store.events("o-1", STATUS_CHANGED)]
    assert [(c.status, c.version) for c in changes] == [(domain.PROCESSING, 2), (domain.SHIPPED, 3)]
    assert changes[0].note == "picked"
    assert relay.notified == ["o-1", "o-1"]


async def test_an_illegal_step_stores_nothing(world: World) -> None:
    handlers, store, relay = world
    await handlers.apply_fulfillment_requested(envelope(requested()))
    with pytest.raises(FailedPrecondition):
        await handlers.ship_fulfillment("o-1")  # APPROVED cannot jump to SHIPPED
    assert (await handlers.get_fulfillment("o-1")).version == 1
    assert store.outbox["o-1"] == [] and relay.notified == []
    with pytest.raises(NotFound):
        await handlers.process_fulfillment("no-such-order")


async def test_a_step_that_loses_a_race_is_decided_again_on_the_new_state(world: World) -> None:
    handlers, store, _ = world
    await handlers.apply_fulfillment_requested(envelope(requested()))
    store.lose_next = 2
    processed = await handlers.process_fulfillment("o-1")
    assert processed.status == domain.PROCESSING and store.lose_next == 0


async def test_a_cancellation_before_the_request_leaves_a_tombstone_the_request_hits(
    world: World,
) -> None:
    handlers, _, _ = world
    assert await handlers.apply_fulfillment_cancelled(envelope(cancelled())) == Outcome.APPLIED
    assert await handlers.apply_fulfillment_requested(envelope(requested())) == Outcome.DUPLICATE
    assert (await handlers.get_fulfillment("o-1")).status == domain.CANCELLED


async def test_a_cancellation_stops_an_unshipped_fulfillment_and_not_a_shipped_one(
    world: World,
) -> None:
    handlers, _, _ = world
    for order_id in ("o-1", "o-2"):
        await handlers.apply_fulfillment_requested(envelope(requested(order_id)))
    await handlers.process_fulfillment("o-2")
    await handlers.ship_fulfillment("o-2")
    assert await handlers.apply_fulfillment_cancelled(envelope(cancelled("o-1"))) == Outcome.APPLIED
    assert (
        await handlers.apply_fulfillment_cancelled(envelope(cancelled("o-1"))) == Outcome.DUPLICATE
    )
    assert await handlers.apply_fulfillment_cancelled(envelope(cancelled("o-2"))) == Outcome.IGNORED
    assert (await handlers.get_fulfillment("o-2")).status == domain.SHIPPED


async def test_republish_queues_every_published_change_again_and_reports_the_rest(
    world: World,
) -> None:
    handlers, store, relay = world
    for order_id in ("o-1", "o-2"):
        await handlers.apply_fulfillment_requested(envelope(requested(order_id)))
    await handlers.process_fulfillment("o-1")
    store.outbox["o-1"].clear()  # published
    relay.notified.clear()
    done = await handlers.republish(["o-1", "o-2", "o-3"])
    assert (done.queued, done.nothing_to_publish, done.not_found) == (["o-1"], ["o-2"], ["o-3"])
    assert [e.message.status for e in store.events("o-1", STATUS_CHANGED)] == [domain.PROCESSING]
    assert relay.notified == ["o-1"]


async def test_a_step_with_a_full_outbox_is_refused_as_unavailable(world: World) -> None:
    handlers, store, _ = world
    await handlers.apply_fulfillment_requested(envelope(requested()))
    store.outbox["o-1"] = [{"id": str(i)} for i in range(50)]
    with pytest.raises(Unavailable):
        await handlers.process_fulfillment("o-1")
    assert (await handlers.get_fulfillment("o-1")).status == domain.APPROVED


async def test_owned_state_cannot_be_forgotten(world: World) -> None:
    handlers, _, _ = world
    with pytest.raises(ValueError):
        await handlers.forget(topology.ORDER_FULFILLMENT)

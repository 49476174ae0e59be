"""Use cases racing on one document from separate clients (separate connections, as two
processes of a service have): the version guard alone picks one winner per version, and the
save step (svckit.saving) re-decides the losers on what won. No lock is held anywhere: on the
embedded stack this holds because the patched FerretDB makes single-document writes atomic
(tests/integration/test_atomic_writes.py), as on MongoDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from orders_svc import domain
from orders_svc.domain import HeldCopy
from orders_svc.handlers import OrdersHandlers
from orders_svc.repository import CustomerCopies, OrderRepository, ProductCopies
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import catalog_copy, order_draft
from svckit import mongo
from svckit.errors import Aborted, FailedPrecondition
from svckit.saving import Change, change
from svckit.store import AggregateStore
from tests.unit.test_orders_handlers import status_changed

pytestmark = pytest.mark.integration

CLIENTS = 6
STEPS = 15
NOW = datetime(2026, 5, 1, tzinfo=UTC)
Status = domain.Status


class Relay:
    def notify(self, aggregate_id: Any) -> None:
        pass


@pytest.fixture
async def clients(stack: EmbeddedStack) -> AsyncIterator[list[AsyncMongoClient[dict[str, Any]]]]:
    opened = [mongo.connect(stack.mongodb_uri) for _ in range(CLIENTS)]
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


async def test_racing_saves_win_each_version_once_and_lose_nothing(
    clients: list[AsyncMongoClient[dict[str, Any]]], mongo_db_name: str
) -> None:
    """CLIENTS writers x STEPS read-decide-write steps on one document: every step that
    returned landed exactly once (the stored version counts them), and none was refused."""
    Agg = accounts_events.CustomerChanged
    stores = [AggregateStore(c[mongo_db_name]["race"], Agg, "customer_id") for c in clients]
    await stores[0].insert(Agg(customer_id="r", version=1), [])

    def one_more(current: Any) -> Change:
        return Change(Agg(customer_id="r", version=current.version + 1), [])

    async def load(store: AggregateStore[Any]) -> Any:
        found = await store.get("r")
        assert found is not None
        return found

    async def writer(store: AggregateStore[Any]) -> list[int]:
        won = []
        for _ in range(STEPS):
            saved = await change(store, lambda: load(store), one_more, what="r")
            won.append(saved.version)
        return won

    results = await asyncio.gather(*(writer(s) for s in stores))
    versions = sorted(v for won in results for v in won)
    assert versions == list(range(2, 2 + CLIENTS * STEPS))  # each version won by one writer
    stored = await stores[0].get("r")
    assert stored is not None and stored.version == 1 + CLIENTS * STEPS


async def _orders_world(
    client: AsyncMongoClient[dict[str, Any]], db_name: str
) -> tuple[OrdersHandlers, OrderRepository]:
    db = client[db_name]
    orders = OrderRepository(db)
    handlers = OrdersHandlers(
        orders, CustomerCopies(db), ProductCopies(db), Relay(), clock=lambda: NOW
    )
    return handlers, orders


async def test_approve_and_reject_racing_from_two_clients_have_one_winner(
    clients: list[AsyncMongoClient[dict[str, Any]]], mongo_db_name: str
) -> None:
    first, orders = await _orders_world(clients[0], mongo_db_name)
    second, _ = await _orders_world(clients[1], mongo_db_name)
    copy = orders_pb2.CustomerOrders(customer_id="c1", customer_version=1)
    copy.addresses.add(type=1, address1="1 Main St", city="Austin")
    await first.customers.put({"c1": HeldCopy(1, copy)})
    ids = [f"o{i}" for i in range(10)]
    for oid in ids:
        await orders.insert(
            domain.new_order("c1", order_draft((0, 1)), catalog_copy(), oid, NOW), []
        )

    results = await asyncio.gather(
        *(first.approve_order(oid) for oid in ids),
        *(second.reject_order(oid, "no stock") for oid in ids),
        return_exceptions=True,
    )
    for i, oid in enumerate(ids):
        approved, rejected = results[i], results[len(ids) + i]
        outcomes = [r for r in (approved, rejected) if isinstance(r, orders_pb2.Order)]
        assert len(outcomes) == 1, (oid, approved, rejected)
        loser = rejected if outcomes[0] is approved else approved
        assert isinstance(loser, FailedPrecondition)  # re-decided on the winner's state
        stored = await orders.get(oid)
        assert stored is not None and stored.version == 2 and stored.status == outcomes[0].status


async def test_status_changes_applied_from_several_clients_at_once_are_all_kept(
    clients: list[AsyncMongoClient[dict[str, Any]]], mongo_db_name: str
) -> None:
    worlds = [await _orders_world(c, mongo_db_name) for c in clients[:4]]
    orders = worlds[0][1]
    await orders.insert(domain.new_order("c1", order_draft((0, 1)), catalog_copy(), "o", NOW), [])
    steps = [
        Status.ORDER_STATUS_PROCESSING,
        Status.ORDER_STATUS_SHIPPED,
        Status.ORDER_STATUS_IN_TRANSIT,
        Status.ORDER_STATUS_RECEIVED,
    ]
    outcomes = await asyncio.gather(
        *(
            handlers.apply_order_status_changed(status_changed("o", version, status))
            for (handlers, _), version, status in zip(worlds, range(1, 5), steps, strict=True)
        ),
        return_exceptions=True,
    )
    assert not [o for o in outcomes if isinstance(o, Aborted | Exception)], outcomes
    found = await orders.get_with_applied("o")
    assert found is not None
    order, applied = found
    assert applied == [1, 2, 3, 4] and order.version == 5
    assert len(order.status_events) == 5  # CREATED and the four changes, none lost

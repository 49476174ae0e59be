"""Orders' copies in the real database: what an event does to them is the domain's decision
(orders_svc.domain.copy_outcomes), on what the repository reads back, including a copy damaged
in the database in a way its content cannot show (a field the protos do not have)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

import topology
from orders_svc.handlers import OrdersHandlers
from orders_svc.repository import CustomerCopies, OrderRepository, ProductCopies
from stack.embedded import EmbeddedStack
from svckit.consumer import Outcome
from tests.integration.commands import Sent
from tests.unit.test_orders_handlers import changed, deleted

pytestmark = pytest.mark.integration


class Relay:
    def notify(self, aggregate_id: Any) -> None:
        pass


async def test_copy_outcomes_on_stored_copies_and_a_damaged_one_repaired(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    copies = CustomerCopies(mongo_db)
    handlers = OrdersHandlers(OrderRepository(mongo_db), copies, ProductCopies(mongo_db), Relay())
    assert await handlers.apply_customer_changed(changed("c-1", 2)) == Outcome.APPLIED
    assert await handlers.apply_customer_changed(changed("c-1", 2)) == Outcome.DUPLICATE
    assert await handlers.apply_customer_changed(changed("c-1", 1, "Waco")) == Outcome.STALE
    stored = mongo_db[topology.CUSTOMER_COPIES]
    good = await stored.find_one({"_id": "c-1"})
    await stored.update_one({"_id": "c-1"}, {"$set": {"name.given_name": "Mallory"}})
    # the owner's republished state, same version: the damage is undone
    assert await handlers.apply_customer_changed(changed("c-1", 2)) == Outcome.APPLIED
    assert await stored.find_one({"_id": "c-1"}) == good
    outcomes = await handlers.apply_customer_events([deleted("c-1", 3), changed("c-1", 2)])
    assert outcomes == [Outcome.APPLIED, Outcome.STALE]
    assert await copies.get("c-1") is None


async def test_a_newer_copy_is_written_without_reading_the_copy_first(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """The common case, a change newer than the copy held, is one write per batch. The copy is
    read only for a change that write refuses (the copy is as new or newer) and for a copy
    changed more than once in the batch."""
    sent = Sent(("find", "insert", "update", "delete"))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongodb_uri, event_listeners=[sent]
    )
    try:
        db = client[mongo_db_name]
        handlers = OrdersHandlers(
            OrderRepository(db), CustomerCopies(db), ProductCopies(db), Relay()
        )
        assert await handlers.apply_customer_changed(changed("c-1", 1)) == Outcome.APPLIED
        new = [changed("c-1", 3), changed("c-2", 1), deleted("c-3", 2)]
        assert await handlers.apply_customer_events(new) == [Outcome.APPLIED] * 3
        assert sent.sent == ["update", "update"]
        sent.sent.clear()
        again = [changed("c-1", 3), changed("c-2", 2), changed("c-3", 1)]
        outcomes = await handlers.apply_customer_events(again)
        assert outcomes == [Outcome.DUPLICATE, Outcome.APPLIED, Outcome.STALE]
        assert sent.sent == ["update", "find"]
        sent.sent.clear()
        twice = [changed("c-4", 1), changed("c-4", 2)]
        assert await handlers.apply_customer_events(twice) == [Outcome.APPLIED] * 2
        assert sent.sent == ["find", "update"]
        assert (await CustomerCopies(db).held(["c-1", "c-3", "c-4"])).keys() == {
            "c-1",
            "c-3",
            "c-4",
        }
    finally:
        await client.close()

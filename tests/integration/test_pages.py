"""Issue 25 finding 2 on the real database: orders as large as the audit stored (before the
order bound existed) come back in pages bounded in bytes, each one sendable, none empty."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from storefront.orders.v1 import orders_pb2
from svckit import paging
from svckit.store import AggregateStore
from tests.unit.test_order_quotas import fat_draft

pytestmark = pytest.mark.integration


async def test_pages_of_fat_orders_stay_under_the_byte_budget(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = AggregateStore(mongo_db["pages.orders"], orders_pb2.Order, "order_id")
    draft = fat_draft()
    for i in range(6):
        order = orders_pb2.Order(order_id=f"o-{i}", customer_id="c-1", version=1)
        order.items.extend(draft.items)
        await store.insert(order, [])
    seen: list[str] = []
    after = None
    while True:
        found, after = await store.page({"customer_id": "c-1"}, after=after, limit=500)
        reply = orders_pb2.ListOrdersResponse(orders=found)
        assert found and (len(found) == 1 or reply.ByteSize() <= paging.MAX_PAGE_BYTES)
        assert reply.ByteSize() < 4 * 1024 * 1024  # what gRPC would send
        seen += [o.order_id for o in found]
        if after is None:
            break
    assert seen == [f"o-{i}" for i in range(6)]

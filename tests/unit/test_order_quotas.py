"""Issue 25 finding 2: what one customer may store in orders, and what one reply may hold."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from orders_svc import domain
from orders_svc.handlers import OrdersHandlers
from storefront.catalog.v1 import catalog_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import catalog_copy, order_draft
from svckit import paging
from svckit.errors import InvalidArgument, ResourceExhausted
from svckit.shape import Page
from tests.unit.fakes import FakeCatalog, FakeCopies, FakeOrders, RecordingNotifier
from tests.unit.test_orders_handlers import changed

NOW = datetime(2026, 5, 1, tzinfo=UTC)


FAT = "fat"


def fat_catalog() -> dict[str, domain.ProductCopy]:
    """Orders' copy of a product as large as the catalog takes: a title of 200 and a
    description of 2,000 four-byte characters."""
    product = domain.ProductCopy(
        product_id=FAT,
        version=1,
        title="\U0001f600" * 200,
        description="\U0001f600" * 2000,
        state=catalog_pb2.PRODUCT_STATE_ACTIVE,
    )
    product.price.currency_code, product.price.units = "USD", 1
    return {FAT: product}


def fat_draft(lines: int = domain.MAX_ITEMS) -> orders_pb2.Order:
    """The audit's order, now that the catalog prices lines: 100 lines of the largest
    product (~880 KB once priced); what a client sends besides the id is ignored."""
    draft = orders_pb2.Order()
    for _ in range(lines):
        draft.items.add(quantity=1).product.id = FAT
    return draft


@pytest.fixture
async def handlers() -> OrdersHandlers:
    h = OrdersHandlers(
        FakeOrders(),
        FakeCopies(),
        FakeCatalog(catalog_copy()),
        RecordingNotifier(),
        clock=lambda: NOW,
    )
    for customer_id in ("c-1", "c-2"):
        await h.apply_customer_changed(changed(customer_id, 1))
    return h


def test_a_fat_order_is_refused_naming_its_items() -> None:
    with pytest.raises(InvalidArgument) as err:
        domain.new_order("c-1", fat_draft(), fat_catalog(), "o-1", NOW)
    assert [v.field for v in err.value.violations] == ["order.items"]
    assert "at most 65536" in err.value.violations[0].description


async def test_open_orders_are_capped_per_customer_and_others_are_served(
    handlers: OrdersHandlers,
) -> None:
    for _ in range(domain.MAX_OPEN_ORDERS):
        await handlers.create_order("c-1", order_draft((0, 1)))
    with pytest.raises(ResourceExhausted) as err:
        await handlers.create_order("c-1", order_draft((0, 1)), "o-over")
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "open orders" in err.value.message
    assert await handlers.orders.get(domain.chosen_order_id("c-1", "o-over")) is None
    await handlers.create_order("c-2", order_draft((0, 1)))  # another customer: served
    # A closed order frees its place.
    first, _ = await handlers.list_orders("c-1", None, Page(None, 1))
    await handlers.cancel_order(first[0].order_id)
    await handlers.create_order("c-1", order_draft((0, 1)))


async def test_customer_orders_come_in_pages(handlers: OrdersHandlers) -> None:
    chosen = [f"o-{i}" for i in range(5)]
    for order_id in chosen:
        await handlers.create_order("c-1", order_draft((0, 1)), order_id)
    placed = [domain.chosen_order_id("c-1", order_id) for order_id in chosen]
    first, after = await handlers.get_customer_orders("c-1", Page(None, 2))
    assert [o.order_id for o in first.orders] == placed[:2] and after == placed[1]
    rest, end = await handlers.get_customer_orders("c-1", Page(after, 10))
    assert [o.order_id for o in rest.orders] == placed[2:] and end is None
    assert rest.name == first.name


def test_a_page_ends_before_its_byte_budget_but_never_empty() -> None:
    big = orders_pb2.Order(order_id="x" * 600_000)
    budget = paging.PageBudget(10)
    assert budget.take(big)  # the first item always
    assert not budget.take(big)  # 1.2 MB > 1 MiB
    small = paging.PageBudget(2)
    assert small.take(orders_pb2.Order()) and small.take(orders_pb2.Order())
    assert not small.take(orders_pb2.Order())  # the count, too

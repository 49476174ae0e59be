"""The catalog's rules (catalog_svc/domain.py) and CatalogHandlers with in-memory fakes
(tests/unit/fakes.py): create, read, list, update and discontinue, the ProductChanged each
queues, prices, etags, lost races and the repair the catalog owns; no server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from google.protobuf import field_mask_pb2
from google.type import money_pb2

from catalog_svc import domain
from catalog_svc.handlers import CatalogHandlers
from storefront.catalog.v1 import catalog_pb2
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront_cli.demo import product_draft
from svckit.errors import Aborted, InvalidArgument, NotFound
from svckit.shape import Page
from tests.unit.fakes import FakeStore, RecordingNotifier

NOW = datetime(2026, 5, 1, tzinfo=UTC)
EVENTS = [catalog_events.ProductChanged.DESCRIPTOR.full_name]
ACTIVE, DISCONTINUED = catalog_pb2.PRODUCT_STATE_ACTIVE, catalog_pb2.PRODUCT_STATE_DISCONTINUED


class FakeProducts(FakeStore[catalog_pb2.Product]):
    def __init__(self) -> None:
        super().__init__("id")

    async def page(
        self, query: dict[str, object], *, after: str | None, limit: int
    ) -> tuple[list[catalog_pb2.Product], str | None]:
        return self._page(list(self.state.values()), after, limit)


World = tuple[CatalogHandlers, FakeProducts, RecordingNotifier]


@pytest.fixture
def world() -> World:
    products, relay = FakeProducts(), RecordingNotifier()
    return CatalogHandlers(products, relay, clock=lambda: NOW), products, relay


def changes(products: FakeProducts, product_id: str) -> list[catalog_events.ProductChanged]:
    return [e.message for e in products.events(product_id, EVENTS)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: setattr(p, "title", " "), "product.title"),
        (lambda p: setattr(p, "title", "t" * 201), "product.title"),
        (lambda p: setattr(p, "description", "d" * 2001), "product.description"),
        (lambda p: p.ClearField("price"), "product.price"),
        (lambda p: setattr(p.price, "currency_code", "usd"), "product.price.currency_code"),
        (lambda p: p.price.CopyFrom(money_pb2.Money(currency_code="USD")), "product.price"),
        (lambda p: setattr(p.price, "nanos", -5), "product.price.nanos"),
        (lambda p: setattr(p.price, "units", -3), "product.price"),
        (lambda p: setattr(p.price, "units", 10**10), "product.price.units"),
    ],
)
async def test_a_bad_product_is_refused_naming_the_field_and_nothing_stored(
    world: World, change: Callable[[catalog_pb2.Product], object], field: str
) -> None:
    handlers, products, relay = world
    draft = product_draft(0)
    change(draft)
    with pytest.raises(InvalidArgument) as refused:
        await handlers.create_product(draft, "sku-1")
    assert field in [v.field for v in refused.value.violations]
    assert products.state == {} and relay.notified == []


async def test_a_new_product_is_active_at_version_1_and_its_state_queued(world: World) -> None:
    handlers, products, relay = world
    draft = product_draft(0)
    draft.state, draft.version = DISCONTINUED, 7  # output only: ignored
    created = await handlers.create_product(draft, "sku-1")
    assert (created.id, created.version, created.state) == ("sku-1", 1, ACTIVE)
    [event] = changes(products, "sku-1")
    assert (event.product_id, event.version, event.state) == ("sku-1", 1, ACTIVE)
    assert (event.title, event.price) == (draft.title, draft.price)
    assert relay.notified == ["sku-1"]


async def test_an_update_changes_the_masked_fields_and_states_the_new_price(world: World) -> None:
    handlers, products, _ = world
    created = await handlers.create_product(product_draft(1), "sku-1")
    patch = catalog_pb2.Product(id="sku-1", title="ignored: not in the mask")
    patch.price.CopyFrom(money_pb2.Money(currency_code="USD", units=12, nanos=340_000_000))
    mask = field_mask_pb2.FieldMask(paths=["price"])
    updated = await handlers.update_product(patch, mask)
    assert (updated.version, updated.title, updated.price) == (2, created.title, patch.price)
    assert [e.price.units for e in changes(products, "sku-1")] == [89, 12]
    with pytest.raises(InvalidArgument):
        await handlers.update_product(patch, field_mask_pb2.FieldMask(paths=["state"]))
    with pytest.raises(Aborted):
        stale = catalog_pb2.Product(id="sku-1", title="x", etag=created.etag)
        await handlers.update_product(stale, field_mask_pb2.FieldMask(paths=["title"]))
    with pytest.raises(NotFound):
        await handlers.update_product(catalog_pb2.Product(id="none", title="x"), mask)


async def test_discontinuing_is_stated_once_and_a_lost_race_is_decided_again(
    world: World,
) -> None:
    handlers, products, relay = world
    await handlers.create_product(product_draft(2), "sku-1")
    products.lose_next = 2
    gone = await handlers.discontinue_product("sku-1")
    again = await handlers.discontinue_product("sku-1")
    assert (gone.state, gone.version) == (DISCONTINUED, 2) and again == gone
    assert [(e.version, e.state) for e in changes(products, "sku-1")] == [
        (1, ACTIVE),
        (2, DISCONTINUED),
    ]
    assert products.lose_next == 0 and relay.notified[-1] == "sku-1"


async def test_listing_is_paged_in_id_order_and_bounded(world: World) -> None:
    handlers, _, _ = world
    for i in range(5):
        await handlers.create_product(product_draft(i % 3), f"sku-{i}")
    first, after = await handlers.list_products(Page(None, 2))
    rest, end = await handlers.list_products(Page(after, 50))
    assert [p.id for p in first] == ["sku-0", "sku-1"] and end is None
    assert [p.id for p in rest] == ["sku-2", "sku-3", "sku-4"]


async def test_republish_queues_each_products_current_state(world: World) -> None:
    handlers, products, relay = world
    await handlers.create_product(product_draft(0), "sku-1")
    await handlers.discontinue_product("sku-1")
    products.outbox["sku-1"].clear()  # published
    done = await handlers.republish(["sku-1", "sku-none"])
    assert (done.queued, done.not_found) == (["sku-1"], ["sku-none"])
    assert [(e.version, e.state) for e in changes(products, "sku-1")] == [(2, DISCONTINUED)]


def test_the_event_carries_the_whole_current_state() -> None:
    product = domain.new_product(product_draft(0), "sku-1", NOW)
    event = domain.product_changed(product)
    assert event.change_time == product.update_time
    assert (event.title, event.description, event.price, event.state) == (
        product.title,
        product.description,
        product.price,
        product.state,
    )

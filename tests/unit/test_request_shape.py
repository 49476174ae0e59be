"""Validation has one home per kind (issue 25): the request's shape (presence, sizes, formats of
the wire message) is checked at each service's entrypoint, before any use case runs, and
answered with every violation at once; rules about the state are the domains'. Handlers check
neither, so a shape check cannot drift between entrypoint and handler again."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from accounts_svc.grpc_api import AccountsServicer
from accounts_svc.handlers import AccountsHandlers
from catalog_svc.grpc_api import CatalogServicer
from catalog_svc.handlers import CatalogHandlers
from fulfillment_svc.grpc_api import FulfillmentServicer
from fulfillment_svc.handlers import FulfillmentHandlers
from orders_svc.grpc_api import OrdersServicer
from orders_svc.handlers import OrdersHandlers
from storefront.accounts.v1 import accounts_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.demo import PEOPLE, catalog_copy, customer_draft, order_draft
from svckit import statuses
from svckit.errors import InvalidArgument
from tests.unit.fakes import (
    FakeCatalog,
    FakeCopies,
    FakeCustomers,
    FakeFulfillments,
    FakeOrders,
    RecordingNotifier,
)
from tests.unit.test_catalog import FakeProducts

ROOT = Path(__file__).resolve().parents[2]
LONG = "x" * (statuses.MAX_NOTE + 1)


async def refused(call: Any, *fields: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        await call
    assert sorted(v.field for v in err.value.violations) == sorted(fields)


async def test_accounts_refuses_a_malformed_id_before_any_use_case() -> None:
    customers, relay = FakeCustomers(), RecordingNotifier()
    api = AccountsServicer(AccountsHandlers(customers, relay))
    draft = customer_draft(PEOPLE[0])
    create = accounts_pb2.CreateCustomerRequest(customer=draft, customer_id="bad id with spaces")
    await refused(api.CreateCustomer(create, None), "customer_id")
    listing = accounts_pb2.ListCustomersRequest(page_size=-1)
    await refused(api.ListCustomers(listing, None), "page_size")
    assert customers.state == {} and relay.notified == []


async def test_catalog_refuses_a_malformed_id_or_page_token() -> None:
    products, relay = FakeProducts(), RecordingNotifier()
    api = CatalogServicer(CatalogHandlers(products, relay))
    create = catalog_pb2.CreateProductRequest(product_id="-starts-with-a-dash")
    await refused(api.CreateProduct(create, None), "product_id")
    listing = catalog_pb2.ListProductsRequest(page_token="not a token!")
    await refused(api.ListProducts(listing, None), "page_token")
    assert products.state == {} and relay.notified == []


async def test_orders_answers_every_shape_violation_at_once() -> None:
    orders, relay = FakeOrders(), RecordingNotifier()
    api = OrdersServicer(OrdersHandlers(orders, FakeCopies(), FakeCatalog(catalog_copy()), relay))
    create = orders_pb2.CreateOrderRequest(order=order_draft((0, 1)), order_id="a b")
    await refused(api.CreateOrder(create, None), "customer_id", "order_id")
    # a chosen id cannot reach into another customer's ("<customer>.<id>" is how ids are scoped)
    into = orders_pb2.CreateOrderRequest(customer_id="c-1", order=create.order, order_id="c-2.o-2")
    await refused(api.CreateOrder(into, None), "order_id")
    reject = orders_pb2.RejectOrderRequest(reason=LONG)
    await refused(api.RejectOrder(reject, None), "order_id", "reason")
    approve = orders_pb2.ApproveOrderRequest(order_id="o-1", note=LONG)
    await refused(api.ApproveOrder(approve, None), "note")
    listing = orders_pb2.ListOrdersRequest(status=999)  # type: ignore[arg-type]
    await refused(api.ListOrders(listing, None), "status")
    assert orders.state == {} and relay.notified == []


async def test_fulfillment_refuses_a_missing_order_and_an_oversized_note_together() -> None:
    store, relay = FakeFulfillments(), RecordingNotifier()
    api = FulfillmentServicer(FulfillmentHandlers(store, relay))
    ship = fulfillment_pb2.ShipFulfillmentRequest(note=LONG)
    await refused(api.ShipFulfillment(ship, None), "order_id", "note")
    assert store.state == {} and relay.notified == []


SHAPE_CHECKS = {"Violations", "check_client_id", "check_note", "paging", "require"}


@pytest.mark.parametrize(
    "service", ["accounts_svc", "orders_svc", "fulfillment_svc", "catalog_svc"]
)
def test_handlers_check_no_request_shape(service: str) -> None:
    """The shape checks live in svckit.shape, called from grpc_api; a handler naming one of them
    would be a second home for the same rule."""
    tree = ast.parse((ROOT / service / "handlers.py").read_text())
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    named |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not named & SHAPE_CHECKS, (
        f"{service}/handlers.py checks request shape: {named & SHAPE_CHECKS}"
    )

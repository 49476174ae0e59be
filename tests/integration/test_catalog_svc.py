"""catalog_svc against the real broker and database, in-process on its own database: the
five RPCs, ProductChanged on catalog.product.change, errors with their details, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import topology
from catalog_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from storefront_cli.clients import channel
from storefront_cli.demo import product_draft
from svckit import names
from svckit.app import ServiceApp
from svckit.envelope import Envelope
from tests.support import eventually, read_topic, running, settings_for, tokens_of, unique

pytestmark = pytest.mark.integration
TYPES = ["storefront.catalog.v1.ProductChanged"]
Products = catalog_pb2_grpc.CatalogServiceStub


@pytest.fixture
async def catalog(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[ServiceApp]:
    async with running(build, settings_for(stack, topology.CATALOG, mongo_db_name)) as app:
        yield app


@pytest.fixture
async def stub(stack: EmbeddedStack, catalog: ServiceApp) -> AsyncIterator[Products]:
    async with channel(f"127.0.0.1:{catalog.bound_port}", tokens_of(stack)) as channel_:
        yield catalog_pb2_grpc.CatalogServiceStub(channel_)


async def test_create_update_discontinue_publish_the_products_state(
    stack: EmbeddedStack, catalog: ServiceApp, stub: Products
) -> None:
    sku = unique("sku")
    created = await stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product_draft(0), product_id=sku)
    )
    assert (created.id, created.version, created.state) == (
        sku,
        1,
        catalog_pb2.PRODUCT_STATE_ACTIVE,
    )
    patch = catalog_pb2.Product(id=sku, etag=created.etag)
    patch.price.currency_code, patch.price.units, patch.price.nanos = "USD", 12, 340_000_000
    updated = await stub.UpdateProduct(
        catalog_pb2.UpdateProductRequest(
            product=patch, update_mask=field_mask_pb2.FieldMask(paths=["price"])
        )
    )
    assert (updated.version, updated.title, updated.price) == (2, created.title, patch.price)
    gone = await stub.DiscontinueProduct(catalog_pb2.DiscontinueProductRequest(product_id=sku))
    assert (gone.version, gone.state) == (3, catalog_pb2.PRODUCT_STATE_DISCONTINUED)

    async def three() -> list[Envelope] | None:
        found = await read_topic(stack.kafka, topology.PRODUCT_CHANGES, TYPES, key=sku)
        return found if len(found) >= 3 else None

    events = await eventually(three, timeout=30, what="three ProductChanged")
    assert [(e.message.version, e.message.state, e.message.price.units) for e in events] == [
        (1, catalog_pb2.PRODUCT_STATE_ACTIVE, 249),
        (2, catalog_pb2.PRODUCT_STATE_ACTIVE, 12),
        (3, catalog_pb2.PRODUCT_STATE_DISCONTINUED, 12),
    ]
    assert all(e.source == names.source(topology.CATALOG) for e in events)
    got = await stub.GetProduct(catalog_pb2.GetProductRequest(product_id=sku))
    assert got == gone


async def test_bad_input_and_stale_etags_are_refused_with_details_and_change_nothing(
    catalog: ServiceApp, stub: Products
) -> None:
    bad = product_draft(1)
    bad.price.units = -1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateProduct(catalog_pb2.CreateProductRequest(product=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in status.details)
    assert [v.field for v in request.field_violations] == ["product.price"]
    assert await catalog.db[topology.PRODUCTS].count_documents({}) == 0
    created = await stub.CreateProduct(catalog_pb2.CreateProductRequest(product=product_draft(1)))
    stale = catalog_pb2.Product(id=created.id, title="Renamed", etag='W/"9"')
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateProduct(catalog_pb2.UpdateProductRequest(product=stale))
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetProduct(catalog_pb2.GetProductRequest(product_id="no-such"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateProduct(
            catalog_pb2.CreateProductRequest(product=product_draft(1), product_id=created.id)
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_listing_pages_through_every_product_in_bounded_pages(stub: Products) -> None:
    ids = [
        (
            await stub.CreateProduct(catalog_pb2.CreateProductRequest(product=product_draft(i % 3)))
        ).id
        for i in range(5)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListProducts(
            catalog_pb2.ListProductsRequest(page_size=2, page_token=token)
        )
        assert len(page.products) <= 2
        seen += [p.id for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(ids)

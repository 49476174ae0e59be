"""gRPC entrypoint for the catalog: requests in, handlers called."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from catalog_svc.handlers import CatalogHandlers
from storefront.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from svckit import shape
from svckit.errors import require

Ctx: TypeAlias = grpc.aio.ServicerContext


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, handlers: CatalogHandlers) -> None:
        self.h = handlers

    async def CreateProduct(
        self, request: catalog_pb2.CreateProductRequest, context: Ctx
    ) -> catalog_pb2.Product:
        shape.request().client_id(request.product_id, "product_id").check()
        return await self.h.create_product(request.product, request.product_id)

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: Ctx
    ) -> catalog_pb2.Product:
        require(request.product_id, "product_id")
        return await self.h.get_product(request.product_id)

    async def ListProducts(
        self, request: catalog_pb2.ListProductsRequest, context: Ctx
    ) -> catalog_pb2.ListProductsResponse:
        found, last = await self.h.list_products(shape.page(request.page_size, request.page_token))
        return catalog_pb2.ListProductsResponse(
            products=found, next_page_token=shape.next_page_token(last)
        )

    async def UpdateProduct(
        self, request: catalog_pb2.UpdateProductRequest, context: Ctx
    ) -> catalog_pb2.Product:
        require(request.product.id, "product.id")
        return await self.h.update_product(request.product, request.update_mask)

    async def DiscontinueProduct(
        self, request: catalog_pb2.DiscontinueProductRequest, context: Ctx
    ) -> catalog_pb2.Product:
        require(request.product_id, "product_id")
        return await self.h.discontinue_product(request.product_id, request.etag)

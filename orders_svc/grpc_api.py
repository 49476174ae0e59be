"""gRPC entrypoint for orders: requests in, handlers called."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from orders_svc.handlers import OrdersHandlers
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from svckit import shape
from svckit.errors import require

Ctx: TypeAlias = grpc.aio.ServicerContext


def _check_change(order_id: str, note: str, field: str) -> None:
    """A status change names its order and may carry a bounded note (or reason)."""
    shape.request().required(order_id, "order_id").note(note, field).check()


class OrdersServicer(orders_pb2_grpc.OrdersServiceServicer):
    def __init__(self, handlers: OrdersHandlers) -> None:
        self.h = handlers

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: Ctx
    ) -> orders_pb2.Order:
        shape.request().required(request.customer_id, "customer_id").client_id(
            request.order_id, "order_id"
        ).check()
        return await self.h.create_order(request.customer_id, request.order, request.order_id)

    async def GetOrder(self, request: orders_pb2.GetOrderRequest, context: Ctx) -> orders_pb2.Order:
        require(request.order_id, "order_id")
        return await self.h.get_order(request.order_id)

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: Ctx
    ) -> orders_pb2.ListOrdersResponse:
        found, last = await self.h.list_orders(
            request.customer_id,
            shape.status_filter(request.status),
            shape.page(request.page_size, request.page_token),
        )
        return orders_pb2.ListOrdersResponse(
            orders=found, next_page_token=shape.next_page_token(last)
        )

    async def GetCustomerOrders(
        self, request: orders_pb2.GetCustomerOrdersRequest, context: Ctx
    ) -> orders_pb2.CustomerOrders:
        require(request.customer_id, "customer_id")
        page = shape.page(request.page_size, request.page_token)
        copy, last = await self.h.get_customer_orders(request.customer_id, page)
        copy.next_page_token = shape.next_page_token(last)
        return copy

    async def ApproveOrder(
        self, request: orders_pb2.ApproveOrderRequest, context: Ctx
    ) -> orders_pb2.Order:
        _check_change(request.order_id, request.note, "note")
        return await self.h.approve_order(request.order_id, request.note)

    async def RejectOrder(
        self, request: orders_pb2.RejectOrderRequest, context: Ctx
    ) -> orders_pb2.Order:
        shape.request().required(request.order_id, "order_id").note(
            request.reason, "reason"
        ).check()
        return await self.h.reject_order(request.order_id, request.reason)

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: Ctx
    ) -> orders_pb2.Order:
        shape.request().required(request.order_id, "order_id").note(
            request.reason, "reason"
        ).check()
        return await self.h.cancel_order(request.order_id, request.reason)

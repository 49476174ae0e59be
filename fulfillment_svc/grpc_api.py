"""gRPC entrypoint: requests checked, handlers called."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from fulfillment_svc.handlers import FulfillmentHandlers
from storefront.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from svckit import shape

Ctx: TypeAlias = grpc.aio.ServicerContext


def _check_request(order_id: str, note: str = "") -> None:
    """Every RPC on one fulfillment names its order and may carry a bounded note: what is
    wrong with both is answered at once."""
    shape.request().required(order_id, "order_id").note(note, "note").check()


class FulfillmentServicer(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    def __init__(self, handlers: FulfillmentHandlers) -> None:
        self.h = handlers

    async def GetFulfillment(
        self, request: fulfillment_pb2.GetFulfillmentRequest, context: Ctx
    ) -> fulfillment_pb2.Fulfillment:
        _check_request(request.order_id)
        return await self.h.get_fulfillment(request.order_id)

    async def ListFulfillments(
        self, request: fulfillment_pb2.ListFulfillmentsRequest, context: Ctx
    ) -> fulfillment_pb2.ListFulfillmentsResponse:
        found, last = await self.h.list_fulfillments(
            shape.status_filter(request.status), shape.page(request.page_size, request.page_token)
        )
        return fulfillment_pb2.ListFulfillmentsResponse(
            fulfillments=found, next_page_token=shape.next_page_token(last)
        )

    async def ProcessFulfillment(
        self, request: fulfillment_pb2.ProcessFulfillmentRequest, context: Ctx
    ) -> fulfillment_pb2.Fulfillment:
        _check_request(request.order_id, request.note)
        return await self.h.process_fulfillment(request.order_id, request.note)

    async def ShipFulfillment(
        self, request: fulfillment_pb2.ShipFulfillmentRequest, context: Ctx
    ) -> fulfillment_pb2.Fulfillment:
        _check_request(request.order_id, request.note)
        return await self.h.ship_fulfillment(request.order_id, request.note)

    async def MarkFulfillmentInTransit(
        self, request: fulfillment_pb2.MarkFulfillmentInTransitRequest, context: Ctx
    ) -> fulfillment_pb2.Fulfillment:
        _check_request(request.order_id, request.note)
        return await self.h.mark_in_transit(request.order_id, request.note)

    async def ConfirmFulfillmentReceived(
        self, request: fulfillment_pb2.ConfirmFulfillmentReceivedRequest, context: Ctx
    ) -> fulfillment_pb2.Fulfillment:
        _check_request(request.order_id, request.note)
        return await self.h.confirm_received(request.order_id, request.note)

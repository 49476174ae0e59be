"""gRPC entrypoint: requests in, handlers called, card numbers masked out."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from accounts_svc import domain
from accounts_svc.handlers import AccountsHandlers
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from svckit import shape
from svckit.errors import require

Ctx: TypeAlias = grpc.aio.ServicerContext


class AccountsServicer(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self, handlers: AccountsHandlers) -> None:
        self.h = handlers

    async def CreateCustomer(
        self, request: accounts_pb2.CreateCustomerRequest, context: Ctx
    ) -> accounts_pb2.Customer:
        shape.request().client_id(request.customer_id, "customer_id").check()
        created = await self.h.create_customer(request.customer, request.customer_id)
        return domain.masked(created)

    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: Ctx
    ) -> accounts_pb2.Customer:
        require(request.customer_id, "customer_id")
        return domain.masked(await self.h.get_customer(request.customer_id))

    async def ListCustomers(
        self, request: accounts_pb2.ListCustomersRequest, context: Ctx
    ) -> accounts_pb2.ListCustomersResponse:
        found, last = await self.h.list_customers(shape.page(request.page_size, request.page_token))
        return accounts_pb2.ListCustomersResponse(
            customers=[domain.masked(c) for c in found], next_page_token=shape.next_page_token(last)
        )

    async def UpdateCustomer(
        self, request: accounts_pb2.UpdateCustomerRequest, context: Ctx
    ) -> accounts_pb2.Customer:
        require(request.customer.id, "customer.id")
        updated = await self.h.update_customer(request.customer, request.update_mask)
        return domain.masked(updated)

    async def DeleteCustomer(
        self, request: accounts_pb2.DeleteCustomerRequest, context: Ctx
    ) -> empty_pb2.Empty:
        require(request.customer_id, "customer_id")
        await self.h.delete_customer(request.customer_id, request.etag)
        return empty_pb2.Empty()

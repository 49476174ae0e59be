"""Defensive limits: deadlines honoured server-side, bounded page sizes."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from svckit import paging
from svckit.errors import InvalidArgument
from svckit.interceptors import ServerInterceptor
from tests.support import accounts_served


class SlowAccounts(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return accounts_pb2.Customer(id=request.customer_id)


async def test_work_stops_when_the_callers_deadline_passes() -> None:
    slow = SlowAccounts()  # type: ignore[abstract]  # the generated base answers the rest UNIMPLEMENTED
    async with accounts_served(slow, ServerInterceptor("test")) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetCustomer(accounts_pb2.GetCustomerRequest(customer_id="c"), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(slow.cancelled.wait(), 2)


def test_page_sizes_are_bounded() -> None:
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(10**9) == paging.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        paging.page_size(-1)


@pytest.mark.parametrize("token", ["%%%", "____", "not base64!"])
def test_foreign_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidArgument):
        paging.decode_token(token)

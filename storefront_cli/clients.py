"""Generated-stub clients for the three services, from one set of endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from storefront.accounts.v1 import accounts_pb2_grpc
from storefront.fulfillment.v1 import fulfillment_pb2_grpc
from storefront.orders.v1 import orders_pb2_grpc

T = TypeVar("T")


@dataclass
class Clients:
    accounts: accounts_pb2_grpc.AccountsServiceStub
    orders: orders_pb2_grpc.OrdersServiceStub
    fulfillment: fulfillment_pb2_grpc.FulfillmentServiceStub
    channels: list[grpc.aio.Channel]

    @classmethod
    def connect(cls, accounts: str, orders: str, fulfillment: str) -> Clients:
        channels = [grpc.aio.insecure_channel(t) for t in (accounts, orders, fulfillment)]
        return cls(
            accounts_pb2_grpc.AccountsServiceStub(channels[0]),
            orders_pb2_grpc.OrdersServiceStub(channels[1]),
            fulfillment_pb2_grpc.FulfillmentServiceStub(channels[2]),
            channels,
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll until `probe` returns a value (not None), or fail after `timeout` seconds.

    Convergence is asynchronous by design; this is how callers wait for it
    without fixed sleeps. NOT_FOUND and FAILED_PRECONDITION count as "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.02
    while True:
        try:
            result = await probe()
            if result is not None:
                return result
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(0.25, delay * 1.5)

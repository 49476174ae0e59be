"""Issue 25: a server takes on at most GRPC_MAX_CONCURRENT_RPCS calls at once; the next is
refused RESOURCE_EXHAUSTED at once (docs/configuration.md), not queued, and served again as
soon as one of them ends. Against a real service (accounts_svc on the embedded stack)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accounts_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront_cli.clients import channel
from svckit.app import ServiceApp
from tests.support import running, settings_for, tokens_of
from tests.unit.test_accounts_domain import draft

pytestmark = pytest.mark.integration

LIMIT = 3


@pytest.fixture
async def accounts(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[ServiceApp]:
    settings = settings_for(stack, "accounts", mongo_db_name, max_concurrent_rpcs=LIMIT)
    async with running(build, settings) as app:
        yield app


async def test_the_call_past_the_limit_is_refused_at_once_and_served_once_one_ends(
    stack: EmbeddedStack, accounts: ServiceApp
) -> None:
    async with channel(f"127.0.0.1:{accounts.bound_port}", tokens_of(stack)) as ch:
        stub = accounts_pb2_grpc.AccountsServiceStub(ch)
        created = await stub.CreateCustomer(accounts_pb2.CreateCustomerRequest(customer=draft()))
        get = accounts_pb2.GetCustomerRequest(customer_id=created.id)
        # LIMIT calls that stay in flight: health watches (public, streaming) hold their RPC
        # open for as long as the client reads.
        health = health_pb2_grpc.HealthStub(ch)
        watches = [health.Watch(health_pb2.HealthCheckRequest(service="")) for _ in range(LIMIT)]
        for watch in watches:
            first = await asyncio.wait_for(watch.read(), 10)
            assert first.status == health_pb2.HealthCheckResponse.SERVING

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetCustomer(get, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 5, "queued, not refused at once"

        watches.pop().cancel()
        for _ in range(100):  # the server sees the cancel a moment later
            try:
                served = await stub.GetCustomer(get, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        else:
            pytest.fail("still refused after one call in flight ended")
        assert served.id == created.id
        for watch in watches:
            watch.cancel()

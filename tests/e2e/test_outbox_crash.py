"""A service killed between the save and the publish: its events still arrive,
exactly once in effect; and SIGTERM drains cleanly."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from pymongo import AsyncMongoClient

import topology
from stack.procs import _CHILDREN
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront.orders.v1 import orders_pb2
from storefront_cli import system
from storefront_cli.clients import Clients, channel, eventually
from storefront_cli.demo import PEOPLE, customer_draft
from tests.e2e.conftest import System
from tests.support import read_topic, tokens_of

pytestmark = pytest.mark.e2e
TYPES = ["storefront.accounts.v1.CustomerChanged", "storefront.accounts.v1.CustomerDeleted"]


def restart_accounts(sys_: System, **extra_env: str) -> None:
    sup = sys_.stack.supervisor
    sup.stop("accounts")
    system.start_service(
        sup, sys_.stack, sys_.ports, "accounts", db_prefix=sys_.db_prefix, extra_env=extra_env
    )


async def test_sigkill_with_pending_outbox_loses_nothing(
    running_system: System, clients: Clients
) -> None:
    restart_accounts(running_system, OUTBOX_RELAY="off")  # saves, never publishes
    try:
        tokens = tokens_of(running_system.stack)
        async with channel(running_system.target("accounts"), tokens) as accounts:
            stub = accounts_pb2_grpc.AccountsServiceStub(accounts)
            ids = [
                (
                    await stub.CreateCustomer(
                        accounts_pb2.CreateCustomerRequest(customer=customer_draft(p))
                    )
                ).id
                for p in PEOPLE
            ]
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            running_system.stack.mongodb_uri
        )
        try:
            accounts = client[running_system.database("accounts")][topology.CUSTOMERS]
            pending = await accounts.count_documents(
                {"_id": {"$in": ids}, "_outbox.id": {"$exists": True}}
            )
        finally:
            await client.close()
        assert pending == len(ids), "the events must be waiting in the outbox"
        assert (
            await read_topic(
                running_system.stack.kafka, topology.CUSTOMER_CHANGES, TYPES, key=ids[0]
            )
            == []
        )
        assert running_system.stack.supervisor.kill("accounts", signal.SIGKILL)
    finally:
        restart_accounts(running_system)  # relay on: the start-up sweep publishes what was left

    for cid in ids:

        async def copied(cid: str = cid) -> Any:
            return await clients.orders.GetCustomerOrders(
                orders_pb2.GetCustomerOrdersRequest(customer_id=cid)
            )

        copy = await eventually(copied, what=f"copy of {cid} after the crash")
        assert copy.customer_version == 1
        events = await read_topic(
            running_system.stack.kafka, topology.CUSTOMER_CHANGES, TYPES, key=cid
        )
        assert [e.message.version for e in events] == [1], "published once, after the restart"


async def test_sigterm_drains_and_exits_cleanly(running_system: System) -> None:
    sup = running_system.stack.supervisor
    pid = sup.pid("orders")
    assert pid is not None
    assert sup.stop("orders", timeout=20)
    assert _CHILDREN[pid].returncode == 0  # graceful: not killed after the grace period
    log = sup.log_path("orders").read_text()
    assert log.rstrip().splitlines()[-1].find("orders stopped") != -1
    system.start_service(
        sup,
        running_system.stack,
        running_system.ports,
        "orders",
        db_prefix=running_system.db_prefix,
    )

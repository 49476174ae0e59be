"""`storefront check`, `--repair`, `replay` and `dlq` against the running system.

Divergence is made the way real incidents make it: a copy damaged behind the
consumers' backs, an event that never arrived, an event parked in the DLQ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from storefront.accounts.v1 import accounts_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli import consistency, system
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft, run_demo
from storefront_cli.endpoints import Endpoints
from svckit.envelope import encode
from tests.e2e.conftest import System
from tests.integration.test_orders_svc import customer_changed
from tests.support import tokens_of, unique

pytestmark = pytest.mark.e2e


@pytest.fixture
async def clients(isolated_system: System) -> AsyncIterator[Clients]:
    c = Clients.connect(
        *(isolated_system.target(s) for s in system.SERVICES),
        tokens=tokens_of(isolated_system.stack),
    )
    yield c
    await c.close()


def endpoints_of(system: System) -> Endpoints:
    return Endpoints(system.stack.kafka, system.stack.mongodb_uri, system.db_prefix)


async def settled(system: System) -> int:
    """Check until clean or 30 s: events in flight are not divergence."""
    lines: list[str] = []

    async def clean() -> bool | None:
        lines.clear()
        code = await consistency.check(endpoints_of(system), repair=False, wait=0, log=lines.append)
        return True if code == 0 else None

    try:
        await eventually(clean, timeout=30, what="no divergence")
        return 0
    except TimeoutError:
        print("\n".join(lines))
        return 1


async def test_check_finds_and_repairs_divergence(isolated_system: System, clients: Clients) -> None:
    await run_demo(clients, lambda _: None)
    assert await settled(isolated_system) == 0
    orders_db = isolated_system.database("orders")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    try:
        db = client[orders_db]
        damaged = await db["customers"].find_one({"deleted": False})
        await db["customers"].update_one(
            {"_id": damaged["_id"]}, {"$set": {"contact.email": "x@evil.test"}}
        )
        lost = await db["customers"].find_one({"deleted": False, "_id": {"$ne": damaged["_id"]}})
        await db["customers"].delete_one({"_id": lost["_id"]})
        shipped = await db["customer.orders"].find_one({"status": "ORDER_STATUS_RECEIVED"})
        history = [e for e in shipped["status_events"] if e["status"] != "ORDER_STATUS_SHIPPED"]
        await db["customer.orders"].update_one(
            {"_id": shipped["_id"]},
            {"$set": {"status_events": history, "applied_fulfillment_versions": [2, 4, 5]}},
        )
    finally:
        await client.close()

    lines: list[str] = []
    code = await consistency.check(
        endpoints_of(isolated_system), repair=False, wait=0, log=lines.append
    )
    report = "\n".join(lines)
    assert code == 1
    assert "customer copy differs" in report and damaged["_id"] in report
    assert "missing customer copy" in report and lost["_id"] in report
    assert "status change missing in order" in report and "SHIPPED (v3)" in report

    lines.clear()
    code = await consistency.check(
        endpoints_of(isolated_system), repair=True, wait=30, log=lines.append
    )
    assert code == 0, "\n".join(lines)
    order = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=shipped["_id"]))
    assert [e.status for e in order.status_events].count(4) == 1  # SHIPPED back, once


async def test_replay_rebuilds_read_models_identically(isolated_system: System) -> None:
    ep = endpoints_of(isolated_system)
    assert (
        await consistency.replay(ep, "orders", "accounts.customer.change", rebuild=True, log=print)
        == 0
    )
    assert (
        await consistency.replay(ep, "orders", "fulfillment.order.change", rebuild=True, log=print)
        == 0
    )
    # Re-consuming a whole topic over intact state changes nothing.
    assert (
        await consistency.replay(
            ep, "fulfillment", "orders.order.fulfill", rebuild=False, log=print
        )
        == 0
    )
    assert (
        await consistency.replay(ep, "orders", "accounts.customer.change", rebuild=False, log=print)
        == 0
    )
    assert (
        await consistency.replay(ep, "fulfillment", "orders.order.fulfill", rebuild=True, log=print)
        == 2
    )


async def test_dlq_replay_delivers_a_parked_event(isolated_system: System, clients: Clients) -> None:
    """An event dead-lettered during an outage is applied once replayed from the DLQ."""
    cid = unique("parked")
    value, headers = encode(
        customer_changed(cid, 1, "parked@example.com"), source="//storefront/accounts", key=cid
    )
    parked_headers = headers + [
        ("dlq_error", b"ServerSelectionTimeoutError: database unreachable"),
        ("dlq_topic", b"accounts.customer.change"),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"0"),
        ("dlq_attempts", b"5"),
    ]
    producer = isolated_system.stack.kafka.producer(acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            "accounts.customer.change.dlq", value, key=cid.encode(), headers=parked_headers
        )
    finally:
        await producer.stop()
    record_id = f"accounts.customer.change.dlq:{meta.partition}:{meta.offset}"
    ep = endpoints_of(isolated_system)
    lines: list[str] = []
    await consistency.dlq_list(ep, "accounts.customer.change", lines.append)
    assert record_id in "\n".join(lines)
    assert (
        await consistency.dlq_replay(ep, "accounts.customer.change", [record_id], lines.append) == 0
    )

    async def applied() -> object:
        return await clients.orders.GetCustomerOrders(
            orders_pb2.GetCustomerOrdersRequest(customer_id=cid)
        )

    copy = await eventually(applied, what="the replayed event applied")
    assert copy.contact.email == "parked@example.com"
    assert (
        await consistency.dlq_replay(ep, "accounts.customer.change", ["nope:0:0"], lines.append)
        == 2
    )
    # The parked customer was invented for this test; accounts never had it.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    try:
        await client[isolated_system.database("orders")]["customers"].delete_one({"_id": cid})
    finally:
        await client.close()


async def test_check_on_a_fresh_customer_settles(isolated_system: System, clients: Clients) -> None:
    await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[2]))
    )
    assert await settled(isolated_system) == 0

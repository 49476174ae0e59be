"""`storefront check`, `--repair`, `replay` and `dlq` against the running system.

Divergence is made the way real incidents make it: a copy damaged behind the
consumers' backs, an event that never arrived, an event parked in the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

import topology
from stack.embedded import free_ports
from storefront.accounts.v1 import accounts_pb2
from storefront.admin.v1 import admin_pb2, admin_pb2_grpc
from storefront.orders.v1 import orders_pb2
from storefront_cli import check, replays
from storefront_cli.clients import CLIENT_SERVICES, Clients, eventually
from storefront_cli.demo import PEOPLE, PRODUCTS, customer_draft, run_demo
from storefront_cli.endpoints import Endpoints
from svckit import names
from svckit.envelope import encode
from svckit.outbox import OUTBOX, PENDING
from svckit.replay import TopicReader
from tests.e2e.conftest import System
from tests.e2e.test_access import call_grpc_via_envoy
from tests.integration.test_orders_svc import customer_changed
from tests.support import issuer_of, park, tokens_of, unique

pytestmark = pytest.mark.e2e


@pytest.fixture
async def clients(isolated_system: System) -> AsyncIterator[Clients]:
    c = isolated_system.connect()
    yield c
    await c.close()


async def end_offsets(system: System, topic: str) -> dict[int, int]:
    async with TopicReader(system.stack.kafka, [topic]) as reader:
        return {tp.partition: end for tp, end in reader.ends.items()}


def endpoints_of(system: System) -> Endpoints:
    return Endpoints(system.stack.kafka, system.stack.mongodb_uri, system.db_prefix)


async def settled(system: System) -> int:
    """Check until clean or 30 s: events in flight are not divergence."""
    lines: list[str] = []
    clients = system.connect()

    async def clean() -> bool | None:
        lines.clear()
        code = await check.check(
            endpoints_of(system), repair=False, wait=0, log=lines.append, clients=clients
        )
        return True if code == 0 else None

    try:
        await eventually(clean, timeout=30, what="no divergence")
        return 0
    except TimeoutError:
        print("\n".join(lines))
        return 1
    finally:
        await clients.close()


async def test_check_finds_and_repairs_divergence(
    isolated_system: System, clients: Clients
) -> None:
    await run_demo(clients, lambda _: None)
    assert await settled(isolated_system) == 0
    orders_db = isolated_system.database("orders")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    try:
        db = client[orders_db]
        damaged = await db[topology.CUSTOMER_COPIES].find_one({"deleted": False})
        assert damaged is not None
        await db[topology.CUSTOMER_COPIES].update_one(
            {"_id": damaged["_id"]}, {"$set": {"contact.email": "x@evil.test"}}
        )
        lost = await db[topology.CUSTOMER_COPIES].find_one(
            {"deleted": False, "_id": {"$ne": damaged["_id"]}}
        )
        assert lost is not None
        await db[topology.CUSTOMER_COPIES].delete_one({"_id": lost["_id"]})
        shipped = await db[topology.ORDER_DOCUMENTS].find_one({"status": "ORDER_STATUS_RECEIVED"})
        assert shipped is not None
        history = [e for e in shipped["status_events"] if e["status"] != "ORDER_STATUS_SHIPPED"]
        await db[topology.ORDER_DOCUMENTS].update_one(
            {"_id": shipped["_id"]},
            {"$set": {"status_events": history, "applied_fulfillment_versions": [2, 4, 5]}},
        )
    finally:
        await client.close()

    lines: list[str] = []
    code = await check.check(
        endpoints_of(isolated_system), repair=False, wait=0, log=lines.append, clients=clients
    )
    report = "\n".join(lines)
    assert code == 1
    assert "customer copy differs" in report and damaged["_id"] in report
    assert "missing customer copy" in report and lost["_id"] in report
    assert "status change missing in order" in report and "SHIPPED (v3)" in report
    lines.clear()
    code = await check.check(
        endpoints_of(isolated_system),
        repair=False,
        wait=0,
        log=lines.append,
        as_json=True,
        clients=clients,
    )
    [line] = lines  # `check --json`: the same findings as data, one object
    found = {(d["kind"], d["subject"]) for d in json.loads(line)["divergences"]}
    assert code == 1
    assert {
        ("customer copy differs", damaged["_id"]),
        ("missing customer copy", lost["_id"]),
    } <= found and any(kind == "status change missing in order" for kind, _ in found)

    lines.clear()
    code = await check.check(
        endpoints_of(isolated_system), repair=True, wait=30, log=lines.append, clients=clients
    )
    assert code == 0, "\n".join(lines)
    order = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=shipped["_id"]))
    assert [e.status for e in order.status_events].count(4) == 1  # SHIPPED back, once


async def test_check_finds_and_repairs_orders_copy_of_the_catalog(
    isolated_system: System, clients: Clients
) -> None:
    """The copy orders prices from, damaged (a price) and lost (a product): `check` names both,
    and the catalog's republished state repairs them."""
    assert await settled(isolated_system) == 0
    sold, gone = PRODUCTS[1][0], PRODUCTS[2][0]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    try:
        copies = client[isolated_system.database("orders")][topology.PRODUCT_COPIES]
        await copies.update_one({"_id": sold}, {"$set": {"price.units": "0"}})
        await copies.delete_one({"_id": gone})
        lines: list[str] = []
        code = await check.check(
            endpoints_of(isolated_system), repair=False, wait=0, log=lines.append, clients=clients
        )
        report = "\n".join(lines)
        assert code == 1
        assert "product copy differs" in report and sold in report
        assert "missing product copy" in report and gone in report
        lines.clear()
        code = await check.check(
            endpoints_of(isolated_system), repair=True, wait=30, log=lines.append, clients=clients
        )
        assert code == 0, "\n".join(lines)
        repaired = await copies.find_one({"_id": sold})
        assert repaired is not None and int(repaired["price"]["units"]) == PRODUCTS[1][2]
    finally:
        await client.close()


async def test_replay_rebuilds_read_models_identically(clients: Clients) -> None:
    # The consuming service replays, through its admin service.
    assert (
        await replays.replay(clients, "orders", topology.CUSTOMER_CHANGES, rebuild=True, log=print)
        == 0
    )
    assert (
        await replays.replay(clients, "orders", topology.ORDER_STATUS, rebuild=True, log=print) == 0
    )
    assert (
        await replays.replay(clients, "orders", topology.PRODUCT_CHANGES, rebuild=True, log=print)
        == 0
    )
    # Re-consuming a whole topic over intact state changes nothing.
    assert (
        await replays.replay(
            clients, "fulfillment", topology.ORDER_FULFILLMENT, rebuild=False, log=print
        )
        == 0
    )
    assert (
        await replays.replay(clients, "orders", topology.CUSTOMER_CHANGES, rebuild=False, log=print)
        == 0
    )
    assert (
        await replays.replay(
            clients, "fulfillment", topology.ORDER_FULFILLMENT, rebuild=True, log=print
        )
        == 2
    )


async def test_dlq_replay_delivers_a_parked_event(
    isolated_system: System, clients: Clients
) -> None:
    """An event dead-lettered during an outage is applied once replayed from the DLQ."""
    cid = unique("parked")
    record_id = await park(
        isolated_system.stack.kafka,
        customer_changed(cid, 1, "parked@example.com"),
        topology.CUSTOMER_CHANGES,
        cid,
    )
    ep = endpoints_of(isolated_system)
    lines: list[str] = []
    await replays.dlq_list(ep, topology.CUSTOMER_CHANGES, lines.append)
    assert record_id in "\n".join(lines)
    listed: list[str] = []
    await replays.dlq_list(ep, topology.CUSTOMER_CHANGES, listed.append, as_json=True)
    [record] = [r for r in json.loads(listed[0])["records"] if r["id"] == record_id]
    table = "\n".join(lines).splitlines()
    [row] = [line.split() for line in table if line.startswith(record_id + " ")]
    assert row[:3] == [record["id"], record["type"], record["key"]]
    assert record["replayed"] is False and "no" in row
    topic_before = await end_offsets(isolated_system, topology.CUSTOMER_CHANGES)
    assert (
        await replays.dlq_replay(clients, topology.CUSTOMER_CHANGES, [record_id], lines.append) == 0
    ), lines
    assert f"[dlq] {record_id}: applied" in lines

    async def applied() -> Any:
        return await clients.orders.GetCustomerOrders(
            orders_pb2.GetCustomerOrdersRequest(customer_id=cid)
        )

    copy = await eventually(applied, what="the replayed event applied")
    assert copy.contact.email == "parked@example.com"
    # Applied in place by orders: nothing was appended to accounts' topic behind newer events.
    assert await end_offsets(isolated_system, topology.CUSTOMER_CHANGES) == topic_before
    for bad in (
        "nope:0:0",
        f"{topology.SYSTEM.service(topology.ORDERS).dlq(topology.CUSTOMER_CHANGES)}:0:999999",
    ):
        assert (
            await replays.dlq_replay(clients, topology.CUSTOMER_CHANGES, [bad], lines.append) == 2
        ), bad
    # The parked customer was invented for this test; accounts never had it.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    try:
        await client[isolated_system.database("orders")][topology.CUSTOMER_COPIES].delete_one(
            {"_id": cid}
        )
    finally:
        await client.close()


async def test_check_on_a_fresh_customer_settles(isolated_system: System, clients: Clients) -> None:
    await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[2]))
    )
    assert await settled(isolated_system) == 0


# --- the admin service: who may call it, and what it does --------------------------------


async def test_admin_service_is_the_operators_alone_on_its_own_port(
    isolated_system: System,
) -> None:
    """Staff run the shop, not the system: a staff token neither repairs nor rebuilds. The
    public port does not serve the admin service at all, whatever the token, even right after
    the admin port served the same method."""
    issuer = issuer_of(isolated_system.stack)
    operator = issuer.role("operator", subject="operator-e2e")
    refused = {
        None: grpc.StatusCode.UNAUTHENTICATED,
        issuer.customer(unique("cust")): grpc.StatusCode.PERMISSION_DENIED,
        issuer.role("warehouse"): grpc.StatusCode.PERMISSION_DENIED,
        issuer.role("staff"): grpc.StatusCode.PERMISSION_DENIED,
    }
    request = admin_pb2.RepublishRequest(ids=["no-such-id"])
    for service in topology.SYSTEM.names:
        async with grpc.aio.insecure_channel(isolated_system.admin_target(service)) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            for token, code in refused.items():
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await stub.Republish(request, metadata=bearer(token), timeout=10)
                assert denied.value.code() == code, (service, code)
            reply = await stub.Republish(request, metadata=bearer(operator), timeout=10)
            assert list(reply.not_found) == ["no-such-id"], service
            with pytest.raises(grpc.aio.AioRpcError) as empty:
                await stub.Republish(admin_pb2.RepublishRequest(), metadata=bearer(operator))
            assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.ReplayTopic(
                    admin_pb2.ReplayTopicRequest(topic="no.such.topic"),
                    metadata=bearer(operator),
                )
            assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "topic" in (unknown.value.details() or "")
        # after the admin port served it (a handler kept by the admin server's interceptor
        # must never answer on the public server)
        async with grpc.aio.insecure_channel(isolated_system.target(service)) as public:
            with pytest.raises(grpc.aio.AioRpcError) as absent:
                await admin_pb2_grpc.AdminServiceStub(public).Republish(
                    request, metadata=bearer(operator), timeout=10
                )
            assert absent.value.code() == grpc.StatusCode.UNIMPLEMENTED, service


async def test_envoy_does_not_route_the_admin_service(running_system: System) -> None:
    issuer = issuer_of(running_system.stack)
    staff = issuer.role("staff", subject="staff-e2e")
    operator = issuer.role("operator", subject="operator-e2e")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_system.ports.envoy}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as edge:
            await admin_pb2_grpc.AdminServiceStub(channel).Republish(
                admin_pb2.RepublishRequest(ids=["x"]), metadata=bearer(operator), timeout=10
            )
    assert edge.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
    # The same call reaches the public service behind the same route table.
    public = await call_grpc_via_envoy(
        running_system,
        "/storefront.accounts.v1.AccountsService/ListCustomers",
        accounts_pb2.ListCustomersRequest(page_size=1),
        staff,
    )
    assert public.code == grpc.StatusCode.OK


def bearer(token: str | None) -> list[tuple[str, str]] | None:
    return [("authorization", f"Bearer {token}")] if token else None


async def test_dlq_replay_in_place_cannot_undo_a_newer_event(
    isolated_system: System, clients: Clients
) -> None:
    """Finding 3: appending a parked v1 to the topic put it after v2; applied in place by the
    consumer's own version-guarded handler it is stale, and the copy stays at v2. "Replay
    everything" then records its progress, so a second run has nothing left to do."""
    cid = unique("inplace")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    copies = client[isolated_system.database("orders")][topology.CUSTOMER_COPIES]
    producer = isolated_system.stack.kafka.producer(acks="all")
    await producer.start()
    try:
        value, headers = encode(
            customer_changed(cid, 2, "newer@example.com"),
            source=names.source(topology.ACCOUNTS),
            key=cid,
        )
        await producer.send_and_wait(
            topology.CUSTOMER_CHANGES, value, key=cid.encode(), headers=headers
        )
        await producer.stop()

        async def copy_now() -> tuple[object, object] | None:
            doc = await copies.find_one({"_id": cid})
            return None if doc is None else (doc["version"], doc["contact"]["email"])

        assert await eventually(copy_now, what="v2 applied") == (2, "newer@example.com")
        event = customer_changed(cid, 1, "older@example.com")
        older = await park(isolated_system.stack.kafka, event, topology.CUSTOMER_CHANGES, cid)
        lines: list[str] = []
        assert await replays.dlq_replay(clients, topology.CUSTOMER_CHANGES, [], lines.append) == 0
        assert f"[dlq] {older}: stale" in lines, lines
        assert await copy_now() == (2, "newer@example.com")
        lines.clear()
        assert await replays.dlq_replay(clients, topology.CUSTOMER_CHANGES, [], lines.append) == 0
        assert not any(older in line for line in lines), lines
        listed: list[str] = []
        await replays.dlq_list(
            endpoints_of(isolated_system), topology.CUSTOMER_CHANGES, listed.append
        )
        row = next(line for line in listed if older in line)
        assert " yes " in row, row  # shown as replayed
    finally:
        await producer.stop()
        # Accounts never had these customers: this one, and any an earlier test replayed by id
        # (a replay by id leaves "replay everything" to apply it again, harmlessly).
        await copies.delete_many({"_id": {"$regex": "^(inplace|parked)-"}})
        await client.close()


async def test_repair_writes_nothing_itself_when_the_owner_is_unreachable(
    isolated_system: System, clients: Clients
) -> None:
    """Finding 8: the repair is the owner's use case. With the owner unreachable the repair
    fails loudly and the CLI has written nothing (no outbox entry appears)."""
    created = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[1]))
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(isolated_system.stack.mongodb_uri)
    try:
        copies = client[isolated_system.database("orders")][topology.CUSTOMER_COPIES]
        damaged = await eventually(
            lambda: copies.find_one({"_id": created.id}), what="orders' copy"
        )
        assert await settled(isolated_system) == 0
        await copies.update_one({"_id": damaged["_id"]}, {"$set": {"name.given_name": "Mallory"}})
        accounts = client[isolated_system.database("accounts")][topology.CUSTOMERS]
        # The relay may drain the outbox (and clear its pending mark) meanwhile; nothing may
        # be added to it.
        state = {PENDING: 0}
        before = await accounts.find_one({"_id": damaged["_id"]}, state)
        declared = topology.SYSTEM.names
        nowhere_ports = free_ports(len(CLIENT_SERVICES) + len(declared))
        nowhere = Clients.connect(
            *(f"127.0.0.1:{p}" for p in nowhere_ports[: len(CLIENT_SERVICES)]),
            tokens=tokens_of(isolated_system.stack),
            admin={
                s: f"127.0.0.1:{p}"
                for s, p in zip(declared, nowhere_ports[len(CLIENT_SERVICES) :], strict=True)
            },
        )
        try:
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await check.check(
                    endpoints_of(isolated_system), repair=True, wait=0, log=print, clients=nowhere
                )
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await nowhere.close()
        after = await accounts.find_one({"_id": damaged["_id"]}, state)
        assert before is not None and after is not None
        queued = {e["id"] for e in before.pop(OUTBOX, [])}
        assert {e["id"] for e in after.pop(OUTBOX, [])} <= queued
        assert after == before
        # The owner itself repairs it.
        assert await settled_after_repair(isolated_system) == 0
    finally:
        await client.close()


async def settled_after_repair(isolated: System) -> int:
    clients = isolated.connect()
    try:
        return await check.check(
            endpoints_of(isolated), repair=True, wait=30, log=print, clients=clients
        )
    finally:
        await clients.close()


async def test_each_owner_lists_summaries_of_what_it_declares(clients: Clients) -> None:
    """The admin service answers for the collections its service declares, a page at a time,
    in id order; another name is INVALID_ARGUMENT."""
    await run_demo(clients, lambda _: None)
    accounts = clients.admin[topology.ACCOUNTS]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await accounts.ListSummaries(
            admin_pb2.ListSummariesRequest(collection=topology.CUSTOMER_COPIES)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = admin_pb2.ListSummariesRequest(collection=topology.CUSTOMERS, page_size=2)
    ids: list[str] = []
    while True:
        page = await accounts.ListSummaries(request)
        assert len(page.summaries) <= 2
        ids += [s.id for s in page.summaries]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert ids == sorted(ids) and len(ids) == len(set(ids)) >= len(PEOPLE)

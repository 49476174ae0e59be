"""Fixtures for the bad-input fuzz tests: the running system (the e2e tests' fixture),
blocking gRPC stubs, and a `Harness` that

- snapshots what the system holds: the document count of every collection of every service,
  the records on every event topic, and the documents a request names (with the ids of the
  outbox entries they carry), so a test can say "this rejected request stored nothing and
  published nothing";
- before a snapshot, waits until what earlier, accepted requests set off has settled (their
  aggregates' outboxes sent, every consumer group caught up), so late events are not
  mistaken for something the request under test stored;
- finds or makes customers, orders and fulfillments in a wanted state, so the targeted
  strategies can start from requests that are valid all the way down.

Everything here is synchronous (blocking gRPC, pymongo's MongoClient): Hypothesis drives
plain functions, and the Kafka look-ups run on a private event loop thread.

It uses the session's `running_system` (tests/conftest.py), the same one the e2e tests use.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from pymongo import MongoClient
from pymongo.errors import OperationFailure

import topology
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from storefront_cli.clients import TokenFor, sync_channel
from storefront_cli.demo import PEOPLE, customer_draft, order_draft
from svckit import names
from svckit.kafka import KafkaConnection
from svckit.outbox import OUTBOX, PENDING
from tests.support import System, partition_ids, tokens_of

T = TypeVar("T")
Status = common_pb2.OrderStatus

EXAMPLES = int(os.environ.get("STOREFRONT_FUZZ_EXAMPLES", "60"))
"""Hypothesis examples per targeted test (generic and REST tests run half as many, at least
one); raise it (e.g. 1000) for a long fuzzing run."""

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # the system's state moves on, so replaying stored examples proves little
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

COLLECTIONS: dict[str, tuple[str, ...]] = {s.name: tuple(s.collections) for s in topology.SYSTEM}
"""Every collection each service writes (its topology entry)."""
OUTBOXES = {s.name: s.aggregate for s in topology.SYSTEM.publishers}

SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        # A request that crashes or hangs a server shows up as one of these.
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
CALL_TIMEOUT = 20.0
ID_FIELDS = ("id", "customer_id", "order_id")
HALF_SETTINGS = settings(FUZZ_SETTINGS, max_examples=max(1, EXAMPLES // 2))

REPORT: dict[str, dict[str, int]] = {}
"""Outcomes per fuzz test (status code or HTTP status -> count), printed after the run."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("fuzz: outcomes per test")
    total = 0
    for name, seen in REPORT.items():
        n = sum(seen.values())
        total += n
        terminalreporter.write_line(f"{name}: {n} requests {dict(sorted(seen.items()))}")
    terminalreporter.write_line(f"total: {total} fuzzed requests")


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    response: Message | None


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    """Documents per collection, and records per event topic (end offsets summed)."""
    docs: dict[str, Any]
    """The named documents without `_outbox`, None where there is no such document."""
    outboxes: dict[str, set[str]]
    """The ids of the outbox entries each named document holds."""

    def diff(self, later: Snapshot) -> list[str]:
        """What `later` shows changed. Only the relay may touch outboxes, and only to empty
        them, so an entry that was not there before is a change too."""
        out = [
            f"{name}: {n} -> {later.counts.get(name)}"
            for name, n in self.counts.items()
            if later.counts.get(name) != n
        ]
        for key, doc in self.docs.items():
            if later.docs.get(key) != doc:
                out.append(f"{key}: {doc!r} -> {later.docs.get(key)!r}")
            added = later.outboxes.get(key, set()) - self.outboxes.get(key, set())
            if added:
                out.append(f"{key}: new outbox entries {sorted(added)}")
        return out


class KafkaLag:
    """Consumer-group lag, on a private event loop thread (aiokafka is asyncio-only)."""

    def __init__(self, kafka: KafkaConnection, groups: dict[str, tuple[str, ...]]) -> None:
        self._kafka = kafka
        self._groups = groups
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._topic_partitions: list[TopicPartition] = []
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._run(self._start())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    async def _start(self) -> None:
        self._admin = self._kafka.admin()
        await self._admin.start()
        self._consumer = self._kafka.consumer(group_id=None, enable_auto_commit=False)
        await self._consumer.start()
        for group, topics in self._groups.items():
            self._partitions[group] = [
                TopicPartition(t, p) for t in topics for p in await partition_ids(self._kafka, t)
            ]
        self._topic_partitions = [
            TopicPartition(t, p)
            for t in topology.SYSTEM.all_topics
            for p in await partition_ids(self._kafka, t)
        ]

    async def _lag(self) -> int:
        assert self._admin is not None and self._consumer is not None
        total = 0
        for group, partitions in self._partitions.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            ends = await self._consumer.end_offsets(partitions)
            for tp in partitions:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += max(0, ends[tp] - done)
        return total

    def lag(self) -> int:
        return self._run(self._lag())

    async def _ends(self) -> dict[str, int]:
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(self._topic_partitions)
        totals: dict[str, int] = {}
        for tp, end in ends.items():
            totals[f"topic {tp.topic}"] = totals.get(f"topic {tp.topic}", 0) + end
        return totals

    def records(self) -> dict[str, int]:
        """Records ever written to each event topic (their partitions' end offsets summed)."""
        return self._run(self._ends())

    async def _stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    def close(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def ids_in(message: Message | None) -> list[str]:
    """The aggregate ids a request or response names (`id`, `customer_id`, `order_id`, also
    inside a `customer`), which is where an accepted request's outbox entries are."""
    if message is None:
        return []
    fields = message.DESCRIPTOR.fields_by_name
    found = [str(getattr(message, name)) for name in ID_FIELDS if name in fields]
    if "customer" in fields and message.HasField("customer"):
        found += ids_in(message.customer)  # type: ignore[attr-defined]
    return found


@dataclass
class Harness:
    system: System
    mongo: MongoClient[dict[str, Any]]
    kafka: KafkaLag
    channels: list[grpc.Channel]
    tokens: TokenFor
    """Each call's token: a principal the policy allows (tests.support.tokens_of)."""
    accounts: accounts_pb2_grpc.AccountsServiceStub
    orders: orders_pb2_grpc.OrdersServiceStub
    fulfillment: fulfillment_pb2_grpc.FulfillmentServiceStub
    customers: list[str] = field(default_factory=list)
    """Customers created for the fuzzing and known to orders (copies propagated)."""
    dirty: bool = True
    """An accepted request may still be propagating: wait for quiet before a snapshot."""
    touched: dict[str, set[str]] = field(default_factory=dict)
    """Per service, aggregates accepted requests changed, whose outbox may not be sent yet."""

    # --- calls ---------------------------------------------------------------------------

    def stub(self, service: str) -> Any:
        return getattr(self, service)

    def call(self, service: str, method: str, request: Message) -> Outcome:
        try:
            response = getattr(self.stub(service), method)(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code()
            return Outcome(code, exc.details() or "", None)
        self.accepted(service, *ids_in(request), *ids_in(response))
        return Outcome(grpc.StatusCode.OK, "", response)

    def accepted(self, service: str, *ids: str) -> None:
        """Note an accepted request: its events may still be on their way."""
        self.dirty = True
        self.touched.setdefault(service, set()).update(i for i in ids if i)

    def ok(self, service: str, method: str, request: Message) -> Any:
        """A set-up call that must succeed."""
        outcome = self.call(service, method, request)
        assert outcome.code == grpc.StatusCode.OK, f"{method} failed: {outcome}"
        return outcome.response

    # --- state ---------------------------------------------------------------------------

    def db(self, service: str) -> Any:
        return self.mongo[self.system.database(service)]

    def count(self, service: str, name: str) -> int:
        """Exact document count. collStats is O(1) on FerretDB, where count_documents scans
        every document (tens of milliseconds once a run has stored a few hundred)."""
        try:
            return int(self.db(service).command("collStats", name)["count"])
        except OperationFailure:  # e.g. a MongoDB without collStats
            return int(self.db(service)[name].count_documents({}))

    def snapshot(self, targets: dict[str, list[str]] | None = None) -> Snapshot:
        """Counts of every collection of every service and of every event topic, plus the
        documents named in `targets` (service -> ids, looked up in each of its collections)."""
        counts: dict[str, int] = {}
        docs: dict[str, Any] = {}
        outboxes: dict[str, set[str]] = {}
        for service, collections in COLLECTIONS.items():
            for name in collections:
                counts[f"{service}/{name}"] = self.count(service, name)
                for doc_id in (targets or {}).get(service, []):
                    key = f"{service}/{name}/{doc_id!r}"
                    # No service stores text with NUL (svckit/text.py), and PostgreSQL
                    # under FerretDB cannot even be asked for it.
                    unstorable = isinstance(doc_id, str) and "\x00" in doc_id
                    doc = None if unstorable else self.db(service)[name].find_one({"_id": doc_id})
                    entries = doc.pop(OUTBOX, []) if doc is not None else []
                    if doc is not None:
                        doc.pop(PENDING, None)  # the relay's marker, cleared asynchronously
                    docs[key] = doc
                    outboxes[key] = {str(e.get("id")) for e in entries}
        counts.update(self.kafka.records())
        return Snapshot(counts, docs, outboxes)

    def quiet(self, timeout: float = 30.0) -> None:
        """Wait until what accepted requests changed is published and consumed: their
        aggregates' outboxes are empty and every consumer group has caught up."""
        deadline = time.monotonic() + timeout
        while True:
            for service, ids in self.touched.items():
                outbox = self.db(service)[OUTBOXES[service]]
                for doc_id in list(ids):
                    if outbox.find_one({"_id": doc_id, f"{OUTBOX}.id": {"$exists": True}}) is None:
                        ids.discard(doc_id)
            pending = sum(len(ids) for ids in self.touched.values())
            if pending == 0 and self.kafka.lag() == 0:
                self.dirty = False
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not quiet after {timeout}s: unsent outboxes {self.touched}")
            time.sleep(0.01)

    def changes_since(
        self, before: Snapshot, targets: dict[str, list[str]] | None = None
    ) -> list[str]:
        """What changed since `before`, confirmed: counts come from FerretDB's collStats,
        which on PostgreSQL is ANALYZE's live-row count and can be off by one while another
        write (the relay's sweep clearing a mark) is in flight; a real change persists, so
        a difference is only reported if it is still there a moment later."""
        changed = before.diff(self.snapshot(targets))
        for _ in range(5):
            if not changed:
                break
            time.sleep(0.3)
            changed = before.diff(self.snapshot(targets))
        return changed

    def before(self, targets: dict[str, list[str]] | None = None) -> Snapshot:
        if self.dirty:
            self.quiet()
        return self.snapshot(targets)

    def eventually(self, probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = probe()
                if found is not None:
                    return found
            except grpc.RpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ):
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    # --- resources in a wanted state -------------------------------------------------------

    def new_customer(self, person: int = 0) -> accounts_pb2.Customer:
        request = accounts_pb2.CreateCustomerRequest(
            customer=customer_draft(PEOPLE[person % len(PEOPLE)])
        )
        customer: accounts_pb2.Customer = self.ok("accounts", "CreateCustomer", request)
        return customer

    def get_customer(self, customer_id: str) -> accounts_pb2.Customer | None:
        outcome = self.call(
            "accounts", "GetCustomer", accounts_pb2.GetCustomerRequest(customer_id=customer_id)
        )
        return outcome.response  # type: ignore[return-value]

    def known_customer(self, index: int) -> str:
        """A customer that orders knows, from a small pool made once."""
        return self.customers[index % len(self.customers)]

    def new_order(
        self, customer_index: int = 0, lines: tuple[tuple[int, int], ...] = ((0, 1),)
    ) -> str:
        request = orders_pb2.CreateOrderRequest(
            customer_id=self.known_customer(customer_index), order=order_draft(*lines)
        )
        outcome = self.call("orders", "CreateOrder", request)
        if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # That customer holds its quota of open orders: a fresh one takes its place.
            slot = customer_index % len(self.customers)
            self.customers[slot] = self.customer_known_to_orders(slot)
            request.customer_id = self.customers[slot]
            outcome = self.call("orders", "CreateOrder", request)
        assert outcome.code == grpc.StatusCode.OK, f"CreateOrder failed: {outcome}"
        assert isinstance(outcome.response, orders_pb2.Order)
        return outcome.response.order_id

    def customer_known_to_orders(self, person: int) -> str:
        """A new customer, once orders has its copy."""
        customer = self.new_customer(person)
        get = orders_pb2.GetCustomerOrdersRequest(customer_id=customer.id)
        self.eventually(
            functools.partial(self.orders.GetCustomerOrders, get, timeout=CALL_TIMEOUT),
            what=f"orders' copy of {customer.id}",
        )
        return str(customer.id)

    def order_in(self, status: int) -> str:
        """An order that orders holds in `status` (CREATED ones are always fresh)."""
        if status != Status.ORDER_STATUS_CREATED:
            page = self.ok(
                "orders",
                "ListOrders",
                orders_pb2.ListOrdersRequest(status=Status.ValueType(status), page_size=1),
            )
            if page.orders:
                return str(page.orders[0].order_id)
        order_id = self.new_order()
        if status == Status.ORDER_STATUS_CREATED:
            return order_id
        if status == Status.ORDER_STATUS_REJECTED:
            self.ok("orders", "RejectOrder", orders_pb2.RejectOrderRequest(order_id=order_id))
            return order_id
        if status == Status.ORDER_STATUS_CANCELLED:
            self.ok("orders", "CancelOrder", orders_pb2.CancelOrderRequest(order_id=order_id))
            return order_id
        self.ok("orders", "ApproveOrder", orders_pb2.ApproveOrderRequest(order_id=order_id))
        if status != Status.ORDER_STATUS_APPROVED:
            self._walk_fulfillment(order_id, status)
        get = orders_pb2.GetOrderRequest(order_id=order_id)
        self.eventually(
            lambda: (
                o
                if (o := self.orders.GetOrder(get, timeout=CALL_TIMEOUT)).status == status
                else None
            ),
            what=f"order {order_id} {Status.Name(Status.ValueType(status))}",
        )
        return order_id

    def fulfillment_in(self, status: int) -> str:
        """A fulfillment that fulfillment holds in `status`."""
        page = self.ok(
            "fulfillment",
            "ListFulfillments",
            fulfillment_pb2.ListFulfillmentsRequest(status=Status.ValueType(status), page_size=1),
        )
        if page.fulfillments:
            return str(page.fulfillments[0].order_id)
        order_id = self.new_order()
        self.ok("orders", "ApproveOrder", orders_pb2.ApproveOrderRequest(order_id=order_id))
        if status == Status.ORDER_STATUS_CANCELLED:
            self._fulfillment_at(order_id, Status.ORDER_STATUS_APPROVED)
            self.ok("orders", "CancelOrder", orders_pb2.CancelOrderRequest(order_id=order_id))
            self._fulfillment_at(order_id, Status.ORDER_STATUS_CANCELLED)
        elif status == Status.ORDER_STATUS_APPROVED:
            self._fulfillment_at(order_id, status)
        else:
            self._walk_fulfillment(order_id, status)
        return order_id

    def _fulfillment_at(self, order_id: str, status: int) -> None:
        get = fulfillment_pb2.GetFulfillmentRequest(order_id=order_id)
        self.eventually(
            lambda: (
                f
                if (f := self.fulfillment.GetFulfillment(get, timeout=CALL_TIMEOUT)).status
                == status
                else None
            ),
            what=f"fulfillment {order_id} {Status.Name(Status.ValueType(status))}",
        )

    def _walk_fulfillment(self, order_id: str, status: int) -> None:
        self._fulfillment_at(order_id, Status.ORDER_STATUS_APPROVED)
        steps = [
            (
                Status.ORDER_STATUS_PROCESSING,
                "ProcessFulfillment",
                fulfillment_pb2.ProcessFulfillmentRequest,
            ),
            (
                Status.ORDER_STATUS_SHIPPED,
                "ShipFulfillment",
                fulfillment_pb2.ShipFulfillmentRequest,
            ),
            (
                Status.ORDER_STATUS_IN_TRANSIT,
                "MarkFulfillmentInTransit",
                fulfillment_pb2.MarkFulfillmentInTransitRequest,
            ),
            (
                Status.ORDER_STATUS_RECEIVED,
                "ConfirmFulfillmentReceived",
                fulfillment_pb2.ConfirmFulfillmentReceivedRequest,
            ),
        ]
        for reached, method, request in steps:
            self.ok("fulfillment", method, request(order_id=order_id))
            if reached == status:
                return


@pytest.fixture(scope="session")
def harness(running_system: System) -> Iterator[Harness]:
    tokens = tokens_of(running_system.stack)
    channels = [sync_channel(running_system.target(s), tokens) for s in COLLECTIONS]
    groups = {
        names.consumer_group(s, running_system.db_prefix): topics
        for s, topics in ((s.name, s.consumes) for s in topology.SYSTEM.consumers)
    }
    kafka = KafkaLag(running_system.stack.kafka, groups)
    mongo: MongoClient[dict[str, Any]] = MongoClient(
        running_system.stack.mongodb_uri, serverSelectionTimeoutMS=10_000
    )
    h = Harness(
        running_system,
        mongo,
        kafka,
        channels,
        tokens,
        accounts_pb2_grpc.AccountsServiceStub(channels[0]),
        orders_pb2_grpc.OrdersServiceStub(channels[1]),
        fulfillment_pb2_grpc.FulfillmentServiceStub(channels[2]),
    )
    try:
        for i in range(len(PEOPLE)):
            h.customers.append(h.customer_known_to_orders(i))
        yield h
    finally:
        kafka.close()
        mongo.close()
        for channel in channels:
            channel.close()


def unique_id(prefix: str = "fz") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"

"""The metrics move by exactly what a flow did, scraped over HTTP as Prometheus would.

accounts and orders run in-process. prometheus_client's registry is process-global, so
every assertion is on the difference between a scrape before and one after the flow, and
the "before" is taken only once orders' new consumer group has caught up with the topic
history earlier tests left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import RecordMetadata
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

import topology
from accounts_svc.main import build as build_accounts
from orders_svc.main import build as build_orders
from stack.embedded import EmbeddedStack, free_ports
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc, events_pb2
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from storefront_cli.clients import channel
from storefront_cli.demo import PEOPLE, customer_draft
from storefront_cli.offsets import KafkaOffsets, consumer_lag
from svckit import metrics
from svckit.app import ServiceApp
from svckit.envelope import Headers, encode
from svckit.kafka import EventProducer, KafkaConnection
from svckit.outbox import OUTBOX, PENDING, OutboxRelay, outbox_entry
from tests.support import eventually, read_topic, running, settings_for, tokens_of

pytestmark = pytest.mark.integration

TOPIC = topology.CUSTOMER_CHANGES
CHANGED = "storefront.accounts.v1.CustomerChanged"
ACCOUNTS_API = "storefront.accounts.v1.AccountsService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_url() -> str:
    """The process's /metrics, served as ServiceApp.run serves it (the server lives on)."""
    [port] = free_ports(1)
    metrics.serve(port, addr="127.0.0.1")
    return f"http://127.0.0.1:{port}/metrics"


async def scrape(url: str) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {ls: v for (n, ls), v in samples.items() if n == name and want <= ls}


@pytest.fixture
def databases(stack: EmbeddedStack) -> Iterator[dict[str, str]]:
    prefix = f"metrics_{uuid.uuid4().hex[:10]}"
    names = {s: f"{prefix}_{s}" for s in ("accounts", "orders")}
    yield names
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        for name in names.values():
            client.drop_database(name)


@pytest.fixture
async def apps(
    stack: EmbeddedStack, databases: dict[str, str]
) -> AsyncIterator[dict[str, ServiceApp]]:
    async with contextlib.AsyncExitStack() as stack_of_apps:
        yield {
            "accounts": await stack_of_apps.enter_async_context(
                running(build_accounts, settings_for(stack, "accounts", databases["accounts"]))
            ),
            "orders": await stack_of_apps.enter_async_context(
                running(build_orders, settings_for(stack, "orders", databases["orders"]))
            ),
        }


async def caught_up(kafka: KafkaConnection, group: str) -> None:
    """Until the group has committed everything on its topics (the history included)."""

    async def lag_is_zero() -> bool | None:
        async with KafkaOffsets(kafka, 10.0) as offsets:
            rows = await consumer_lag(
                offsets, {group: topology.SYSTEM.service(topology.ORDERS).consumes}
            )
        return True if sum(r.lag for r in rows) == 0 else None

    await eventually(lag_is_zero, timeout=120, what=f"{group} to catch up")


async def test_a_flow_moves_each_counter_by_what_happened(
    stack: EmbeddedStack, apps: dict[str, ServiceApp], metrics_url: str
) -> None:
    group = apps["orders"].settings.consumer_group
    await caught_up(stack.kafka, group)
    before = await scrape(metrics_url)

    async with (
        channel(f"127.0.0.1:{apps['accounts'].bound_port}", tokens_of(stack)) as a,
        channel(f"127.0.0.1:{apps['orders'].bound_port}", tokens_of(stack)) as o,
    ):
        accounts = accounts_pb2_grpc.AccountsServiceStub(a)
        orders = orders_pb2_grpc.OrdersServiceStub(o)
        created = await accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]))
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await accounts.CreateCustomer(accounts_pb2.CreateCustomerRequest())
        get_copy = orders_pb2.GetCustomerOrdersRequest(customer_id=created.id)
        await eventually(lambda: orders.GetCustomerOrders(get_copy), what="orders' copy")

    # The same event again (a redelivery), then a record nobody can decode.
    [event] = await read_topic(stack.kafka, TOPIC, [CHANGED], key=created.id)
    again, headers = encode(
        event.message, source=event.source, key=created.id, event_id=event.id, time=event.time
    )
    await send(stack.kafka, created.id, again, headers)
    await send(stack.kafka, created.id, b"\x00garbage", [])
    await caught_up(stack.kafka, group)
    after = await scrape(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    create = {"service": "accounts", "grpc_service": ACCOUNTS_API, "grpc_method": "CreateCustomer"}
    assert delta("grpc_server_started_total", grpc_type="unary", **create) == 2
    assert delta("grpc_server_handled_total", grpc_code="OK", **create) == 1
    assert delta("grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **create) == 1
    assert delta("grpc_server_handling_seconds_count", **create) == 2
    assert delta("grpc_server_started_total", service="orders") >= 1  # the copy was polled

    assert delta("storefront_events_published_total", service="accounts", topic=TOPIC) == 1
    assert delta("storefront_events_published_total", type=CHANGED, service="accounts") == 1
    consumed = {"service": "orders", "topic": TOPIC}
    assert (
        delta("storefront_events_consumed_total", outcome="applied", type=CHANGED, **consumed) == 1
    )
    assert delta("storefront_events_consumed_total", outcome="duplicate", **consumed) == 1
    assert delta("storefront_events_consumed_total", outcome="dead_lettered", **consumed) == 1
    assert delta("storefront_events_consumed_total", outcome="stale", **consumed) == 0
    assert delta("storefront_event_propagation_seconds_count", type=CHANGED, **consumed) == 1

    lags = series(after, "storefront_consumer_lag", service="orders")
    by_topic = {(dict(ls)["topic"], dict(ls)["partition"]) for ls in lags}
    assert {
        (t, p) for t in topology.SYSTEM.service(topology.ORDERS).consumes for p in "012"
    } <= by_topic
    assert all(v == 0 for v in lags.values())  # caught up

    async def outbox_drained() -> bool | None:
        now = await scrape(metrics_url)
        labels = {"service": "accounts", "collection": topology.CUSTOMERS}
        pending = series(now, "storefront_outbox_pending", **labels)
        if pending and sum(pending.values()) == 0:
            return True
        return None

    await eventually(outbox_drained, timeout=30, what="accounts' outbox gauge at 0")


async def send(kafka: KafkaConnection, key: str, payload: bytes, headers: Headers) -> None:
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, payload, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


class UnreachableBroker(EventProducer):
    """Every send fails at once, as during a broker outage (without waiting for timeouts)."""

    async def send(
        self, topic: str, key: str, value: bytes, headers: Headers
    ) -> asyncio.Future[RecordMetadata]:
        raise KafkaConnectionError("broker unreachable (test)")


async def test_outbox_gauges_show_the_backlog_while_kafka_is_down(
    mongo_db: AsyncDatabase[dict[str, Any]],
    metrics_url: str,
) -> None:
    collection = mongo_db["metrics.outbox"]
    now = datetime.now(UTC)
    event = events_pb2.CustomerChanged(customer_id="c", version=1)

    def entry(age_s: float, seq: int) -> dict[str, object]:
        created = now - timedelta(seconds=age_s)
        return outbox_entry(TOPIC, "c", event, source="//t", seq=seq, now=created)

    await collection.insert_many(
        [
            {"_id": "a", OUTBOX: [entry(30, 1), entry(5, 2)], PENDING: True},
            {"_id": "b", OUTBOX: [entry(1, 1)], PENDING: True},
        ]
    )
    service = f"test-{uuid.uuid4().hex[:6]}"  # a label no other test touches
    relay = OutboxRelay(
        collection, UnreachableBroker(KafkaConnection("127.0.0.1:1"), service), service=service
    )
    await relay.start()
    try:

        async def gauges() -> tuple[float, float] | None:
            samples = await scrape(metrics_url)
            labels = {"service": service, "collection": "metrics.outbox"}
            pending = value(samples, "storefront_outbox_pending", **labels)
            age = value(samples, "storefront_outbox_oldest_age_seconds", **labels)
            return (pending, age) if pending else None

        pending, age = await eventually(gauges, timeout=30, what="outbox gauges")
    finally:
        await relay.stop()
    assert pending == 3
    assert 30 <= age < 120

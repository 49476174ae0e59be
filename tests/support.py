"""Helpers shared by integration, end-to-end and fault tests (no fixtures here)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from aiokafka import ConsumerRecord
from google.api import annotations_pb2
from google.protobuf import empty_pb2, message_factory
from google.protobuf.message import Message
from pymongo import MongoClient
from pymongo.collection import Collection

import topology
from stack.embedded import EmbeddedStack
from stack.issuer import LocalIssuer
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront.catalog.v1 import catalog_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli import demo, system
from storefront_cli.clients import (
    CLIENT_SERVICES,
    Clients,
    TokenFor,
    acting_as_needed,
    eventually,  # noqa: F401 - re-exported for tests
)
from svckit import names
from svckit.app import ServiceApp
from svckit.authz import set_field
from svckit.envelope import Envelope, decode, encode, format_time
from svckit.kafka import KafkaConnection
from svckit.names import consumer_group
from svckit.replay import TopicReader, partitions_of
from svckit.settings import Settings


async def holds(condition: bool) -> bool | None:
    """`eventually`'s probe for a plain condition: `eventually(lambda: holds(x > 1), ...)`."""
    return True if condition else None


def ensure_tools(*components: str) -> None:
    """Install what a test needs (stack.tools components, cheap when current), so a missing
    tool is installed rather than skipped; a test skips only when the install itself cannot
    be done here (e.g. apt-get as a non-root user), and says why."""
    from stack import tools

    try:
        tools.ensure(components, log=lambda _: None)
    except tools.ToolError as exc:
        pytest.skip(f"cannot install {', '.join(components)} here: {exc}")


def issuer_of(stack: EmbeddedStack) -> LocalIssuer:
    """The test stack's token issuer (its run dir's key), which every service trusts."""
    return system.local_issuer(stack)


def tokens_of(stack: EmbeddedStack) -> TokenFor:
    """Per call, a token of a principal the policy allows (storefront_cli.clients)."""
    return acting_as_needed(issuer_of(stack))


def settings_for(stack: EmbeddedStack, service: str, database: str, **overrides: Any) -> Settings:
    """Settings for an in-process service on the test stack: own database and group, its own
    Kafka identity, port 0, trusting the stack's issuer."""
    base = Settings.from_env(service, grpc_port=0, metrics_port=0, admin_port=0)
    return dataclasses.replace(
        base,
        grpc_host="127.0.0.1",
        grpc_port=0,
        admin_port=0,
        metrics_port=0,
        mongodb_uri=stack.mongodb_uri,
        mongodb_database=database,
        kafka=stack.kafka_as(service),
        consumer_group=consumer_group(service, database),
        shutdown_grace_seconds=1.0,
        auth=issuer_of(stack).config(),
        **overrides,
    )


@asynccontextmanager
async def running(
    build: Callable[[Settings], ServiceApp], settings: Settings
) -> AsyncIterator[ServiceApp]:
    app = build(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@asynccontextmanager
async def accounts_served(
    servicer: Any, interceptor: grpc.aio.ServerInterceptor
) -> AsyncIterator[grpc.aio.Channel]:
    """A bare grpc.aio server of `servicer` (an AccountsService) behind `interceptor`, on a
    free port, and a channel to it (unit tests of the server's plumbing)."""
    server = grpc.aio.server(interceptors=[interceptor])
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


async def read_raw(kafka: KafkaConnection, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` from offset 0 to the current end, undecoded."""
    async with TopicReader(kafka, [topic]) as reader:
        return [record async for record in reader.records()]


async def read_topic(
    kafka: KafkaConnection, topic: str, accepted_types: list[str], *, key: str | None = None
) -> list[Envelope]:
    """Every event on `topic` from offset 0 to the current end (optionally one key's)."""
    return [
        decode(r.value, r.headers, key=r.key, accepted_types=accepted_types)
        for r in await read_raw(kafka, topic)
        if key is None or r.key == key.encode()
    ]


async def partition_ids(kafka: KafkaConnection, topic: str) -> list[int]:
    return sorted(tp.partition for tp in await partitions_of(kafka, topic))


async def park(
    kafka: KafkaConnection,
    message: Message,
    topic: str,
    key: str,
    error: str = "ServerSelectionTimeoutError: database unreachable",
) -> str:
    """Put `message` in the DLQ of `topic`'s consumer as it parks an event it could not apply
    (its `dlq_*` headers); the parked record's id (`storefront dlq list`)."""
    [consumer] = topology.SYSTEM.consumers_of(topic)
    queue = consumer.dlq(topic)
    source = names.source(topic.split(".", 1)[0])  # the producing service's
    value, headers = encode(message, source=source, key=key)
    parked_headers = headers + [
        ("dlq_error", error.encode()),
        ("dlq_topic", topic.encode()),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"0"),
        ("dlq_attempts", b"5"),
        ("dlq_time", format_time(datetime.now(UTC)).encode()),
    ]
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(queue, value, key=key.encode(), headers=parked_headers)
    finally:
        await producer.stop()
    return f"{queue}:{meta.partition}:{meta.offset}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class System:
    stack: EmbeddedStack
    ports: system.SystemPorts
    db_prefix: str

    def target(self, service: str) -> str:
        return system.grpc_target(self.ports, service)

    def admin_target(self, service: str) -> str:
        return system.admin_target(self.ports, service)

    def connect(self) -> Clients:
        """Clients of its services and their admin services, each call with a token the
        policy allows (the operator's for the admin service)."""
        return Clients.connect(
            *(self.target(s) for s in CLIENT_SERVICES),
            tokens=tokens_of(self.stack),
            admin={s: self.admin_target(s) for s in topology.SYSTEM.names},
        )

    @property
    def envoy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.envoy}"

    def database(self, service: str) -> str:
        return f"{self.db_prefix}{service}"


def load_catalog(s: System) -> None:
    """The demo catalog in a started system, and in orders' copy of it, so tests can place
    orders with `storefront_cli.demo.order_draft` at once."""

    async def load() -> None:
        c = Clients.connect(*(s.target(n) for n in CLIENT_SERVICES), tokens=tokens_of(s.stack))
        try:
            await demo.load_catalog(c, log=lambda _: None)
        finally:
            await c.close()

    asyncio.run(load())
    wait_for_copies(s, {sku for sku, *_ in demo.PRODUCTS})


def wait_for_copies(s: System, product_ids: set[str], timeout: float = 90.0) -> None:
    """Until orders holds a copy of each of these products (it prices orders from them)."""
    deadline = time.monotonic() + timeout
    client: MongoClient[dict[str, Any]]
    with MongoClient(s.stack.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        copies: Collection[dict[str, Any]] = client[s.database(topology.ORDERS)][
            topology.PRODUCT_COPIES
        ]
        while not product_ids <= {d["_id"] for d in copies.find({}, {"_id": 1})}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"orders' copy of {sorted(product_ids)} did not arrive")
            time.sleep(0.2)


# --- REST: which RPC a JSON request becomes, and back ----------------------------------------


@dataclass(frozen=True)
class HttpRule:
    """One RPC's `google.api.http` binding."""

    method: str
    """The full gRPC method name, e.g. /storefront.orders.v1.OrdersService/ApproveOrder."""
    verb: str
    template: str
    body: str
    request_class: type[Message]

    @property
    def fields(self) -> list[str]:
        """The request fields bound to the path, in template order."""
        return re.findall(r"\{([^}]+)\}", self.template)

    def match(self, verb: str, path: str) -> dict[str, str] | None:
        if verb.upper() != self.verb:
            return None
        pattern = re.sub(r"\\\{[^}]+\\\}", "([^/:]+)", re.escape(self.template))
        found = re.fullmatch(pattern, path.split("?", 1)[0])
        if found is None:
            return None
        return {
            f: urllib.parse.unquote(v) for f, v in zip(self.fields, found.groups(), strict=True)
        }


def http_rules() -> list[HttpRule]:
    rules = []
    for module in (accounts_pb2, orders_pb2, fulfillment_pb2, catalog_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                rule = m.GetOptions().Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                rules.append(
                    HttpRule(
                        method=f"/{service.full_name}/{m.name}",
                        verb=verb.upper(),
                        template=getattr(rule, verb),
                        body=rule.body,
                        request_class=message_factory.GetMessageClass(m.input_type),
                    )
                )
    return rules


def rest_request(verb: str, path: str, query: dict[str, str] | None = None) -> tuple[str, Message]:
    """The RPC a REST call becomes and the part of its request the path and query give
    ("" and an empty message when no RPC matches)."""
    for rule in http_rules():
        bound = rule.match(verb, path)
        if bound is None:
            continue
        request = rule.request_class()
        for name, value in bound.items():
            set_field(request, name, value)
        for key, value in (query or {}).items():
            field = request.DESCRIPTOR.fields_by_camelcase_name.get(key) or (
                request.DESCRIPTOR.fields_by_name.get(key)
            )
            if field is not None and field.type == field.TYPE_STRING:
                setattr(request, field.name, str(value))
        return rule.method, request
    return "", empty_pb2.Empty()


def rest_authorization(
    tokens: TokenFor, verb: str, path: str, query: dict[str, str] | None = None
) -> dict[str, str]:
    """The authorization header `tokens` gives the RPC this REST call becomes. A call that
    maps to no RPC still gets a valid token, so Envoy answers what it would (404, 400)."""
    method, request = rest_request(verb, path, query)
    token = tokens(method or ANY_RPC, request if method else ANY_REQUEST)
    return {"authorization": f"Bearer {token}"} if token else {}


ANY_RPC = "/storefront.orders.v1.OrdersService/ListOrders"
ANY_REQUEST = orders_pb2.ListOrdersRequest()

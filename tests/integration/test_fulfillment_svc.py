"""fulfillment_svc against the real broker and database: events in, gRPC steps, events out.

Each test runs the service in-process on its own database and consumer group. The group
reads `orders.order.fulfill` from the beginning, so it also sees other tests' events;
assertions therefore look only at this test's order ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import grpc
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import topology
from fulfillment_svc import domain
from fulfillment_svc.handlers import SOURCE, TOPIC
from fulfillment_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.fulfillment.v1 import events_pb2, fulfillment_pb2, fulfillment_pb2_grpc
from storefront.orders.v1 import events_pb2 as orders_events_pb2
from storefront_cli.clients import channel
from svckit import names
from svckit.app import ServiceApp
from svckit.envelope import Headers, decode, encode, header_map
from svckit.names import consumer_group
from svckit.outbox import OUTBOX
from svckit.settings import Settings
from tests.support import issuer_of, tokens_of

if TYPE_CHECKING:
    from storefront.fulfillment.v1.fulfillment_pb2_grpc import FulfillmentServiceAsyncStub

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT_SECONDS = 60.0
ORDERS_SOURCE = names.source(topology.ORDERS)
STATUS_CHANGED = events_pb2.OrderStatusChanged.DESCRIPTOR.full_name


@dataclass
class Running:
    app: ServiceApp
    stub: FulfillmentServiceAsyncStub
    stack: EmbeddedStack
    producer: AIOKafkaProducer

    async def publish(self, value: bytes, headers: Headers, key: str) -> RecordMetadata:
        return await self.producer.send_and_wait(
            topology.ORDER_FULFILLMENT, value, key=key.encode(), headers=headers
        )

    async def request(self, order_id: str) -> tuple[bytes, Headers]:
        """Publish a FulfillmentRequested as orders would; returns it for redelivery."""
        value, headers = encode(requested(order_id), source=ORDERS_SOURCE, key=order_id)
        await self.publish(value, headers, order_id)
        return value, headers

    async def cancel(self, order_id: str, reason: str = "customer asked") -> RecordMetadata:
        event = orders_events_pb2.FulfillmentCancelled(order_id=order_id, version=3, reason=reason)
        event.cancel_time.GetCurrentTime()
        value, headers = encode(event, source=ORDERS_SOURCE, key=order_id)
        return await self.publish(value, headers, order_id)

    async def count(self, order_id: str) -> int:
        """Stored fulfillments for the order, straight from the service's collection."""
        return await self.app.db[topology.FULFILLMENTS].count_documents({"_id": order_id})

    async def step(
        self, call: Awaitable[fulfillment_pb2.Fulfillment]
    ) -> fulfillment_pb2.Fulfillment:
        """One shipping step, returned once the relay has published its event and let go.

        On FerretDB v1 an update is read-modify-write without isolation, so the relay's
        outbox removal racing the next step's write can undo that write. Waiting keeps
        this test about fulfillment; the race itself is a svckit/FerretDB issue.
        """
        fulfillment = await call

        async def attempt() -> bool | None:
            doc = await self.app.db[topology.FULFILLMENTS].find_one({"_id": fulfillment.order_id})
            return True if doc is not None and not doc.get(OUTBOX) else None

        await eventually(attempt, f"the outbox of {fulfillment.order_id} to drain")
        return fulfillment

    async def get(self, order_id: str) -> fulfillment_pb2.Fulfillment:
        return await self.stub.GetFulfillment(
            fulfillment_pb2.GetFulfillmentRequest(order_id=order_id)
        )

    async def arrived(self, order_id: str) -> fulfillment_pb2.Fulfillment:
        """The fulfillment once the consumer has created it."""

        async def attempt() -> fulfillment_pb2.Fulfillment | None:
            try:
                return await self.get(order_id)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return None

        return await eventually(attempt, f"fulfillment {order_id} to appear")

    async def consumed(self, record: RecordMetadata) -> None:
        """Until the service's group has committed past `record`, i.e. has handled it."""
        tp = TopicPartition(record.topic, record.partition)
        admin = self.stack.kafka.admin()
        await admin.start()
        try:

            async def attempt() -> bool | None:
                offsets = await admin.list_consumer_group_offsets(
                    self.app.settings.consumer_group, partitions=[tp]
                )
                committed = offsets.get(tp)
                return True if committed and committed.offset > record.offset else None

            await eventually(attempt, f"offset {record.offset} of {tp} to be committed")
        finally:
            await admin.close()


def requested(order_id: str) -> orders_events_pb2.FulfillmentRequested:
    event = orders_events_pb2.FulfillmentRequested(
        order_id=order_id, version=2, customer_id=f"c-{order_id[:8]}"
    )
    item = event.items.add(quantity=2)
    item.product.id, item.product.title = "p-kettle", "Kettle"
    item.product.price.currency_code, item.product.price.units = "USD", 25
    event.name.first_name, event.name.last_name = "Rajesh", "Iyer"
    event.contact.primary_phone, event.contact.email = "555-666-7777", "rajesh@example.com"
    event.shipping_address.address1, event.shipping_address.city = "123 Oak Street", "Sunrise"
    event.shipping_address.state, event.shipping_address.postal_code = "CA", "12345"
    event.approve_time.GetCurrentTime()
    return event


async def eventually(attempt: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll until `attempt` returns something, failing after WAIT_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        result = await attempt()
        if result is not None:
            return result
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def rpc_error(call: Awaitable[Message]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # an AioRpcError is a Call
    assert status is not None, "no google.rpc.Status in the trailers"
    out: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def read_topic(
    stack: EmbeddedStack, topic: str, wanted: Callable[[ConsumerRecord[bytes, bytes]], bool], n: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first `n` records of `topic` that match, read by a fresh group from the start."""
    consumer = stack.kafka.consumer(
        topic,
        group_id=f"test-reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:

        async def attempt() -> list[ConsumerRecord[bytes, bytes]] | None:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found.extend(r for r in records if wanted(r))
            return found if len(found) >= n else None

        await eventually(attempt, f"{n} matching records on {topic}")
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: (r.partition, r.offset))


@pytest.fixture
async def service(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[Running]:
    settings = dataclasses.replace(
        Settings.from_env("fulfillment", grpc_port=0, metrics_port=0, admin_port=0),
        grpc_host="127.0.0.1",
        grpc_port=0,
        admin_port=0,
        metrics_port=0,
        mongodb_uri=stack.mongodb_uri,
        mongodb_database=mongo_db_name,
        kafka=stack.kafka_as("fulfillment"),
        consumer_group=consumer_group("fulfillment", f"test-{uuid.uuid4().hex}"),
        shutdown_grace_seconds=1.0,
        auth=issuer_of(stack).config(),
    )
    app = build(settings)
    await app.start()
    producer = stack.kafka.producer(acks="all")
    await producer.start()
    try:
        async with channel(f"127.0.0.1:{app.bound_port}", tokens_of(stack)) as channel_:
            # On an aio channel the generated stub is the async one its .pyi calls AsyncStub.
            stub = cast(
                "FulfillmentServiceAsyncStub", fulfillment_pb2_grpc.FulfillmentServiceStub(channel_)
            )
            yield Running(app, stub, stack, producer)
    finally:
        await producer.stop()
        await app.stop()


def new_order_id() -> str:
    return f"o-{uuid.uuid4().hex}"


async def test_approved_order_is_fulfilled_once_and_every_step_reaches_orders(
    service: Running,
) -> None:
    order_id = new_order_id()
    value, headers = await service.request(order_id)
    created = await service.arrived(order_id)
    assert (created.status, created.version, created.customer_id) == (
        domain.APPROVED,
        1,
        f"c-{order_id[:8]}",
    )
    assert created.items[0].product.title == "Kettle"
    assert created.shipping_address.postal_code == "12345"
    assert [e.status for e in created.status_events] == [domain.APPROVED]

    redelivered = await service.publish(value, headers, order_id)
    await service.consumed(redelivered)
    assert await service.get(order_id) == created, "a redelivery must not touch the fulfillment"
    assert await service.count(order_id) == 1

    stub = service.stub
    walked = []
    for f in [
        await service.step(
            stub.ProcessFulfillment(fulfillment_pb2.ProcessFulfillmentRequest(order_id=order_id))
        ),
        await service.step(
            stub.ShipFulfillment(
                fulfillment_pb2.ShipFulfillmentRequest(order_id=order_id, note="UPS 1Z999")
            )
        ),
        await service.step(
            stub.MarkFulfillmentInTransit(
                fulfillment_pb2.MarkFulfillmentInTransitRequest(order_id=order_id)
            )
        ),
        await service.step(
            stub.ConfirmFulfillmentReceived(
                fulfillment_pb2.ConfirmFulfillmentReceivedRequest(order_id=order_id, note="signed")
            )
        ),
    ]:
        walked.append((f.status, f.version))
    expected = [
        (domain.PROCESSING, 2),
        (domain.SHIPPED, 3),
        (domain.IN_TRANSIT, 4),
        (domain.RECEIVED, 5),
    ]
    assert walked == expected

    records = await read_topic(service.stack, TOPIC, lambda r: r.key == order_id.encode(), 4)
    envelopes = [
        decode(r.value, r.headers, key=r.key, accepted_types=[STATUS_CHANGED]) for r in records
    ]
    assert {e.source for e in envelopes} == {SOURCE}
    changes = [e.message for e in envelopes if isinstance(e.message, events_pb2.OrderStatusChanged)]
    assert [(c.status, c.version) for c in changes] == expected
    assert {c.order_id for c in changes} == {order_id}
    assert [c.note for c in changes] == ["", "UPS 1Z999", "", "signed"]

    error = await rpc_error(
        stub.ShipFulfillment(fulfillment_pb2.ShipFulfillmentRequest(order_id=order_id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ORDER_STATUS_RECEIVED" in (error.details() or "")
    stored = await service.get(order_id)
    assert (stored.status, stored.version) == (domain.RECEIVED, 5)
    assert len(stored.status_events) == 5


async def test_cancellation_stops_only_what_has_not_shipped(service: Running) -> None:
    waiting, shipped = new_order_id(), new_order_id()
    await service.request(waiting)
    await service.request(shipped)
    await service.arrived(waiting)
    await service.arrived(shipped)
    await service.step(
        service.stub.ProcessFulfillment(fulfillment_pb2.ProcessFulfillmentRequest(order_id=shipped))
    )
    await service.step(
        service.stub.ShipFulfillment(fulfillment_pb2.ShipFulfillmentRequest(order_id=shipped))
    )

    await service.cancel(waiting, reason="out of stock")
    await service.consumed(await service.cancel(shipped))

    cancelled = await service.get(waiting)
    assert (cancelled.status, cancelled.version) == (domain.CANCELLED, 2)
    assert (cancelled.status_events[-1].status, cancelled.status_events[-1].note) == (
        domain.CANCELLED,
        "out of stock",
    )
    left = await service.get(shipped)
    assert (left.status, left.version) == (domain.SHIPPED, 3)

    await service.consumed(await service.cancel(waiting))
    assert await service.get(waiting) == cancelled

    error = await rpc_error(
        service.stub.ProcessFulfillment(fulfillment_pb2.ProcessFulfillmentRequest(order_id=waiting))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await service.get(waiting)).version == 2


async def test_list_filters_by_status_and_pages(service: Running) -> None:
    mine = sorted(new_order_id() for _ in range(3))
    for order_id in mine:
        await service.request(order_id)
    for order_id in mine:
        await service.arrived(order_id)
    await service.stub.ProcessFulfillment(
        fulfillment_pb2.ProcessFulfillmentRequest(order_id=mine[1])
    )

    async def all_pages(status: domain.Status) -> list[fulfillment_pb2.Fulfillment]:
        out: list[fulfillment_pb2.Fulfillment] = []
        token = ""
        while True:
            page = await service.stub.ListFulfillments(
                fulfillment_pb2.ListFulfillmentsRequest(
                    status=status, page_size=1, page_token=token
                )
            )
            assert len(page.fulfillments) <= 1
            out.extend(page.fulfillments)
            token = page.next_page_token
            if not token:
                return out

    approved = await all_pages(domain.APPROVED)
    assert {f.status for f in approved} == {domain.APPROVED}
    assert [f.order_id for f in approved if f.order_id in mine] == [mine[0], mine[2]]
    processing = await all_pages(domain.PROCESSING)
    assert [f.order_id for f in processing if f.order_id in mine] == [mine[1]]


async def test_bad_requests_are_refused_with_field_violations(service: Running) -> None:
    stub = service.stub
    error = await rpc_error(stub.GetFulfillment(fulfillment_pb2.GetFulfillmentRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"order_id"}

    error = await rpc_error(
        stub.ShipFulfillment(fulfillment_pb2.ShipFulfillmentRequest(note="x" * 501))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"order_id", "note"}

    error = await rpc_error(
        stub.ProcessFulfillment(
            fulfillment_pb2.ProcessFulfillmentRequest(order_id=new_order_id(), note="x" * 500)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    error = await rpc_error(
        stub.ListFulfillments(fulfillment_pb2.ListFulfillmentsRequest(status=99))  # type: ignore[arg-type]
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"status"}

    error = await rpc_error(
        stub.ListFulfillments(fulfillment_pb2.ListFulfillmentsRequest(page_token="____"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"page_token"}


async def test_request_without_order_id_is_dead_lettered_and_consuming_goes_on(
    service: Running,
) -> None:
    key = new_order_id()
    value, headers = encode(requested(""), source=ORDERS_SOURCE, key=key)
    poison_id = header_map(headers)["ce_id"]
    await service.publish(value, headers, key)
    following = new_order_id()
    await service.request(following)

    assert (await service.arrived(following)).status == domain.APPROVED
    parked, *_ = await read_topic(
        service.stack,
        topology.SYSTEM.service(topology.FULFILLMENT).dlq(topology.ORDER_FULFILLMENT),
        lambda r: header_map(r.headers).get("ce_id") == poison_id,
        1,
    )
    origin = header_map(parked.headers)
    assert "without order_id" in origin["dlq_error"]
    assert origin["dlq_topic"] == topology.ORDER_FULFILLMENT
    assert parked.value == value


async def test_a_cancellation_before_its_request_leaves_a_tombstone_the_request_hits(
    service: Running,
) -> None:
    """Issue 12 finding 3: the request was parked (or a replay brings it late) and the
    cancellation came first; the late request must not start shipping a cancelled order."""
    order_id = new_order_id()
    await service.consumed(await service.cancel(order_id, reason="changed my mind"))
    tombstone = await service.get(order_id)
    assert (tombstone.status, tombstone.version) == (domain.CANCELLED, 1)
    assert [(e.status, e.note) for e in tombstone.status_events] == [
        (domain.CANCELLED, "changed my mind")
    ]

    value, headers = encode(requested(order_id), source=ORDERS_SOURCE, key=order_id)
    await service.consumed(await service.publish(value, headers, order_id))  # the late request
    assert await service.get(order_id) == tombstone
    assert await service.count(order_id) == 1
    error = await rpc_error(
        service.stub.ProcessFulfillment(
            fulfillment_pb2.ProcessFulfillmentRequest(order_id=order_id)
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_concurrent_steps_without_etag_are_decided_on_the_new_state(
    service: Running,
) -> None:
    """Issue 12 finding 6 for fulfillment: racing requests are re-read and re-decided by the
    server (one wins, the other is refused by the rule, not ABORTED)."""
    order_id = new_order_id()
    await service.request(order_id)
    await service.arrived(order_id)
    calls = [
        service.stub.ProcessFulfillment(
            fulfillment_pb2.ProcessFulfillmentRequest(order_id=order_id)
        )
        for _ in range(8)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    codes = sorted(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    assert codes == ["FAILED_PRECONDITION"] * 7 + ["OK"], codes
    assert (await service.get(order_id)).version == 2

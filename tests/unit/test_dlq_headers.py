"""A dead-lettered event's headers say why by error class and code, never with the error's
message: pymongo's quotes the document the database refused (names, e-mails)."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord
from pymongo.errors import OperationFailure

from storefront.accounts.v1 import events_pb2
from svckit.consumer import EventConsumer, Outcome
from svckit.envelope import Envelope, decode, encode
from svckit.kafka import KafkaConnection


class CapturingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, key, value, headers))


async def test_dead_letter_headers_name_the_error_not_the_document() -> None:
    event = events_pb2.CustomerChanged(customer_id="c-1", version=2)
    event.name.first_name, event.contact.email = "Ada", "ada@example.com"
    value, headers = encode(event, source="//storefront/accounts", key="c-1")
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        "accounts.customer.change", 1, 7, 0, 0, b"c-1", value, None, 3, len(value), headers
    )
    refused = {"_id": "c-1", "name": {"first_name": "Ada"}, "contact": {"email": "ada@example.com"}}

    async def handler(envelope: Envelope) -> Outcome:
        raise OperationFailure(f"Document failed validation, full error: {refused}", code=121)

    producer = CapturingProducer()
    consumer = EventConsumer(
        kafka=KafkaConnection(bootstrap_servers="127.0.0.1:9"),
        group_id="orders-svc",
        topics=["accounts.customer.change"],
        handlers={"storefront.accounts.v1.CustomerChanged": handler},
        producer=producer,  # type: ignore[arg-type]
        service="orders",
        max_attempts=2,
        backoff_base=0.0,
    )
    envelope = decode(value, headers, key=b"c-1", accepted_types=consumer._handlers)
    await consumer._apply(record, envelope)
    [(topic, key, parked, dlq_headers)] = producer.sent
    assert (topic, key, parked) == ("accounts.customer.change.orders-svc.dlq", "c-1", value)
    added: dict[str, Any] = {k: v for k, v in dlq_headers if k.startswith("dlq_")}
    assert added["dlq_error"] == b"OperationFailure code=121"
    assert (added["dlq_attempts"], added["dlq_offset"]) == (b"2", b"7")
    every_header = b"".join(v for _, v in dlq_headers)
    assert b"Ada" not in every_header and b"example.com" not in every_header

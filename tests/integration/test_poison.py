"""Poison events: each ends in the DLQ (with its origin and error in headers) or is
ignored as documented, and the next good event is still applied."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import topology
from orders_svc.main import build
from stack.embedded import EmbeddedStack
from storefront.accounts.v1 import events_pb2 as accounts_events
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import events_pb2 as fulfillment_events
from svckit import names
from svckit.app import ServiceApp
from svckit.envelope import encode, header_map
from tests.integration.test_orders_svc import customer_changed
from tests.support import eventually, read_raw, running, settings_for, unique

pytestmark = pytest.mark.integration
TOPIC = topology.CUSTOMER_CHANGES
SRC = names.source(topology.ACCOUNTS)


@pytest.fixture
async def orders(stack: EmbeddedStack, mongo_db_name: str) -> AsyncIterator[ServiceApp]:
    async with running(build, settings_for(stack, "orders", mongo_db_name)) as app:
        yield app


@pytest.fixture
async def producer(stack: EmbeddedStack) -> AsyncIterator[AIOKafkaProducer]:
    p = stack.kafka.producer(acks="all")
    await p.start()
    yield p
    await p.stop()


def poison_cases(key: str) -> dict[str, tuple[bytes, list[tuple[str, bytes]]]]:
    good_value, good_headers = encode(
        customer_changed(key, 1, "p@example.com"), source=SRC, key=key
    )
    rng = random.Random(7)
    unknown_type = [
        (k, b"storefront.accounts.v1.CustomerRenamed" if k == "ce_type" else v)
        for k, v in good_headers
    ]
    return {
        "random bytes": (rng.randbytes(64), good_headers),
        "unknown ce_type": (good_value, unknown_type),
        "truncated protobuf": (good_value[: len(good_value) // 2], good_headers),
        "missing headers": (
            good_value,
            [(k, v) for k, v in good_headers if k not in ("ce_id", "ce_type")],
        ),
        "no headers at all": (good_value, []),
    }


async def test_poison_goes_to_dlq_and_the_next_good_event_applies(
    stack: EmbeddedStack, orders: ServiceApp, producer: AIOKafkaProducer
) -> None:
    key = unique("poison")
    sent = {}
    for name, (value, headers) in poison_cases(key).items():
        meta = await producer.send_and_wait(TOPIC, value, key=key.encode(), headers=headers)
        sent[meta.offset] = name
    good_id = unique("good")
    value, headers = encode(customer_changed(good_id, 1, "g@example.com"), source=SRC, key=good_id)
    await producer.send_and_wait(TOPIC, value, key=good_id.encode(), headers=headers)

    async def copied() -> dict[str, object] | None:
        return await orders.db[topology.CUSTOMER_COPIES].find_one({"_id": good_id})

    await eventually(copied, what="the good event after the poison")

    async def parked() -> dict[int, Any] | None:
        records = [r for r in await read_raw(stack.kafka, topology.SYSTEM.service(topology.ORDERS).dlq(TOPIC)) if r.key == key.encode()]
        mine = {int(header_map(r.headers)["dlq_offset"]): r for r in records}
        return mine if set(sent) <= set(mine) else None

    dead = await eventually(parked, what="all poison in the DLQ")
    for offset, name in sent.items():
        meta = header_map(dead[offset].headers)
        assert meta["dlq_topic"] == TOPIC, name
        assert meta["dlq_attempts"] == "1", name
        assert meta["dlq_partition"].isdigit(), name
        assert meta["dlq_error"], name
    assert await orders.db[topology.CUSTOMER_COPIES].count_documents({"_id": key}) == 0


async def test_status_change_for_unknown_order_is_ignored_then_next_applies(
    orders: ServiceApp, producer: AIOKafkaProducer
) -> None:
    ghost = unique("ghost-order")
    event = fulfillment_events.OrderStatusChanged(
        order_id=ghost, version=2, status=common_pb2.ORDER_STATUS_PROCESSING
    )
    value, headers = encode(event, source=names.source(topology.FULFILLMENT), key=ghost)
    await producer.send_and_wait(topology.ORDER_STATUS, value, key=ghost.encode(), headers=headers)
    good_id = unique("good")
    value, headers = encode(customer_changed(good_id, 1, "g@example.com"), source=SRC, key=good_id)
    await producer.send_and_wait(TOPIC, value, key=good_id.encode(), headers=headers)

    async def copied() -> dict[str, object] | None:
        return await orders.db[topology.CUSTOMER_COPIES].find_one({"_id": good_id})

    await eventually(copied, what="the good event")
    assert await orders.db[topology.ORDER_DOCUMENTS].count_documents({"_id": ghost}) == 0


async def test_a_valid_but_impossible_event_is_poison() -> None:
    # version 0 can never be "newer": rejected as poison by the domain, not retried
    from orders_svc import domain
    from svckit.envelope import PoisonEvent

    with pytest.raises(PoisonEvent):
        domain.check_customer_event(accounts_events.CustomerChanged(customer_id="c", version=0))

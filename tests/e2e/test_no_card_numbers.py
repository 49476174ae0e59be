"""Card numbers never leave accounts: not on any topic, not in orders' or
fulfillment's databases, after a full run of every flow."""

from __future__ import annotations

import re

import bson
import pytest
from aiokafka import TopicPartition
from pymongo import AsyncMongoClient

from stack.embedded import TOPICS
from storefront.accounts.v1 import accounts_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft, order_draft
from svckit.kafka import KafkaConnection
from tests.e2e.conftest import System
from tests.support import partition_ids

pytestmark = pytest.mark.e2e


def needles(number: str) -> list[bytes]:
    digits = re.sub(r"\D", "", number)
    return [digits.encode(), digits[:8].encode(), digits[-8:].encode()]


async def all_topic_bytes(kafka: KafkaConnection) -> list[bytes]:
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[bytes] = []
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS for p in await partition_ids(kafka, t)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    out.append((record.key or b"") + (record.value or b""))
                    out += [k.encode() + v for k, v in record.headers or ()]
    finally:
        await consumer.stop()
    return out


async def test_no_card_number_anywhere_outside_accounts(
    running_system: System, clients: Clients
) -> None:
    numbers = []
    for person in PEOPLE:
        draft = customer_draft(person)
        numbers.append(draft.credit_cards[0].number)
        c = await clients.accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=draft)
        )

        async def copied(cid: str = c.id) -> object:
            return await clients.orders.GetCustomerOrders(
                orders_pb2.GetCustomerOrdersRequest(customer_id=cid)
            )

        await eventually(copied, what="copy")
        order = await clients.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(customer_id=c.id, order=order_draft((1, 1)))
        )
        await clients.orders.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
        get = fulfillment_pb2.GetFulfillmentRequest(order_id=order.order_id)
        await eventually(lambda g=get: clients.fulfillment.GetFulfillment(g), what="fulfillment")
        await clients.fulfillment.ProcessFulfillment(
            fulfillment_pb2.ProcessFulfillmentRequest(order_id=order.order_id)
        )

    haystack = await all_topic_bytes(running_system.stack.kafka)
    assert haystack, "the topics should not be empty after the flows"
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(running_system.stack.mongodb_uri)
    try:
        for service in ("orders", "fulfillment"):
            db = client[running_system.database(service)]
            for name in await db.list_collection_names():
                haystack += [bson.encode(doc) async for doc in db[name].find({})]
        accounts = client[running_system.database("accounts")]
        stored = [bson.encode(doc) async for doc in accounts["customer.accounts"].find({})]
    finally:
        await client.close()
    for number in numbers:
        for needle in needles(number):
            assert not any(needle in blob for blob in haystack), f"card digits {needle!r} leaked"
    # The scan can find them: accounts, the system of record, does hold the numbers.
    assert all(any(needles(n)[0] in blob for blob in stored) for n in numbers)

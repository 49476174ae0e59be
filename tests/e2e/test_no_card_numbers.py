"""Card numbers are nowhere but sealed in accounts: not in the accounts database itself (only
ciphertext, last four and fingerprint), not on any topic, not in orders' or fulfillment's
databases, not in any log line, after a full run of every flow."""

from __future__ import annotations

import functools
from typing import Any

import bson
import pytest
from google.protobuf import field_mask_pb2
from pymongo import AsyncMongoClient

import topology
from storefront.accounts.v1 import accounts_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft, order_draft
from tests.e2e.conftest import System
from tests.leaks import card_encodings, card_leaks, log_leaks, topic_leaks

pytestmark = pytest.mark.e2e


async def test_no_card_number_anywhere_outside_accounts(
    running_system: System, clients: Clients
) -> None:
    numbers: list[str] = []
    for i, person in enumerate(PEOPLE):
        draft = customer_draft(person)
        if i == 1:  # the other encodings clients send: groups of four, spaces or dashes
            digits = draft.credit_cards[0].number
            draft.credit_cards[0].number = " ".join(digits[j : j + 4] for j in range(0, 16, 4))
        numbers.append(draft.credit_cards[0].number)
        c = await clients.accounts.CreateCustomer(
            accounts_pb2.CreateCustomerRequest(customer=draft)
        )
        second = accounts_pb2.Customer(id=c.id)
        second.credit_cards.extend(c.credit_cards)  # kept as read: masked, with its card_id
        extra = "-".join(("6011", "0009", "9013", f"{9424 + i}"))
        numbers.append(extra)
        second.credit_cards.add(
            type=accounts_pb2.CREDIT_CARD_TYPE_ALTERNATE,
            number=extra,
            expiration="01/30",
            name_on_card="Card Holder",
        )
        await clients.accounts.UpdateCustomer(
            accounts_pb2.UpdateCustomerRequest(
                customer=second, update_mask=field_mask_pb2.FieldMask(paths=["credit_cards"])
            )
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
        await eventually(
            functools.partial(clients.fulfillment.GetFulfillment, get), what="fulfillment"
        )
        await clients.fulfillment.ProcessFulfillment(
            fulfillment_pb2.ProcessFulfillmentRequest(order_id=order.order_id)
        )

    found, records = await topic_leaks(running_system.stack.kafka)
    assert records, "the topics should not be empty after the flows"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(running_system.stack.mongodb_uri)
    stored: list[bytes] = []
    try:
        for service in ("accounts", "orders", "fulfillment"):
            db = client[running_system.database(service)]
            for name in await db.list_collection_names():
                blobs = [bson.encode(doc) async for doc in db[name].find({})]
                stored += blobs if name == topology.CUSTOMERS else []
                for i, blob in enumerate(blobs):
                    found += card_leaks(f"{service}/{name}#{i}", blob, numbers)
    finally:
        await client.close()
    found += log_leaks(running_system.stack.run_dir)
    assert not found, "\n".join(found[:20])
    # The scan can find them: each number's last four and its ciphertext are stored...
    assert all(any(card_encodings(n)[0][-4:] in b for b in stored) for n in numbers)
    assert sum(b.count(b"number_ciphertext") for b in stored) >= 2 * len(PEOPLE)
    # ...and it finds the digits when they are there, in every encoding it looks for.
    for n in numbers:
        assert card_leaks("probe", b"x" + n.encode() + b"x", numbers)

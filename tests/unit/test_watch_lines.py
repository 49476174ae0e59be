"""`storefront watch` decodes every event the services publish, the catalog's and orders'
facts included, into one line each (storefront_cli/tail.py)."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from google.protobuf.message import Message

import topology
from storefront.catalog.v1 import catalog_pb2
from storefront.catalog.v1 import events_pb2 as catalog_events
from storefront.common.v1 import common_pb2
from storefront.orders.v1 import events_pb2 as orders_events
from storefront_cli.tail import event_line
from svckit.envelope import encode


def record(topic: str, key: str, message: Message) -> ConsumerRecord[bytes, bytes]:
    value, headers = encode(message, source="//test", key=key)
    return ConsumerRecord(
        topic, 0, 7, 0, 0, key.encode(), value, None, len(key), len(value), tuple(headers)
    )


@pytest.mark.parametrize(
    ("topic", "key", "message", "shown"),
    [
        (
            topology.ORDER_CHANGES,
            "o-1",
            orders_events.OrderChanged(
                order_id="o-1", version=6, status=common_pb2.ORDER_STATUS_RECEIVED
            ),
            "ORDER_STATUS_RECEIVED",
        ),
        (
            topology.PRODUCT_CHANGES,
            "sku-1",
            catalog_events.ProductChanged(
                product_id="sku-1", version=2, state=catalog_pb2.PRODUCT_STATE_DISCONTINUED
            ),
            "PRODUCT_STATE_DISCONTINUED",
        ),
    ],
)
def test_the_facts_and_product_changes_are_decoded_one_line_each(
    topic: str, key: str, message: Message, shown: str
) -> None:
    line = event_line(record(topic, key, message))
    assert f"  {type(message).__name__}  {key}  " in line and shown in line

"""The compiled document mapping gives exactly what json_format gives, both directions."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storefront.accounts.v1 import accounts_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from svckit.documents import dict_to_message, from_document, message_to_dict, to_document
from tests.fuzz.test_grpc_fuzz import message_of

STORED = [
    accounts_pb2.Customer,
    orders_pb2.Order,
    orders_pb2.CustomerOrders,
    fulfillment_pb2.Fulfillment,
]


def reference(message: Message) -> dict[str, Any] | type[Exception]:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except Exception as exc:  # noqa: BLE001 - the kind is what is compared
        return type(exc)


@pytest.mark.parametrize("cls", STORED, ids=lambda c: c.DESCRIPTOR.name)
def test_dump_and_load_match_json_format(cls: type[Message]) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message=message_of(cls.DESCRIPTOR))
    def check(message: Message) -> None:
        expected = reference(message)
        if isinstance(expected, type):
            with pytest.raises(Exception):  # noqa: B017 - json_format raised too
                message_to_dict(message)
            return
        assert message_to_dict(message) == expected
        assert dict_to_message(expected, cls()) == json_format.ParseDict(
            expected, cls(), ignore_unknown_fields=True
        )

    check()


def test_document_round_trip_keeps_id_and_numeric_version() -> None:
    order = orders_pb2.Order(order_id="o-1", customer_id="c-1", version=7)
    order.total.currency_code = "USD"
    order.total.units = 12
    order.create_time.FromJsonString("2026-12-01T10:00:00.123Z")
    doc = to_document(order, id_field="order_id")
    assert doc["_id"] == "o-1" and doc["version"] == 7 and doc["total"]["units"] == "12"
    assert doc["create_time"] == "2026-12-01T10:00:00.123Z"
    assert (
        from_document({**doc, "_outbox": [{"x": 1}]}, orders_pb2.Order, id_field="order_id")
        == order
    )


@given(st.sampled_from(["ORDER_STATUS_APPROVED", 2, 99, "3", "FROM_A_NEWER_VERSION"]))
def test_enums_read_by_name_or_number_and_unknown_names_are_left_unset(status: object) -> None:
    got = dict_to_message({"status": status, "customer_id": "c"}, orders_pb2.Order())
    want = json_format.ParseDict(
        {"status": status, "customer_id": "c"}, orders_pb2.Order(), ignore_unknown_fields=True
    )
    assert got == want


def test_bad_documents_raise_parse_error() -> None:
    with pytest.raises(json_format.ParseError):
        dict_to_message({"customer_id": 5}, orders_pb2.Order())
    with pytest.raises(json_format.ParseError):
        dict_to_message({"create_time": "yesterday"}, orders_pb2.Order())


@given(
    st.integers(min_value=-62135596800, max_value=253402300799),
    st.sampled_from([1_000_000_000, 1_000_000, 1_000, 1]),
    st.integers(min_value=0, max_value=999_999_999),
)
def test_stored_timestamps_read_as_from_json_string_reads_them(
    seconds: int, unit: int, nanos: int
) -> None:
    """The fast path (svckit.documents._UTC_TIME) reads every form ToJsonString writes."""
    stored = orders_pb2.Order(create_time=Timestamp(seconds=seconds, nanos=nanos // unit * unit))
    text = stored.create_time.ToJsonString()
    want = orders_pb2.Order()
    want.create_time.FromJsonString(text)
    assert dict_to_message({"create_time": text}, orders_pb2.Order()) == want == stored


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T10:00:00+02:00",  # an offset
        "2026-12-01T10:00:00.5-05:30",
        "2026-12-01T10:00:00.1234567Z",  # 7 digits
    ],
)
def test_other_accepted_timestamps_read_as_from_json_string_reads_them(text: str) -> None:
    want = orders_pb2.Order()
    want.create_time.FromJsonString(text)
    assert dict_to_message({"create_time": text}, orders_pb2.Order()) == want


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T10:00:00Z",
        "2026-12-01T24:00:00Z",
        "2026-12-01T10:00:60Z",
        "2026-12-01t10:00:00Z",
        "2026-12-01T10:00:00.1234567890Z",
        "0000-01-01T00:00:00Z",
        "2026-12-01T10:00:00Zjunk",
        "",
    ],
)
def test_malformed_timestamps_are_refused_as_from_json_string_refuses_them(text: str) -> None:
    with pytest.raises(ValueError):
        orders_pb2.Order().create_time.FromJsonString(text)
    with pytest.raises(json_format.ParseError):
        dict_to_message({"create_time": text}, orders_pb2.Order())

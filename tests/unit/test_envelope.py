from datetime import UTC, datetime

import pytest

from storefront.accounts.v1 import events_pb2
from svckit.envelope import PoisonEvent, decode, encode

TYPES = ["storefront.accounts.v1.CustomerChanged"]


def test_round_trip_carries_cloudevents_headers() -> None:
    event = events_pb2.CustomerChanged(customer_id="c1", version=3)
    when = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    value, headers = encode(event, source="//test", key="c1", event_id="e1", time=when)
    names = dict(headers)
    assert names["ce_type"] == b"storefront.accounts.v1.CustomerChanged"
    assert names["ce_specversion"] == b"1.0"
    assert names["content-type"] == b"application/protobuf"
    env = decode(value, headers, key=b"c1", accepted_types=TYPES)
    assert env.message == event
    assert (env.id, env.source, env.key, env.time) == ("e1", "//test", "c1", when)


def test_missing_headers_are_poison() -> None:
    value, headers = encode(events_pb2.CustomerChanged(), source="//t", key="k")
    without_type = [(k, v) for k, v in headers if k != "ce_type"]
    with pytest.raises(PoisonEvent, match="ce_type"):
        decode(value, without_type, key=b"k", accepted_types=TYPES)


def test_unknown_type_is_poison() -> None:
    value, headers = encode(events_pb2.CustomerDeleted(), source="//t", key="k")
    with pytest.raises(PoisonEvent, match="unknown ce_type"):
        decode(value, headers, key=b"k", accepted_types=TYPES)


def test_truncated_payload_is_poison() -> None:
    event = events_pb2.CustomerChanged(customer_id="c" * 40, version=1)
    value, headers = encode(event, source="//t", key="k")
    with pytest.raises(PoisonEvent, match="cannot decode"):
        decode(value[:-5], headers, key=b"k", accepted_types=TYPES)

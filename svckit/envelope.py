"""The event envelope: protobuf value + CloudEvents binary-mode Kafka headers.

One codec for every producer and consumer. The record value is the encoded
event message; `ce_type` is the message's full protobuf name, which is how a
consumer finds the class to decode it with.
"""

from __future__ import annotations

import builtins
import importlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import descriptor_pool, message_factory
from google.protobuf import message as pb_message
from google.protobuf.message import DecodeError

CONTENT_TYPE = "application/protobuf"
SPEC_VERSION = "1.0"
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion")

Headers = list[tuple[str, bytes]]
M = TypeVar("M", bound=pb_message.Message)


class PoisonEvent(Exception):
    """An event that can never be decoded: retrying cannot help."""


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    source: str
    time: datetime
    key: str
    message: Any
    """The decoded event, of the class its ce_type names (`payload(cls)` checks which)."""
    traceparent: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def payload(self, cls: builtins.type[M]) -> M:
        """The event as `cls`; consumers route by ce_type, so a mismatch is a wiring bug."""
        if not isinstance(self.message, cls):
            raise PoisonEvent(f"{self.type} is not {cls.DESCRIPTOR.full_name}")
        return self.message


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time; one without a UTC offset is refused (ValueError): it names no instant."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return when


def encode(
    message: pb_message.Message,
    *,
    source: str,
    key: str,
    event_id: str | None = None,
    time: datetime | None = None,
    traceparent: str | None = None,
) -> tuple[bytes, Headers]:
    """Value bytes and headers for one event."""
    headers: Headers = [
        ("ce_id", (event_id or uuid.uuid4().hex).encode()),
        ("ce_type", message.DESCRIPTOR.full_name.encode()),
        ("ce_source", source.encode()),
        ("ce_time", format_time(time or datetime.now(UTC)).encode()),
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_subject", key.encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return message.SerializeToString(deterministic=True), headers


def header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers or ():
        try:
            out[name] = raw.decode() if raw is not None else ""
        except UnicodeDecodeError as exc:
            raise PoisonEvent(f"header {name!r} is not UTF-8") from exc
    return out


def message_class(type_name: str) -> type[pb_message.Message]:
    """The generated class for a full protobuf name.

    Event messages live in `<package>.events_pb2` by convention, imported on first use,
    so a tool can decode any event without importing every service.
    """
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(type_name)
    except KeyError:
        package = type_name.rsplit(".", 1)[0]
        try:
            importlib.import_module(f"{package}.events_pb2")
        except ImportError as exc:
            raise KeyError(type_name) from exc
        descriptor = pool.FindMessageTypeByName(type_name)
    return message_factory.GetMessageClass(descriptor)


def decode(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    *,
    key: bytes | None,
    accepted_types: Iterable[str],
) -> Envelope:
    """Decode one record; raises PoisonEvent for anything malformed or unexpected."""
    h = header_map(headers)
    missing = [name for name in REQUIRED_HEADERS if not h.get(name)]
    if missing:
        raise PoisonEvent(f"missing CloudEvents headers: {', '.join(missing)}")
    if h.get("content-type", CONTENT_TYPE) != CONTENT_TYPE:
        raise PoisonEvent(f"unsupported content-type {h['content-type']!r}")
    type_name = h["ce_type"]
    if type_name not in set(accepted_types):
        raise PoisonEvent(f"unknown ce_type {type_name!r}")
    if value is None:
        raise PoisonEvent("record has no value")
    try:
        message = message_class(type_name).FromString(value)
    except (DecodeError, KeyError) as exc:
        raise PoisonEvent(f"cannot decode {type_name}: {exc}") from exc
    try:
        when = parse_time(h["ce_time"])
    except ValueError as exc:
        raise PoisonEvent(f"bad ce_time {h['ce_time']!r}") from exc
    known = {*REQUIRED_HEADERS, "ce_subject", "content-type", "traceparent"}
    return Envelope(
        id=h["ce_id"],
        type=type_name,
        source=h["ce_source"],
        time=when,
        key=(key or b"").decode(errors="replace") or h.get("ce_subject", ""),
        message=message,
        traceparent=h.get("traceparent"),
        extra_headers={k: v for k, v in h.items() if k not in known},
    )

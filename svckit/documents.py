"""Protobuf <-> MongoDB document mapping, shared by every repository.

Documents keep the proto's field names (snake_case) and enum names, so the
database reads like the API. The id becomes `_id`; `version` stays a number
(proto JSON would turn int64 into a string) so version guards can compare it.

The shape is exactly proto3 JSON's (`json_format.MessageToDict` with proto field
names: int64 as strings, Timestamps as RFC 3339, enums by name), built by a
converter compiled once per message type: `json_format` walks descriptors in
Python on every call, 230 us to read a customer back and 105 us to write one,
the largest share of a GetCustomer after gRPC itself. A message type with a
field the converter does not know (float, bytes, maps, Any, Struct, other
well-known types) goes through `json_format` as before; tests/unit/test_documents.py
checks both directions against `json_format` on generated messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
Document = dict[str, Any]

_TIMESTAMP = "google.protobuf.Timestamp"
_AS_IS = {
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}

_UTC_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d{1,9}))?Z"
)
"""The form every stored Timestamp has (`Timestamp.ToJsonString`: UTC, 0, 3, 6 or 9 digits of
fraction), read by `_load_time` without protobuf's `FromJsonString`, whose `strptime` took 10 us
of each timestamp: a fifth of reading a customer back. Anything else (an offset, a leap second)
goes to `FromJsonString`, which accepts or refuses it as before."""
_EPOCH_DAY = date(1970, 1, 1).toordinal()

_SKIP = object()
"""A stored enum name this code does not know (written by a newer version): left unset, as
json_format does with ignore_unknown_fields."""

Dump = Callable[[Any], Any]
Load = Callable[[Any, Any], None]  # (value, message being filled)


class _Unsupported(Exception):
    """A field kind the compiled converter leaves to json_format."""


class _Converter:
    """Dump and load functions for one message type, built from its descriptor."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.dumpers: dict[str, Dump] = {}
        self.loaders: dict[str, Load] = {}
        for field in descriptor.fields:
            self.dumpers[field.name], self.loaders[field.name] = _field_functions(field)

    def dump(self, message: Message) -> Document:
        dumpers = self.dumpers
        return {f.name: dumpers[f.name](v) for f, v in message.ListFields()}

    def load(self, data: Document, message: Message) -> None:
        loaders = self.loaders
        for name, value in data.items():
            loader = loaders.get(name)
            if loader is not None and value is not None:
                loader(value, message)


_CONVERTERS: dict[str, _Converter | None] = {}


def _converter(descriptor: Any) -> _Converter | None:
    """The compiled converter of a message type, or None where json_format must do it."""
    name = descriptor.full_name
    if name not in _CONVERTERS:
        _CONVERTERS[name] = None  # a recursive type resolves to json_format
        try:
            _CONVERTERS[name] = _Converter(descriptor)
        except _Unsupported:
            pass
    return _CONVERTERS[name]


def _scalar(field: FieldDescriptor) -> tuple[Dump, Callable[[Any], Any]]:
    """(to document, from document) for one value of a non-message field."""
    if field.type in _AS_IS:
        return (lambda v: v), (lambda v: v)
    if field.type in _INT64:
        return str, int
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        by_number = {v.number: v.name for v in enum.values}
        by_name = {v.name: v.number for v in enum.values}

        def enum_in(v: Any) -> Any:
            if not isinstance(v, str):
                return v
            number = by_name.get(v)
            if number is not None:
                return number
            try:
                return int(v)
            except ValueError:
                return _SKIP

        return (lambda v: by_number.get(v, v)), enum_in
    raise _Unsupported(field.full_name)


def _field_functions(field: FieldDescriptor) -> tuple[Dump, Load]:
    name = field.name
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        to_doc, from_doc = _scalar(field)
        if field.is_repeated:

            def load_all(value: Any, msg: Any) -> None:
                values = (from_doc(v) for v in value)
                getattr(msg, name).extend(v for v in values if v is not _SKIP)

            return (lambda vs: [to_doc(v) for v in vs]), load_all

        def load_one(value: Any, msg: Any) -> None:
            converted = from_doc(value)
            if converted is not _SKIP:
                setattr(msg, name, converted)

        return to_doc, load_one
    sub = field.message_type
    assert sub is not None
    if sub.GetOptions().map_entry:
        raise _Unsupported(field.full_name)
    if sub.full_name == _TIMESTAMP:
        if field.is_repeated:
            raise _Unsupported(field.full_name)

        def load_time(value: Any, msg: Any) -> None:
            _load_time(value, getattr(msg, name))

        return (lambda ts: ts.ToJsonString()), load_time
    if sub.full_name.startswith("google.protobuf."):
        raise _Unsupported(field.full_name)
    converter = _converter(sub)
    if converter is None:
        raise _Unsupported(field.full_name)
    if field.is_repeated:

        def load_messages(value: Any, msg: Any) -> None:
            items = getattr(msg, name)
            for item in value:
                converter.load(item, items.add())

        return (lambda ms: [converter.dump(m) for m in ms]), load_messages

    def load_message(value: Any, msg: Any) -> None:
        child = getattr(msg, name)
        child.SetInParent()
        converter.load(value, child)

    return converter.dump, load_message


def _load_time(value: str, timestamp: Any) -> None:
    """`timestamp.FromJsonString(value)`, the stored form without strptime (see _UTC_TIME)."""
    match = _UTC_TIME.fullmatch(value)
    if match is None:
        timestamp.FromJsonString(value)
        return
    year, month, day, hours, minutes, seconds, fraction = match.groups()
    days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    timestamp.seconds = days * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    timestamp.nanos = int(fraction.ljust(9, "0")) if fraction else 0


def message_to_dict(message: Message) -> Document:
    """`json_format.MessageToDict(message, preserving_proto_field_name=True)`, compiled."""
    converter = _converter(message.DESCRIPTOR)
    if converter is None:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    return converter.dump(message)


def dict_to_message(data: Document, message: M) -> M:
    """`json_format.ParseDict(data, message, ignore_unknown_fields=True)`, compiled."""
    converter = _converter(message.DESCRIPTOR)
    if converter is None:
        return json_format.ParseDict(data, message, ignore_unknown_fields=True)
    try:
        converter.load(data, message)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise json_format.ParseError(f"cannot read {message.DESCRIPTOR.full_name}: {exc}") from exc
    return message


def to_document(message: Message, *, id_field: str) -> Document:
    doc = message_to_dict(message)
    doc["_id"] = doc.pop(id_field, getattr(message, id_field))
    if hasattr(message, "version"):
        doc["version"] = int(message.version)
    return doc


def from_document(doc: Document, cls: type[M], *, id_field: str) -> M:
    data = {k: v for k, v in doc.items() if not k.startswith("_")}
    data[id_field] = doc["_id"]
    return dict_to_message(data, cls())

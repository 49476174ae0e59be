"""Protobuf <-> MongoDB document mapping, shared by every repository.

Documents keep the proto's field names (snake_case) and enum names, so the
database reads like the API. The id becomes `_id`; `version` stays a number
(proto JSON would turn int64 into a string) so version guards can compare it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
Document = dict[str, Any]


def to_document(message: Message, *, id_field: str) -> Document:
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True)
    doc["_id"] = doc.pop(id_field, getattr(message, id_field))
    if hasattr(message, "version"):
        doc["version"] = int(message.version)  # type: ignore[attr-defined]
    return doc


def from_document(doc: Document, cls: type[M], *, id_field: str) -> M:
    data = {k: v for k, v in doc.items() if not k.startswith("_")}
    data[id_field] = doc["_id"]
    return json_format.ParseDict(data, cls(), ignore_unknown_fields=True)

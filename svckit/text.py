"""Request text the databases cannot hold: NUL characters, refused at the door.

Why: PostgreSQL (under FerretDB) cannot store U+0000 in text or jsonb at all, and a lookup
whose value holds one fails inside the database ("unsupported Unicode escape sequence") as an
INTERNAL error. MongoDB would take it, but nothing a customer, an order or an operator sends has
a use for it, so every RPC refuses it the same way, with the fields named, before any handler
runs: the same answer on every backend, and nothing stored.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from svckit.errors import FieldViolation, InvalidArgument

NUL = "\x00"


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of the string fields (at any depth, repeated and map ones too) that hold a NUL."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            if any(NUL in v for v in values):
                found.append(path)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if isinstance(key, str) and NUL in key:
                        found.append(path)
                    if isinstance(item, str) and NUL in item:
                        found.append(f"{path}[{key!r}]")
                    elif isinstance(item, Message):
                        found += nul_fields(item, f"{path}[{key!r}].")
            elif field.is_repeated:
                for i, item in enumerate(value):
                    found += nul_fields(item, f"{path}[{i}].")
            else:
                found += nul_fields(value, f"{path}.")
    return found


def refuse_nul(message: Message) -> None:
    """Raise InvalidArgument naming every field of ``message`` that holds a NUL character."""
    fields = nul_fields(message)
    if fields:
        raise InvalidArgument(
            [FieldViolation(f, "must not contain NUL characters") for f in fields]
        )

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


# How each field is searched, decided once per field: its kind, and whether it is repeated.
_STRING, _MESSAGE, _MAP, _SKIP = range(4)
_KINDS: dict[str, tuple[int, bool]] = {}


def _kind(field: FieldDescriptor) -> tuple[int, bool]:
    kind = _KINDS.get(field.full_name)
    if kind is None:
        if field.type == FieldDescriptor.TYPE_STRING:
            code = _STRING
        elif field.type != FieldDescriptor.TYPE_MESSAGE:
            code = _SKIP
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            code = _MAP
        else:
            code = _MESSAGE
        kind = _KINDS[field.full_name] = (code, field.is_repeated)
    return kind


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of the string fields (at any depth, repeated and map ones too) that hold a NUL."""
    found: list[str] = []
    for field, value in message.ListFields():
        code, repeated = _kind(field)
        if code == _SKIP:
            continue
        path = prefix + field.name
        if code == _STRING:
            if any(NUL in v for v in value) if repeated else NUL in value:
                found.append(path)
        elif code == _MESSAGE:
            if repeated:
                for i, item in enumerate(value):
                    found += nul_fields(item, f"{path}[{i}].")
            else:
                found += nul_fields(value, f"{path}.")
        else:
            for key, item in value.items():
                if isinstance(key, str) and NUL in key:
                    found.append(path)
                if isinstance(item, str) and NUL in item:
                    found.append(f"{path}[{key!r}]")
                elif isinstance(item, Message):
                    found += nul_fields(item, f"{path}[{key!r}].")
    return found


def has_nul(message: Message) -> bool:
    """Does any string of ``message`` hold a NUL? (The cheap check every request pays.)"""
    for field, value in message.ListFields():
        code, repeated = _kind(field)
        if code == _STRING:
            if any(NUL in v for v in value) if repeated else NUL in value:
                return True
        elif code == _MESSAGE:
            if any(has_nul(v) for v in value) if repeated else has_nul(value):
                return True
        elif code == _MAP and nul_fields(message):
            return True
    return False


def refuse_nul(message: Message) -> None:
    """Raise InvalidArgument naming every field of ``message`` that holds a NUL character."""
    if not has_nul(message):
        return
    fields = nul_fields(message)
    if fields:
        raise InvalidArgument(
            [FieldViolation(f, "must not contain NUL characters") for f in fields]
        )

"""Request text no service takes: NUL characters, and strings past a generic size budget,
refused at the door.

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
MAX_FIELD_CHARS = 4096
"""The budget of any one string in any request, checked before a handler (and so before any
regex) runs; each domain's own limits are tighter (names 200, a description 2,000). Why: a
3.8 MB e-mail kept the event loop 0.3 s in the domain's regex after its length was already
refused (issue 25 finding 3)."""


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


def _problem(value: str) -> str | None:
    if len(value) > MAX_FIELD_CHARS:
        return f"must be at most {MAX_FIELD_CHARS} characters"
    if NUL in value:
        return "must not contain NUL characters"
    return None


def _bad(value: str) -> bool:
    return len(value) > MAX_FIELD_CHARS or NUL in value


def text_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """The string fields (at any depth, repeated and map ones too) that hold a NUL or exceed
    MAX_FIELD_CHARS, each with what is wrong."""
    found: list[FieldViolation] = []

    def check(path: str, value: str) -> None:
        problem = _problem(value)
        if problem:
            found.append(FieldViolation(path, problem))

    for field, value in message.ListFields():
        code, repeated = _kind(field)
        if code == _SKIP:
            continue
        path = prefix + field.name
        if code == _STRING:
            for i, item in enumerate(value) if repeated else [(None, value)]:
                check(path if i is None else f"{path}[{i}]", item)
        elif code == _MESSAGE:
            if repeated:
                for i, item in enumerate(value):
                    found += text_violations(item, f"{path}[{i}].")
            else:
                found += text_violations(value, f"{path}.")
        else:
            for key, item in value.items():
                if isinstance(key, str):
                    check(f"{path}[{key[:64]!r}]", key)
                if isinstance(item, str):
                    check(f"{path}[{str(key)[:64]!r}]", item)
                elif isinstance(item, Message):
                    found += text_violations(item, f"{path}[{str(key)[:64]!r}].")
    return found


def has_bad_text(message: Message) -> bool:
    """Does any string of ``message`` break the rules? (The cheap check every request pays.)"""
    for field, value in message.ListFields():
        code, repeated = _kind(field)
        if code == _STRING:
            if any(_bad(v) for v in value) if repeated else _bad(value):
                return True
        elif code == _MESSAGE:
            if any(has_bad_text(v) for v in value) if repeated else has_bad_text(value):
                return True
        elif code == _MAP and text_violations(message):
            return True
    return False


def refuse_bad_text(message: Message) -> None:
    """Raise InvalidArgument naming every string field of ``message`` that holds a NUL
    character or exceeds MAX_FIELD_CHARS."""
    if not has_bad_text(message):
        return
    violations = text_violations(message)
    if violations:
        raise InvalidArgument(violations)

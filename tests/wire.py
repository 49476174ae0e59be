"""Protobuf wire bytes written by hand: requests carrying fields our protos do not declare, as
a client built from other (or forged) protos sends them."""

from __future__ import annotations


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` (wire type 2: bytes, string or message) holding `payload`."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload

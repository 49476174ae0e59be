"""Keyset pagination shared by every List RPC: bounded page sizes and opaque tokens."""

from __future__ import annotations

import base64
import binascii

from google.protobuf.message import Message

from svckit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_PAGE_BYTES = 1024 * 1024
"""A page also ends before its items pass this many encoded bytes, far under the 4 MiB reply
limit: 500 orders of ~1 MB each were built (~350 MB RSS) before gRPC refused the reply
(issue 25 finding 2). The next page token continues after the last item sent."""


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_token(token: str) -> str | None:
    """The id to continue after, or None for the first page."""
    if not token:
        return None
    try:
        last_id = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument([FieldViolation("page_token", "is not a token we issued")]) from exc
    if not last_id:
        raise InvalidArgument([FieldViolation("page_token", "is not a token we issued")])
    return last_id


class PageBudget:
    """What one page may still take: `limit` items and MAX_PAGE_BYTES. The first item is
    always taken (a page never comes back empty while items remain), however large."""

    def __init__(self, limit: int, max_bytes: int = MAX_PAGE_BYTES) -> None:
        self._left = limit
        self._bytes_left = max_bytes
        self._taken = 0

    def take(self, item: Message) -> bool:
        """Count `item` in if it fits; False: the page ends before it."""
        size = item.ByteSize()
        if self._left <= 0 or (self._taken and size > self._bytes_left):
            return False
        self._left -= 1
        self._bytes_left -= size
        self._taken += 1
        return True

"""Keyset pagination shared by every List RPC: bounded page sizes and opaque tokens."""

from __future__ import annotations

import base64
import binascii

from svckit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


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

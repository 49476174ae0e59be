"""The order status (storefront.common.v1.OrderStatus, shared by orders and fulfillment) as
people and documents read it, and the request rules about it both services apply: one
helper each, so every message, stored value and refusal agrees."""

from __future__ import annotations

from storefront.common.v1 import common_pb2
from svckit.errors import Violations

PREFIX = "ORDER_STATUS_"
MAX_NOTE = 500
"""Characters of a note or reason in an order's status history."""


def status_name(status: int, *, short: bool = False) -> str:
    """The enum name (as stored and as JSON prints it), or without its prefix (`short`, for
    messages and tables); a number newer than this code prints as the number."""
    try:
        name = common_pb2.OrderStatus.Name(common_pb2.OrderStatus.ValueType(status))
    except ValueError:
        return str(status)
    return name.removeprefix(PREFIX) if short else name


def check_note(note: str, field: str, v: Violations) -> None:
    """A status change's note (or reason) is bounded: add the violation to `v`."""
    if len(note) > MAX_NOTE:
        v.add(field, f"must be at most {MAX_NOTE} characters")


def status_filter(status: int) -> int | None:
    """A list's status filter: None for "any"; a number this build does not know is refused
    (INVALID_ARGUMENT), not ignored."""
    if status not in common_pb2.OrderStatus.values():
        v = Violations()
        v.add("status", "is not a known order status")
        v.raise_if_any()
    return status or None

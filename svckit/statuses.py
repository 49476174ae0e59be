"""The order status (storefront.common.v1.OrderStatus, shared by orders and fulfillment) as
people and documents read it: one helper, so every message and stored value agrees."""

from __future__ import annotations

from storefront.common.v1 import common_pb2

PREFIX = "ORDER_STATUS_"


def status_name(status: int, *, short: bool = False) -> str:
    """The enum name (as stored and as JSON prints it), or without its prefix (`short`, for
    messages and tables); a number newer than this code prints as the number."""
    try:
        name = common_pb2.OrderStatus.Name(common_pb2.OrderStatus.ValueType(status))
    except ValueError:
        return str(status)
    return name.removeprefix(PREFIX) if short else name

"""Weak etags from aggregate versions (AIP-154), and the check of one a client sent."""

from __future__ import annotations

from svckit.errors import Aborted


def etag_of(version: int) -> str:
    return f'W/"{version}"'


def check_etag(kind: str, aggregate_id: str, current: str, sent: str) -> None:
    """ABORTED when the client sent an etag and it is not the current one; none: no check."""
    if sent and sent != current:
        raise Aborted(
            f"{kind} {aggregate_id} changed since etag {sent} (now {current}); re-read and retry"
        )

"""Ids that sort by creation time, so keyset pages come out oldest first."""

from __future__ import annotations

import os
import re
import time

from svckit.errors import Violations

# Matched whole (fullmatch): a `$` anchor also accepts a trailing newline.
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def new_id() -> str:
    """48-bit millisecond time then 64 random bits, as 28 lowercase hex digits."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def check_client_id(value: str, field: str, violations: Violations) -> None:
    if value and (len(value) > 63 or not CLIENT_ID.fullmatch(value)):
        violations.add(field, "must be 1-63 letters, digits, '-' or '_', starting alphanumeric")

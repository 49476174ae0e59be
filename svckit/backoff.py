"""Waiting out an outage: exponential backoff with jitter, for the loops a service runs on its
own (the outbox relay and its remover, the consumers, the dead-letter writer).

Each failure doubles the wait up to a cap; the wait is drawn from the upper half of it ("equal
jitter"), so processes that lost the database at the same moment fall out of step instead of
retrying together, and a loop never spins faster than half its current step. A success resets
it, so recovery stays as prompt as the cap allows.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        step = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        self.failures = 0

"""Backoff: grows to its cap, jittered within the upper half of each step, reset by success."""

from __future__ import annotations

import random

import pytest

from svckit.backoff import Backoff


def test_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    b = Backoff(0.25, 2.0, random.Random(1))
    steps = [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    delays = [b.next_delay() for _ in steps]
    assert all(s / 2 <= d <= s for d, s in zip(delays, steps, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) == 3  # jittered, not in lockstep
    b.reset()
    assert b.next_delay() <= 0.25


def test_two_processes_failing_together_fall_out_of_step() -> None:
    a, b = Backoff(0.25, 2.0, random.Random(1)), Backoff(0.25, 2.0, random.Random(2))
    assert [a.next_delay() for _ in range(5)] != [b.next_delay() for _ in range(5)]


def test_refuses_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(2.0, 1.0)

"""svckit.guards.matches must agree with MongoDB for the guards the stores use."""

from __future__ import annotations

from svckit.guards import matches


def test_equality_and_missing_fields() -> None:
    assert matches({"version": 3}, {"version": 3})
    assert not matches({"version": 4}, {"version": 3})
    assert not matches({}, {"version": 3})


def test_less_than_never_matches_a_missing_field() -> None:
    assert matches({"version": 2}, {"version": {"$lt": 3}})
    assert not matches({"version": 3}, {"version": {"$lt": 3}})
    assert not matches({}, {"version": {"$lt": 3}})


def test_not_equal_matches_a_missing_field() -> None:
    live = {"deleted": {"$ne": True}}
    assert matches({}, live)
    assert matches({"deleted": False}, live)
    assert not matches({"deleted": True}, live)


def test_every_condition_must_hold() -> None:
    cond = {"version": {"$gte": 2, "$lte": 4}, "deleted": {"$ne": True}}
    assert matches({"version": 3}, cond)
    assert not matches({"version": 5}, cond)
    assert not matches({"version": 3, "deleted": True}, cond)

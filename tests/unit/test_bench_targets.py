"""The bench's verdicts: a scenario meets its target only when every check of it holds."""

from __future__ import annotations

from typing import Any

from bench.runner import TARGETS, judge


def propagation(**fields: Any) -> dict[str, Any]:
    result = {"p99_ms_at_100": 25.0, "highest_rate_p99_within_250ms": 200, "update_rps": 199.9}
    result.update(fields)
    judge(result, TARGETS["propagation"])
    return result


def test_propagation_is_met_only_when_its_three_checks_hold() -> None:
    assert propagation()["met"] is True
    # The 200/s figure is not the 100/s one: a slow tail there fails nothing by itself.
    assert propagation(p99_ms=760.0)["met"] is True
    assert propagation(p99_ms_at_100=101.0)["met"] is False
    assert propagation(highest_rate_p99_within_250ms=100)["met"] is False
    assert propagation(update_rps=189.0)["met"] is False


def test_a_missing_figure_is_not_judged_unless_another_check_fails() -> None:
    # The ladder stops at the first rate that misses, so 100/s may never have run.
    assert propagation(p99_ms_at_100=None)["met"] is None
    assert propagation(p99_ms_at_100=None, update_rps=100.0)["met"] is False


def test_the_target_names_every_check() -> None:
    assert propagation()["target"] == (
        "p99_ms_at_100 <= 100, highest_rate_p99_within_250ms >= 200, update_rps >= 190"
    )
    single: dict[str, Any] = {"ratio": 0.9}
    judge(single, TARGETS["get_customer"])
    assert (single["target"], single["met"]) == ("ratio >= 0.85", True)

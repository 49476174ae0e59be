"""The images suite's phases and their times, printed in the test summary (`make test`)."""

from __future__ import annotations

import time
from typing import Any

PHASES: list[tuple[str, float]] = []
"""(phase, seconds) in the order they ran."""


class Phase:
    """Times a phase of the suite: ``with Phase("build accounts"): ...``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.t0 = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        PHASES.append((self.name, time.monotonic() - self.t0))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PHASES:
        return
    terminalreporter.section("images: phases")
    for name, took in PHASES:
        terminalreporter.write_line(f"{took:7.1f}s  {name}")
    terminalreporter.write_line(f"{sum(t for _, t in PHASES):7.1f}s  in all")

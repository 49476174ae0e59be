"""The benchmark suite cannot rot: `python -m bench --quick` runs every scenario end to end.

It starts its own stack on free ports, so it needs nothing from the session fixtures. Only
the shape of the output is checked, never a figure: CI machines are too noisy for that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]

MEASURED_SECONDS = 320
"""What `python -m bench --quick` took in a whole CI run on this kind of machine (2 cores:
316.6 s on 2026-12-03); the budget below is twice it, with a little for pytest around it."""
BUDGET_SECONDS = 2 * MEASURED_SECONDS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BUDGET_SECONDS + 20)]


def test_quick_bench_prints_the_table_and_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUDGET_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = [line for line in res.stdout.splitlines() if line.startswith("| ")]
    assert table and table[0].split("|")[1].strip() == "scenario", res.stdout[-3000:]
    printed = {line.split("|")[1].strip() for line in table[1:]}
    # A scenario with several measurements prints one row each: "growth get_customer", ...
    missing = [s for s in SCENARIOS if not any(p.split(" ")[0] == s for p in printed)]
    assert not missing, res.stdout[-3000:]

    report = json.loads(out.read_text())
    assert report["profile"] == "quick"
    assert set(report["scenarios"]) == set(SCENARIOS)
    failed = {
        name: scenario["error"]
        for name, scenario in report["scenarios"].items()
        if "error" in scenario
    }
    assert not failed, f"scenarios that did not run: {failed}\n{res.stdout[-3000:]}"
    assert report["machine"]["cpus"] and report["versions"]["protobuf_backend"]
    # Where each call's CPU went (bench.cpu): the service served them, so it spent some.
    spent = report["scenarios"]["get_customer"]["cpu_ms_per_call"]
    assert spent["accounts"] > 0 and spent["machine"] >= spent["accounts"], spent
    assert any(line.startswith("| CPU ms per call") for line in res.stdout.splitlines())

"""The fault suite: thousands of operations across the three flows while every
service and the Kafka broker are SIGKILLed at random points and restarted, and the
database (FerretDB, and PostgreSQL under it) is killed and kept down for 30-45 s.

The mix: customers created and updated (by their own client with an etag, and by
several clients at once without), orders placed, approved, rejected and cancelled,
fulfilments walked. At the end the system must agree with itself (`storefront check`),
with the client's ledger of acknowledged writes (nothing lost, nothing doubled), and
have parked nothing (every DLQ empty): an outage is waited out, never dead-lettered.
Size: STOREFRONT_FAULT_OPS (default 3000), STOREFRONT_FAULT_KILLS (kills of each
process, default 3), STOREFRONT_FAULT_DB_OUTAGES (outages of each database process,
default 1) lasting STOREFRONT_FAULT_DB_SECONDS (default 30-45).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import topology
from stack import logsink
from stack.embedded import FERRETDB, KAFKA, EmbeddedStack, Ports
from stack.postgres import POSTGRES
from storefront_cli import system
from tests import leaks
from tests.faults.common import Phases, examine, run_workload
from tests.faults.workload import Ledger
from tests.support import System, load_catalog

pytestmark = pytest.mark.faults
OPS = int(os.environ.get("STOREFRONT_FAULT_OPS", "3000"))
KILLS = int(os.environ.get("STOREFRONT_FAULT_KILLS", "3"))
DB_OUTAGES = int(os.environ.get("STOREFRONT_FAULT_DB_OUTAGES", "1"))
DB_SECONDS = tuple(
    float(x) for x in os.environ.get("STOREFRONT_FAULT_DB_SECONDS", "30-45").split("-")
)
WORKERS = 8
SETTLE_SECONDS = 120.0
"""At most this long for approved orders' fulfilments to finish their walk after the workload."""
CHECK_SECONDS = 180.0
"""At most this long for `storefront check` to find no divergence."""
# The time budget, from the workload's own size: what each part took on this machine (2 cores,
# loaded; see the phases line the test prints), doubled. Settling and checking are bounded by
# their own deadlines above.
SETUP_SECONDS = 60.0
SECONDS_PER_OP = 0.05
SECONDS_PER_KILL = 10.0
SCAN_SECONDS = 30.0
BUDGET_SECONDS = (
    2
    * (
        SETUP_SECONDS
        + OPS * SECONDS_PER_OP
        + KILLS * (len(topology.SYSTEM.names) + 1) * SECONDS_PER_KILL  # services and Kafka
        + DB_OUTAGES * 2 * (max(DB_SECONDS) + SECONDS_PER_KILL)
        + SCAN_SECONDS
    )
    + SETTLE_SECONDS
    + CHECK_SECONDS
)
PREFIX = "chaos_"


@dataclass
class Chaos:
    stack: EmbeddedStack
    ports: system.SystemPorts
    setup_seconds: float

    def kill_and_restart(self, target: str, pause: float) -> None:
        sup = self.stack.supervisor
        assert sup.kill(target, signal.SIGKILL), f"{target} was not running"
        time.sleep(pause)
        if target in (KAFKA, FERRETDB, POSTGRES):
            sup.restart(target, timeout=120)
        else:
            sup.restart(target, ready=system.health_serving(self.ports.grpc(target)), timeout=120)


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    """Its own stack: this suite kills the broker, which the other suites share."""
    st = EmbeddedStack(
        Path(tempfile.mkdtemp(prefix="storefront-chaos-")), Ports.free(), log=lambda _: None
    )
    began = time.monotonic()
    try:
        st.start()
        ports = system.SystemPorts.free()
        system.start_services(st, ports, db_prefix=PREFIX, log=lambda _: None)
        started = time.monotonic() - began
        load_catalog(System(st, ports, PREFIX))
        yield Chaos(st, ports, started)
    finally:
        st.stop()


async def inject(
    chaos: Chaos, ledger: Ledger, kills: collections.Counter[str], rng: random.Random
) -> None:
    targets = [*topology.SYSTEM.names] + ([] if chaos.stack.external_kafka else [KAFKA])
    plan = targets * KILLS
    if not chaos.stack.external_mongodb:
        plan += [FERRETDB, POSTGRES] * DB_OUTAGES
    rng.shuffle(plan)
    for i, target in enumerate(plan):
        threshold = OPS * (i + 1) // (len(plan) + 1)
        while ledger.operations < threshold:  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.05)
        pause = (
            rng.uniform(*DB_SECONDS) if target in (FERRETDB, POSTGRES) else rng.uniform(0.1, 1.5)
        )
        await asyncio.to_thread(chaos.kill_and_restart, target, pause)
        kills[target] += 1


@pytest.mark.timeout(BUDGET_SECONDS)
async def test_nothing_lost_nothing_doubled_under_sigkill(
    chaos: Chaos, capsys: pytest.CaptureFixture[str]
) -> None:
    phases = Phases(chaos.setup_seconds)
    try:
        await _run_and_audit(chaos, phases, capsys)
    finally:
        with capsys.disabled():
            print(f"\n{phases} budget={BUDGET_SECONDS:.0f}s")


async def _run_and_audit(chaos: Chaos, phases: Phases, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    ledger = Ledger()
    kills: collections.Counter[str] = collections.Counter()
    await run_workload(
        chaos.stack,
        chaos.ports,
        ledger,
        ops=OPS,
        workers=WORKERS,
        seed=100,
        faults=inject(chaos, ledger, kills, random.Random(7)),
        settle_seconds=SETTLE_SECONDS,
        phases=phases,
    )
    found = await examine(
        chaos.stack, chaos.ports, PREFIX, ledger, phases, check_seconds=CHECK_SECONDS
    )
    run_dir = chaos.stack.run_dir
    summary = (
        f"fault suite: operations={ledger.operations} kills={dict(sorted(kills.items()))} "
        f"lost={found.lost} duplicated={found.duplicated} divergence={found.divergence} "
        f"parked={sum(found.parked.values())} retries={ledger.retries} "
        f"customers={len(ledger.customers)} orders={len(ledger.orders)} "
        f"approved={len(ledger.approved)} rejected={len(ledger.rejected)} "
        f"cancelled={len(ledger.cancelled)} leaked={len(found.leaked)} "
        f"log_mb={sum(p.stat().st_size for p in leaks.log_files(run_dir)) / 1e6:.1f} "
        f"seconds={time.monotonic() - started:.0f}"
    )
    with capsys.disabled():
        print("\n" + summary)
    found.assert_clean(run_dir)
    # Outages make every process log errors at hundreds a second: rotation and the collapsing
    # of repeats keep each file within its size (a line past it starts the next file).
    oversized = {
        p.name: p.stat().st_size
        for p in leaks.log_files(chaos.stack.run_dir)
        if p.stat().st_size > logsink.max_bytes() + logsink.MAX_LINE
    }
    assert not oversized, f"logs beyond the rotation size: {oversized}"
    assert ledger.operations >= OPS
    expected = [*topology.SYSTEM.names] + ([] if chaos.stack.external_kafka else [KAFKA])
    assert all(kills[t] >= KILLS for t in expected), kills
    if not chaos.stack.external_mongodb:
        assert kills[FERRETDB] >= DB_OUTAGES and kills[POSTGRES] >= DB_OUTAGES, kills

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
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

import topology
from stack import logsink
from stack.embedded import FERRETDB, KAFKA, EmbeddedStack, Ports
from stack.postgres import POSTGRES
from storefront.common.v1 import common_pb2
from storefront_cli import check, system
from storefront_cli.clients import CLIENT_SERVICES, Clients
from storefront_cli.endpoints import Endpoints
from tests import leaks
from tests.faults.workload import Ledger, Workload
from tests.support import System, load_catalog, read_raw, tokens_of

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
FULFILLMENT_OWNED = {
    "ORDER_STATUS_PROCESSING",
    "ORDER_STATUS_SHIPPED",
    "ORDER_STATUS_IN_TRANSIT",
    "ORDER_STATUS_RECEIVED",
}


@dataclass
class Chaos:
    stack: EmbeddedStack
    ports: system.SystemPorts
    setup_seconds: float

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.stack.kafka, self.stack.mongodb_uri, PREFIX)

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


async def drive(worker: Workload, ledger: Ledger, rng: random.Random) -> None:
    pending: list[str] = []
    n = 0
    while ledger.operations < OPS:
        n += 1
        r = rng.random()
        if not worker.mine or r < 0.12:
            await worker.create_customer(n)
        elif r < 0.22:
            await worker.update_customer()
        elif r < 0.27:
            await worker.update_shared_customer()
        elif r < 0.29 or not ledger.products:
            await worker.create_product(n)
        elif r < 0.32:
            await worker.reprice()
        elif r < 0.45 or not pending:
            oid = await worker.place_order(n)
            decide = rng.random()
            if oid and decide < 0.75:
                await worker.approve(oid)
                pending.append(oid)
            elif oid and decide < 0.85:
                await worker.reject(oid)
            elif oid is None:
                await asyncio.sleep(0.05)
        elif r < 0.49 and not ledger.steps.get(pending[-1]):
            oid = pending.pop()  # approved, not walked yet: cancel it
            if not await worker.cancel(oid):
                pending.append(oid)
        else:
            oid = rng.choice(pending)
            if not await worker.advance(oid):
                await asyncio.sleep(0.05)
            elif len(ledger.steps[oid]) == 4:
                pending.remove(oid)


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


async def audit(chaos: Chaos, ledger: Ledger) -> tuple[int, int, list[str]]:
    """Compare the databases with the ledger: (lost, duplicated, what)."""
    lost, duplicated, what = 0, 0, []
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        chaos.stack.mongodb_uri, tz_aware=True
    )
    try:
        db = {s: client[f"{PREFIX}{s}"] for s in topology.SYSTEM.names}
        for cid, (version, email) in ledger.customers.items():
            doc = await db["accounts"][topology.CUSTOMERS].find_one({"_id": cid})
            copy = await db["orders"][topology.CUSTOMER_COPIES].find_one({"_id": cid})
            for where, got in (("accounts", doc), ("orders copy", copy)):
                # Newer than acknowledged is possible (a retried write without etag may land
                # twice); older, or the acknowledged version with other content, is a loss.
                stored = -1 if got is None else int(got["version"])
                changed = got is not None and got["contact"]["email"] != email
                if stored < version or (stored == version and changed):
                    lost += 1
                    what.append(f"customer {cid} v{version} in {where}")
        for pid, version in ledger.products.items():
            doc = await db["catalog"][topology.PRODUCTS].find_one({"_id": pid})
            copy = await db["orders"][topology.PRODUCT_COPIES].find_one({"_id": pid})
            for where, got in (("catalog", doc), ("orders copy", copy)):
                if got is None or int(got["version"]) < version:
                    lost += 1
                    what.append(f"product {pid} v{version} in {where}")
        for oid in ledger.orders:
            order = await db["orders"][topology.ORDER_DOCUMENTS].find_one({"_id": oid})
            if order is None:
                lost += 1
                what.append(f"order {oid}")
                continue
            for item in order["items"]:
                # Priced by the catalog: at a price the product was acknowledged at, never
                # another (the demo products' prices are the demo's).
                pid, units = item["product"]["id"], int(item["product"]["price"]["units"])
                if pid in ledger.prices and units not in ledger.prices[pid]:
                    lost += 1
                    what.append(f"order {oid} priced {units} for {pid}")
        for oid in ledger.approved:
            count = await db["fulfillment"][topology.FULFILLMENTS].count_documents({"_id": oid})
            if count != 1:
                lost += count == 0
                duplicated += max(0, count - 1)
                what.append(f"order {oid} has {count} fulfillments")
        for oid in ledger.rejected:
            if await db["fulfillment"][topology.FULFILLMENTS].count_documents({"_id": oid}):
                duplicated += 1
                what.append(f"rejected order {oid} has a fulfillment")
        for oid in ledger.cancelled:
            f = await db["fulfillment"][topology.FULFILLMENTS].find_one({"_id": oid})
            if f is not None and f["status"] in (
                "ORDER_STATUS_APPROVED",
                "ORDER_STATUS_PROCESSING",
            ):
                lost += 1
                what.append(f"cancelled order {oid} still active in fulfillment")
        for oid, acked in ledger.steps.items():
            order = await db["orders"][topology.ORDER_DOCUMENTS].find_one({"_id": oid})
            f = await db["fulfillment"][topology.FULFILLMENTS].find_one({"_id": oid})
            for where, doc in (("orders", order), ("fulfillment", f)):
                history = collections.Counter(
                    e["status"] for e in (doc or {}).get("status_events", [])
                )
                for status in acked:
                    name = common_pb2.OrderStatus.Name(common_pb2.OrderStatus.ValueType(status))
                    if history[name] == 0:
                        lost += 1
                        what.append(f"{name} of {oid} missing in {where}")
                for name, count in history.items():
                    if name in FULFILLMENT_OWNED and count > 1:
                        duplicated += count - 1
                        what.append(f"{name} of {oid} x{count} in {where}")
    finally:
        await client.close()
    return lost, duplicated, what


class Phases:
    """How long each phase of the suite took, printed whatever the outcome (an overrun of
    the budget then names its phase)."""

    def __init__(self, setup_seconds: float) -> None:
        self.seconds: dict[str, float] = {"setup": setup_seconds}
        self._since = time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = now - self._since
        self._since = now

    def __str__(self) -> str:
        shown = " ".join(f"{phase}={s:.1f}s" for phase, s in self.seconds.items())
        return f"fault suite phases: {shown}"


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


async def _run_and_audit(
    chaos: Chaos, phases: Phases, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    ledger = Ledger()
    kills: collections.Counter[str] = collections.Counter()
    clients = Clients.connect(
        *(system.grpc_target(chaos.ports, s) for s in CLIENT_SERVICES),
        tokens=tokens_of(chaos.stack),
    )
    try:
        workers = [Workload(clients, ledger, seed) for seed in range(WORKERS)]
        rngs = [random.Random(100 + i) for i in range(WORKERS)]
        chaos_task = asyncio.create_task(inject(chaos, ledger, kills, random.Random(7)))
        await asyncio.gather(*(drive(w, ledger, r) for w, r in zip(workers, rngs, strict=True)))
        await chaos_task
        phases.done("workload")
        # Let in-flight fulfilments finish their walk, so histories are complete; an
        # approval whose fulfillment never appears is left for the audit to count.
        walker = workers[0]
        deadline = time.monotonic() + SETTLE_SECONDS
        for oid in sorted(ledger.approved - ledger.cancelled):
            while len(ledger.steps.setdefault(oid, [])) < 4 and time.monotonic() < deadline:
                if not await walker.advance(oid):
                    await asyncio.sleep(0.1)
        phases.done("settle")
    finally:
        await clients.close()

    lines: list[str] = []
    deadline = time.monotonic() + CHECK_SECONDS
    code = 1
    while code and time.monotonic() < deadline:
        lines.clear()
        code = await check.check(chaos.endpoints, repair=False, wait=0, log=lines.append)
        if code:
            await asyncio.sleep(2)
    phases.done("check")
    lost, duplicated, what = await audit(chaos, ledger)
    found = next((m for line in lines if (m := re.search(r"(\d+) divergences", line))), None)
    divergence = int(found.group(1)) if found else (1 if code else 0)
    parked = {topic: n for topic, n in (await dlq_sizes(chaos)).items() if n}
    phases.done("audit")
    # Kills and outages make every part log errors: none of those lines, nor any DLQ header
    # or record, may carry the customers' names, e-mails or card digits.
    leaked = leaks.log_leaks(chaos.stack.run_dir)
    phases.done("log scan")
    leaked += (await leaks.topic_leaks(chaos.stack.kafka))[0]
    phases.done("topic scan")
    summary = (
        f"fault suite: operations={ledger.operations} kills={dict(sorted(kills.items()))} "
        f"lost={lost} duplicated={duplicated} divergence={divergence} parked={sum(parked.values())} "
        f"retries={ledger.retries} customers={len(ledger.customers)} orders={len(ledger.orders)} "
        f"approved={len(ledger.approved)} rejected={len(ledger.rejected)} "
        f"cancelled={len(ledger.cancelled)} leaked={len(leaked)} "
        f"log_mb={sum(p.stat().st_size for p in leaks.log_files(chaos.stack.run_dir)) / 1e6:.1f} "
        f"seconds={time.monotonic() - started:.0f}"
    )
    with capsys.disabled():
        print("\n" + summary)
    assert code == 0, "storefront check still finds divergence:\n" + "\n".join(lines)
    assert (lost, duplicated) == (0, 0), "\n".join(what[:30])
    assert not parked, f"an outage parked events: {parked}"
    assert not leaked, f"personal data in {chaos.stack.run_dir}:\n" + "\n".join(leaked[:20])
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


async def dlq_sizes(chaos: Chaos) -> dict[str, int]:
    """Records in each dead-letter topic of this suite's own stack."""
    return {
        dlq: len(await read_raw(chaos.stack.kafka, dlq))
        for dlq in tuple(d.name for d in topology.SYSTEM.dead_letters)
    }

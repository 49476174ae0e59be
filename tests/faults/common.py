"""What both fault suites share (the single-process one, test_chaos.py, and the one at
scale, test_scale_chaos.py): the workload's mix, the audit of the databases against the
client's ledger, the dead-letter count and the phases line."""

from __future__ import annotations

import asyncio
import collections
import random
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

import topology
from stack.embedded import EmbeddedStack
from storefront.common.v1 import common_pb2
from storefront_cli import check, system
from storefront_cli.clients import CLIENT_SERVICES, Clients
from storefront_cli.endpoints import Endpoints
from tests import leaks
from tests.faults.workload import Ledger, Workload
from tests.support import read_raw, tokens_of

FULFILLMENT_OWNED = {
    "ORDER_STATUS_PROCESSING",
    "ORDER_STATUS_SHIPPED",
    "ORDER_STATUS_IN_TRANSIT",
    "ORDER_STATUS_RECEIVED",
}


async def drive(
    worker: Workload,
    ledger: Ledger,
    rng: random.Random,
    ops: int,
    more: Callable[[], bool] = lambda: False,
) -> None:
    """One worker's share of the mix until the ledger counts `ops` operations (and, while
    `more()` says so, on: every fault meets clients at work)."""
    pending: list[str] = []
    n = 0
    while ledger.operations < ops or more():
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


async def audit(stack: EmbeddedStack, prefix: str, ledger: Ledger) -> tuple[int, int, list[str]]:
    """Compare the databases (of `prefix`) with the ledger: (lost, duplicated, what)."""
    lost, duplicated, what = 0, 0, []
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongodb_uri, tz_aware=True)
    try:
        db = {s: client[f"{prefix}{s}"] for s in topology.SYSTEM.names}
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


async def dlq_sizes(stack: EmbeddedStack) -> dict[str, int]:
    """Records in each dead-letter topic of a suite's own stack."""
    return {
        dlq: len(await read_raw(stack.kafka, dlq))
        for dlq in tuple(d.name for d in topology.SYSTEM.dead_letters)
    }


async def run_workload(
    stack: EmbeddedStack,
    ports: system.SystemPorts,
    ledger: Ledger,
    *,
    ops: int,
    workers: int,
    seed: int,
    faults: Coroutine[Any, Any, None],
    settle_seconds: float,
    phases: Phases,
    through_faults: bool = False,
) -> None:
    """`workers` clients (of every replica, round robin) driving the mix to `ops` operations
    while `faults` runs, then the in-flight fulfilments walked to the end (histories
    complete; an approval whose fulfillment never appears is left for the audit to count)."""
    clients = Clients.connect(
        *(system.grpc_target(ports, s) for s in CLIENT_SERVICES), tokens=tokens_of(stack)
    )
    try:
        drivers = [Workload(clients, ledger, n) for n in range(workers)]
        rngs = [random.Random(seed + n) for n in range(workers)]
        faults_task = asyncio.create_task(faults)
        more = (lambda: not faults_task.done()) if through_faults else (lambda: False)
        await asyncio.gather(
            *(drive(w, ledger, r, ops, more) for w, r in zip(drivers, rngs, strict=True))
        )
        await faults_task
        phases.done("workload")
        walker = drivers[0]
        deadline = time.monotonic() + settle_seconds
        for oid in sorted(ledger.approved - ledger.cancelled):
            while len(ledger.steps.setdefault(oid, [])) < 4 and time.monotonic() < deadline:
                if not await walker.advance(oid):
                    await asyncio.sleep(0.1)
        phases.done("settle")
    finally:
        await clients.close()


async def until_consistent(
    stack: EmbeddedStack, ports: system.SystemPorts, seconds: float
) -> tuple[int, int, list[str]]:
    """`storefront check` again and again until it finds no divergence or `seconds` pass:
    (its exit code, the divergences it last counted, its last report). It asks this system's
    services (every replica) as the operator, as the CLI does."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    code = 1
    clients = Clients.connect(
        *(system.grpc_target(ports, s) for s in CLIENT_SERVICES),
        tokens=tokens_of(stack),
        admin={s: system.admin_target(ports, s) for s in topology.SYSTEM.names},
    )
    try:
        while code and time.monotonic() < deadline:
            lines.clear()
            code = await check.check(
                Endpoints(stack.kafka, stack.mongodb_uri),
                repair=False,
                wait=0,
                log=lines.append,
                clients=clients,
            )
            if code:
                await asyncio.sleep(2)
    finally:
        await clients.close()
    found = next((m for line in lines if (m := re.search(r"(\d+) divergences", line))), None)
    divergence = int(found.group(1)) if found else (1 if code else 0)
    return code, divergence, lines


@dataclass
class Outcome:
    """What a fault suite found once the workload was over: the check, the audit against the
    ledger, the dead letters and any personal data in logs, headers or records."""

    check_code: int
    divergence: int
    check_lines: list[str]
    lost: int
    duplicated: int
    what: list[str]
    parked: dict[str, int]
    leaked: list[str]

    def assert_clean(self, run_dir: Path) -> None:
        assert self.check_code == 0, "storefront check still finds divergence:\n" + "\n".join(
            self.check_lines
        )
        assert (self.lost, self.duplicated) == (0, 0), "\n".join(self.what[:30])
        assert not self.parked, f"an outage parked events: {self.parked}"
        # Kills and outages make every part log errors: none of those lines, nor any DLQ
        # header or record, may carry the customers' names, e-mails or card digits.
        assert not self.leaked, f"personal data in {run_dir}:\n" + "\n".join(self.leaked[:20])


async def examine(
    stack: EmbeddedStack,
    ports: system.SystemPorts,
    prefix: str,
    ledger: Ledger,
    phases: Phases,
    *,
    check_seconds: float,
) -> Outcome:
    """The check until clean (or `check_seconds`), the audit, the dead letters, the scans."""
    code, divergence, lines = await until_consistent(stack, ports, check_seconds)
    phases.done("check")
    lost, duplicated, what = await audit(stack, prefix, ledger)
    parked = {topic: n for topic, n in (await dlq_sizes(stack)).items() if n}
    phases.done("audit")
    leaked = leaks.log_leaks(stack.run_dir)
    phases.done("log scan")
    leaked += (await leaks.topic_leaks(stack.kafka))[0]
    phases.done("topic scan")
    return Outcome(code, divergence, lines, lost, duplicated, what, parked, leaked)

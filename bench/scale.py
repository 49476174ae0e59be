"""`python -m bench.scale [--quick]`: the same calls with 1 and 3 processes of every service
and 1 and 3 Kafka brokers, on this machine.

For each shape: CreateCustomer and GetCustomer through Envoy (native gRPC; Envoy balances
over the replicas, so every shape is measured through the same door), CustomerChanged
propagation (UpdateCustomer at a fixed rate, accounts commit -> orders' copy, summed over
orders' replicas' histograms), and the duplicate publishes per 1,000 events on the topic
(one event id on it twice; without faults). Prints one table, writes bench/scale-results.json.

On two cores, more processes share the same two CPUs: replicas measure what coordination
costs and that nothing breaks, not a gain in throughput (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import topology
from bench import data, loadgen
from bench.harness import ROOT, Harness
from bench.machine import machine
from bench.scrape import propagation_buckets
from bench.stats import histogram_quantile
from storefront_cli import system
from svckit.ids import new_id
from svckit.replay import TopicReader

RESULTS = ROOT / "bench" / "scale-results.json"
ACCOUNTS = "storefront.accounts.v1.AccountsService"
SHAPES = ((1, 1), (3, 1), (1, 3), (3, 3))
"""(replicas, brokers)."""


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: float
    concurrency: int
    customers: int
    update_rate: int


FULL = Profile("full", 10.0, 32, 500, 100)
QUICK = Profile("quick", 2.0, 8, 50, 50)


def log(msg: str) -> None:
    print(msg, flush=True)


def measure(profile: Profile, replicas: int, brokers: int) -> dict[str, Any]:
    h = Harness(Path(tempfile.mkdtemp(prefix="storefront-bench-scale-")), log, None, None)
    h.replicas, h.brokers = replicas, brokers
    t0 = time.monotonic()
    try:
        h.start_stack()
        assert h.stack and h.ports
        for process in h.ports.processes():
            h.start_service(process, wait=False)
        for process in h.ports.processes():
            h.wait_service(process)
        h.start_envoy()
        started = time.monotonic() - t0
        issuer = system.local_issuer(h.stack)
        envoy = f"127.0.0.1:{h.ports.envoy}"
        ids = [new_id() for _ in range(profile.customers)]
        tokens = [{"authorization": f"Bearer {issuer.customer(i)}"} for i in ids]
        created = loadgen.ghz(
            envoy,
            f"{ACCOUNTS}.CreateCustomer",
            [{"customer": data.customer_body(n), "customer_id": i} for n, i in enumerate(ids)],
            concurrency=profile.concurrency,
            duration=profile.seconds * 10,
            total=len(ids),
            metadata=tokens,
        )
        staff = {"authorization": f"Bearer {issuer.role('staff')}"}
        reads = loadgen.ghz(
            envoy,
            f"{ACCOUNTS}.GetCustomer",
            [{"customer_id": i} for i in ids],
            concurrency=profile.concurrency,
            duration=profile.seconds,
            metadata=staff,
        )
        metrics = [
            f"http://127.0.0.1:{h.ports.metrics(p)}/metrics"
            for p in h.ports.instances(topology.ORDERS)
        ]
        time.sleep(3.0)
        before = _buckets(metrics)
        updates = loadgen.ghz(
            envoy,
            f"{ACCOUNTS}.UpdateCustomer",
            [
                {
                    "customer": {"id": i, "contact": {"email": f"moved-{n}@example.com"}},
                    "update_mask": {"paths": ["contact.email"]},
                }
                for n, i in enumerate(ids)
            ],
            concurrency=8,
            duration=profile.seconds,
            rps=profile.update_rate,
            metadata=tokens,
        )
        time.sleep(3.0)
        after = _buckets(metrics)
        buckets = [(le, after.get(le, 0.0) - before.get(le, 0.0)) for le in sorted(after)]
        events, extra = asyncio.run(_duplicates(h))
        return {
            "replicas": replicas,
            "brokers": brokers,
            "start_s": round(started, 1),
            "create_rps": round(created.rps, 1),
            "create_errors": created.errors,
            "get_rps": round(reads.rps, 1),
            "get_p99_ms": round(reads.p99_ms, 1),
            "update_rps": round(updates.rps, 1),
            "propagation_p99_ms": round(histogram_quantile(0.99, buckets) * 1e3, 1)
            if buckets and buckets[-1][1]
            else None,
            "events": events,
            "duplicate_publishes_per_1000": round(1000 * extra / events, 2) if events else None,
        }
    except Exception as exc:  # noqa: BLE001 - one shape failing still reports the others
        return {"replicas": replicas, "brokers": brokers, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        h.stop()
        shutil.rmtree(h.run_dir, ignore_errors=True)


def _buckets(urls: list[str]) -> dict[float, float]:
    total: dict[float, float] = collections.defaultdict(float)
    for url in urls:
        for le, count in propagation_buckets(url).items():
            total[le] += count
    return dict(total)


async def _duplicates(h: Harness) -> tuple[int, int]:
    """(events on accounts' topic, publishes beyond the first of an event)."""
    assert h.stack
    seen: collections.Counter[bytes] = collections.Counter()
    async with TopicReader(h.stack.kafka, [topology.CUSTOMER_CHANGES]) as reader:
        async for record in reader.records():
            seen[dict(record.headers).get("ce_id", b"")] += 1
    return len(seen), sum(n - 1 for n in seen.values())


COLUMNS = (
    "replicas",
    "brokers",
    "start_s",
    "create_rps",
    "get_rps",
    "get_p99_ms",
    "propagation_p99_ms",
    "duplicate_publishes_per_1000",
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['replicas']} | {r['brokers']} | error: {r['error'][:80]} |")
        else:
            lines.append("| " + " | ".join(str(r.get(c, "-")) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds per shape (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    rows = []
    for replicas, brokers in SHAPES:
        log(f"[bench.scale] {replicas} replicas, {brokers} brokers")
        rows.append(measure(profile, replicas, brokers))
    report = {"profile": profile.name, "machine": machine(load_before), "shapes": rows}
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(table(rows))
    print(f"\n[bench.scale] results written to {args.out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())

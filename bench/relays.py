"""`python -m bench.relays`: several outbox relays (replicas) sharing one collection.

Each relay has its own producer and its own writer, which commits version-guarded updates
with their events through svckit.store to documents the writers share (so replicas race for
the same documents, as replicas of a service do). When every committed event is on the topic,
prints the duplicate publishes per 1,000 events (read from the topic by ce_id, and the relays'
own `storefront_outbox_duplicate_publishes_total`), what the recovery sweeps published, and
the time from commit to the outboxes being empty. Runs on its own embedded stack.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from stack.embedded import EmbeddedStack, Ports, ensure_topics
from storefront.accounts.v1 import events_pb2
from svckit import metrics, mongo
from svckit.kafka import EventProducer, KafkaConnection
from svckit.outbox import OUTBOX, OutboxRelay, outbox_entry
from svckit.replay import TopicReader
from svckit.store import AggregateStore

Document = dict[str, Any]
TOPIC = "bench.relays"
SERVICE = "bench-relays"


async def writer(
    collection: AsyncCollection[Document], owner: str, keys: list[str], rate: float
) -> list[str]:
    """Commit one event per key in `keys`, at `rate` per second; the ids committed."""
    store = AggregateStore(collection, events_pb2.CustomerChanged, "customer_id")
    committed = []
    began = time.monotonic()
    for n, key in enumerate(keys):
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        while True:
            doc = await collection.find_one({"_id": key}, {"version": 1})
            version = 1 + (doc["version"] if doc else 0)
            event = events_pb2.CustomerChanged(customer_id=key, version=version)
            entry = outbox_entry(TOPIC, key, event, source="//bench", seq=version, by=owner)
            if doc is None:
                try:
                    await store.insert(event, [entry])
                except Exception:  # noqa: BLE001 - another writer inserted it first
                    continue
            elif not await store.update(event, doc["version"], [entry]):
                continue  # another writer came first: re-read
            committed.append(entry["id"])
            break
    return committed


async def published(kafka: KafkaConnection) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    async with TopicReader(kafka, [TOPIC]) as reader:
        async for record in reader.records():
            found[dict(record.headers or ()).get("ce_id", b"").decode()] += 1
    return found


async def run(stack: EmbeddedStack, relays: int, events: int, rate: float, linger: int) -> None:
    await ensure_topics(stack.kafka, [TOPIC], partitions=3)
    client = mongo.connect(stack.mongodb_uri)
    collection = client["bench_relays"]["aggregates"]
    await collection.drop()
    producers = [
        EventProducer(stack.kafka, f"bench-relay-{n}", linger_ms=linger) for n in range(relays)
    ]
    for p in producers:
        await p.start()
    running = [
        OutboxRelay(collection, p, service=SERVICE, owner=f"relay-{n}")
        for n, p in enumerate(producers)
    ]
    for relay in running:
        await relay.ensure_index()
        await relay.start()
    keys = [f"k{n % max(1, events // 10)}" for n in range(events)]
    began = time.monotonic()
    done = await asyncio.gather(
        *(
            writer(collection, r.owner, keys[i::relays], rate / relays)
            for i, r in enumerate(running)
        )
    )
    committed = {i for ids in done for i in ids}
    wrote = time.monotonic() - began
    for _ in range(3000):  # the relays drain on their own; poll until they have (10 min)
        if not await collection.count_documents({f"{OUTBOX}.0": {"$exists": True}}):
            break
        await asyncio.sleep(0.2)
    drained = time.monotonic() - began
    for relay in running:
        await relay.stop()
    for p in producers:
        await p.stop()
    found = await published(stack.kafka)
    extra = sum(found[i] - 1 for i in committed if found[i] > 1)
    missing = sum(1 for i in committed if not found[i])
    counted = metrics.OUTBOX_DUPLICATE_PUBLISHES.labels(SERVICE, collection.name)._value.get()
    recovered = metrics.OUTBOX_RECOVERED.labels(SERVICE, collection.name)._value.get()
    print(
        f"[relays] {relays} relays, linger {linger} ms: {len(committed)} events committed in "
        f"{wrote:.1f} s ({len(committed) / wrote:.0f}/s), outboxes empty after {drained:.1f} s; "
        f"missing {missing}; duplicate publishes {extra} on the topic "
        f"({1000 * extra / len(committed):.2f} per 1,000), {counted:.0f} counted by the relays; "
        f"{recovered:.0f} published by recovery sweeps"
    )
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relays", description=__doc__)
    parser.add_argument("--relays", type=int, default=3)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0, help="commits per second, in all")
    parser.add_argument("--linger", type=int, default=5, help="the producers' linger_ms")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="storefront-bench-relays-"))
    stack = EmbeddedStack(run_dir, Ports.free())
    try:
        stack.start()
        asyncio.run(run(stack, args.relays, args.events, args.rate, args.linger))
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The raw ceilings, each a separate uvloop process like a service, no service code in the way.

    python -m bench.raw mongo [--uri U] --db D --collection C \\
        --op find|update|insert|outbox|propagate --ids-file F --concurrency 32 --duration 10
    python -m bench.raw consume --topic T --group G [--uri U] --db D --expect N

Both print one JSON line. `mongo` runs `concurrency` tasks, each a find_one by _id (of the ids
in the file, round robin) or an insert_one of a customer document as accounts stores it, in a
loop for `duration` seconds (`outbox` and `propagate`: the least database work of a sign-up
and of a propagated update, below). `consume` reads CustomerChanged events and, per poll batch and
partition, upserts each customer's copy with one bulk_write, then commits, until it has
processed `expect` records: the least work a consumer can do for the same result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import topology
from bench.stats import percentile


async def mongo_loop(args: argparse.Namespace) -> dict[str, Any]:
    from pymongo import AsyncMongoClient

    from bench.data import customer_draft
    from storefront.accounts.v1 import events_pb2
    from svckit.documents import to_document
    from svckit.outbox import OUTBOX, outbox_entry

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.uri, tz_aware=True)
    coll = client[args.db][args.collection]
    ids = json.loads(Path(args.ids_file).read_text()) if args.ids_file else []  # noqa: ASYNC240
    template = to_document(customer_draft(), id_field="id")
    event = events_pb2.CustomerChanged(customer_id="x", version=1)
    template[OUTBOX] = [outbox_entry(topology.CUSTOMER_CHANGES, "x", event, source="bench", seq=1)]
    await client.admin.command("ping")
    if args.op == "propagate":
        await coll.delete_many({})
        await coll.insert_many([{**template, "_id": i, OUTBOX: [], "version": 1} for i in ids])
        await client[args.db][f"{args.collection}.copies"].delete_many({})
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + args.duration

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        mine = ids[w :: args.concurrency]  # `propagate`: no two workers share a document
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                if args.op == "find":
                    await coll.find_one({"_id": ids[i % len(ids)]}, {OUTBOX: 0})
                elif args.op == "update":
                    await coll.update_one({"_id": ids[i % len(ids)]}, {"$set": {"touched": i}})
                elif args.op == "insert":
                    await coll.insert_one({**template, "_id": uuid.uuid4().hex})
                elif args.op == "propagate":
                    await propagate(coll, mine[i // args.concurrency % len(mine)], i, event)
                else:  # what an in-document outbox needs at least: write, read back, clear
                    doc_id = uuid.uuid4().hex
                    await coll.insert_one({**template, "_id": doc_id})
                    stored = await coll.find_one({"_id": doc_id}, {OUTBOX: 1})
                    assert stored is not None
                    await coll.update_one({"_id": doc_id}, {"$pull": {OUTBOX: stored[OUTBOX][0]}})
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            latencies.append(time.perf_counter() - t0)
            i += args.concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    seconds = time.perf_counter() - started
    await client.close()
    ok = len(latencies) - errors
    return {
        "tool": f"raw-{args.op}",
        "requests": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "rps": ok / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "concurrency": args.concurrency,
    }


async def propagate(coll: Any, doc_id: str, n: int, event: Any) -> None:
    """What one propagated update needs of the database at least, and nothing else (no gRPC,
    Kafka or service code): read the document the change is decided on, write the change with
    its outbox entry guarded by the version, clear the entry once published, and upsert the
    consumer's copy. Each worker has its own ids (`--concurrency` divides them), so the guard
    never loses; `coll` is a collection of its own (the relays would publish its entries)."""
    from svckit.outbox import OUTBOX, outbox_entry

    current = await coll.find_one({"_id": doc_id}, {OUTBOX: 0})
    assert current is not None
    entry = outbox_entry(topology.CUSTOMER_CHANGES, doc_id, event, source="bench", seq=n)
    email = f"moved-{n}@example.com"
    done = await coll.update_one(
        {"_id": doc_id, "version": current["version"]},
        {"$set": {"contact.email": email}, "$inc": {"version": 1}, "$push": {OUTBOX: entry}},
    )
    assert done.modified_count == 1
    await coll.update_one({"_id": doc_id}, {"$pull": {OUTBOX: {"id": entry["id"]}}})
    copy = {k: current[k] for k in ("name", "addresses") if k in current}
    await coll.database[f"{coll.name}.copies"].update_one(
        {"_id": doc_id},
        {"$set": {**copy, "contact.email": email, "version": current["version"] + 1}},
        upsert=True,
    )


async def consume_loop(args: argparse.Namespace) -> dict[str, Any]:
    from google.protobuf import json_format
    from pymongo import AsyncMongoClient, UpdateOne

    from storefront.accounts.v1 import events_pb2
    from svckit import guards
    from svckit.kafka import KafkaConnection

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.uri, tz_aware=True)
    coll = client[args.db]["customers"]
    consumer = KafkaConnection.from_env().consumer(  # KAFKA_* from the bench runner
        args.topic,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    await consumer.start()
    done = 0
    first: float | None = None
    try:
        while done < args.expect:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for tp, records in batches.items():
                first = first or time.perf_counter()
                ops = []
                for record in records:
                    event = events_pb2.CustomerChanged.FromString(record.value)
                    fields = json_format.MessageToDict(event, preserving_proto_field_name=True)
                    data: dict[str, Any] = {
                        k: fields[k] for k in ("name", "contact", "addresses") if k in fields
                    }
                    update = {"$set": {**data, "version": event.version, "deleted": False}}
                    ops.append(UpdateOne({"_id": event.customer_id}, update, upsert=True))
                await guards.bulk_write(coll, ops)  # FerretDB: <= 20 per command
                await consumer.commit({tp: records[-1].offset + 1})
                done += len(records)
    finally:
        await consumer.stop()
        await client.close()
    seconds = time.perf_counter() - (first or time.perf_counter())
    return {"tool": "raw-consume", "events": done, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mongo")
    uri = os.environ.get("MONGODB_URI")  # from the environment: it may hold a password
    m.add_argument("--uri", default=uri, required=uri is None)
    m.add_argument("--db", required=True)
    m.add_argument("--collection", required=True)
    ops = ("find", "update", "insert", "outbox", "propagate")
    m.add_argument("--op", choices=ops, required=True)
    m.add_argument("--ids-file", default="")
    m.add_argument("--concurrency", type=int, default=32)
    m.add_argument("--duration", type=float, default=10.0)
    c = sub.add_parser("consume")
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--uri", default=uri, required=uri is None)
    c.add_argument("--db", required=True)
    c.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    result = asyncio.run(mongo_loop(args) if args.cmd == "mongo" else consume_loop(args))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

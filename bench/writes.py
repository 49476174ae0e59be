"""`python -m bench.writes`: what one propagated update's writes cost PostgreSQL, in units this
machine's drifting speed does not touch (the embedded FerretDB only).

A collection indexed as accounts_svc and the outbox declare it ((_cards_key, _id),
(deleted, _id), _outbox_pending), filled with customer-sized documents, then, per round, what
an update does to it: a find by _id, the guarded update that sets the change and pushes an
outbox entry, and the relay's ``$pull`` of that entry. Prints, per round, the statements
FerretDB sent PostgreSQL (``pg_stat_statements``, loaded into this bench's server only), its
transactions and buffer accesses (``pg_stat_database``), WAL records, bytes and full-page
images (``pg_stat_wal``), and the collection's PostgreSQL indexes with their scans. CPU-time
and rate figures drift by up to 1.5x between runs minutes apart here (docs/performance.md,
"Patch 0010"); these counts do not, so a change to what a write maintains (an index, a patch,
a statement) is compared with them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from stack.embedded import EmbeddedStack, Ports

DB, COLLECTION = "bench_writes", "customer.accounts"
COUNTERS = (
    "statements",
    "transactions",
    "buffer accesses",
    "WAL records",
    "WAL bytes",
    "WAL full-page images",
)
STATEMENTS = "pg_stat_statements"
"""Loaded into this bench's own server only: it counts every statement FerretDB sends
(BEGIN and COMMIT too, as utility statements)."""


def _counters(stack: EmbeddedStack) -> list[float]:
    statements = stack.postgres.psql("ferretdb", f"SELECT sum(calls) FROM {STATEMENTS}")
    database = stack.postgres.psql(
        "ferretdb",
        "SELECT xact_commit + xact_rollback, blks_hit + blks_read FROM pg_stat_database"
        " WHERE datname = 'ferretdb'",
    )
    wal = stack.postgres.psql("ferretdb", "SELECT wal_records, wal_bytes, wal_fpi FROM pg_stat_wal")
    values = [statements, *database.strip().split("|"), *wal.strip().split("|")]
    return [float(v) for v in values]


def measure(stack: EmbeddedStack, documents: int, rounds: int) -> dict[str, float]:
    """Counters per round (find, guarded update with an outbox entry, ``$pull``)."""
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongodb_uri)
    try:
        col = client[DB][COLLECTION]
        col.drop()
        col.create_index([("_cards_key", 1), ("_id", 1)])
        col.create_index([("deleted", 1), ("_id", 1)])
        col.create_index("_outbox_pending")
        pad = "x" * 1200  # with the rest, a stored row of about 1.6 KB, as a customer's
        col.insert_many(
            [
                {"_id": f"c{i:06d}", "name": "A B", "pad": pad, "version": 1, "_cards_key": "k1"}
                for i in range(documents)
            ]
        )
        stack.postgres.psql("ferretdb", "VACUUM ANALYZE")
        stack.postgres.psql("ferretdb", "CHECKPOINT")
        stack.postgres.psql("ferretdb", f"CREATE EXTENSION IF NOT EXISTS {STATEMENTS}")
        before = _counters(stack)
        for n in range(rounds):
            cid = f"c{n % documents:06d}"
            doc = col.find_one({"_id": cid})
            assert doc is not None
            entry = uuid.uuid4().hex
            col.update_one(
                {"_id": cid, "version": doc["version"]},
                {
                    "$set": {"version": doc["version"] + 1, "_outbox_pending": True},
                    "$push": {"_outbox": {"id": entry, "value": pad[:400]}},
                },
            )
            col.update_one({"_id": cid}, {"$pull": {"_outbox": {"id": entry}}})
            if (n + 1) % 500 == 0:
                print(f"[bench] writes: {n + 1} of {rounds} rounds", flush=True)
        after = _counters(stack)
    finally:
        client.close()
    return {name: (b - a) / rounds for name, a, b in zip(COUNTERS, before, after, strict=True)}


def index_scans(stack: EmbeddedStack) -> str:
    return stack.postgres.psql(
        "ferretdb",
        "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"
        f" WHERE schemaname = '{DB}' AND relname NOT LIKE '\\_ferretdb\\_%' ORDER BY 1",
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__)
    parser.add_argument("--documents", type=int, default=1000, help="documents in the collection")
    parser.add_argument("--rounds", type=int, default=2000, help="find-update-pull rounds")
    args = parser.parse_args()
    if args.documents < 1 or args.rounds < 1:
        parser.error("--documents and --rounds must be at least 1")
    run_dir = Path(tempfile.mkdtemp(prefix="storefront-bench-writes-"))
    stack = EmbeddedStack(run_dir, Ports.free())
    stack.postgres.extra_settings = {"shared_preload_libraries": STATEMENTS}
    try:
        stack.start()
        per_round = measure(stack, args.documents, args.rounds)
        scans = index_scans(stack)
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"per find-update-pull round ({args.rounds} rounds, {args.documents} documents):")
    for name, value in per_round.items():
        print(f"  {name:<22} {value:>10.1f}")
    print("PostgreSQL indexes of the collection, and their scans:")
    for line in scans.split():
        name, scans_ = line.rsplit("|", 1)
        print(f"  {name:<64} {scans_:>8}")


if __name__ == "__main__":
    main()

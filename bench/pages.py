"""`python -m bench.pages`: raw keyset pages (range + sort + limit) beside find_one by _id.

The database-level figure under the list RPCs: a collection of orders indexed as orders_svc
declares it (status, _id), filled to each size, then timed sequentially with one client:
find_one by _id, a deep page (``_id > x`` near the end, sort _id, limit 50), the same with a
status, and a first page (no ``_id`` bound). Prints one line per size and query; no targets are
asserted here. Runs on its own embedded stack, or on ``--uri`` (a real MongoDB for reference).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, MongoClient

from stack.embedded import EmbeddedStack, Ports

PAGE = 50
STATUSES = 5


def _fill(client: MongoClient[dict[str, Any]], db: str, size: int) -> None:
    col = client[db]["orders"]
    col.drop()
    col.create_index([("status", ASCENDING), ("_id", ASCENDING)])
    batch = 2000
    for start in range(0, size, batch):
        col.insert_many(
            [
                {"_id": f"o{i:08d}", "status": f"s{i % STATUSES}", "customer_id": f"c{i % 997}"}
                for i in range(start, min(size, start + batch))
            ]
        )
    client[db].command("compact", "orders")  # VACUUM ANALYZE on FerretDB: fresh statistics


def _time(op: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of ``op`` over ``repeat`` runs (after one warm-up)."""
    op()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        op()
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs)


def _measure_size(
    client: MongoClient[dict[str, Any]], size: int, repeat: int, rng: random.Random
) -> list[tuple[int, str, float]]:
    db = f"bench_pages_{size}"
    _fill(client, db, size)
    col = client[db]["orders"]

    def deep() -> str:
        return f"o{rng.randrange(size - 20 * PAGE, size - PAGE):08d}"

    def page(query: dict[str, Any]) -> list[dict[str, Any]]:
        return list(col.find(query).sort("_id", 1).limit(PAGE))

    queries: dict[str, Callable[[], Any]] = {
        "find_one by _id": lambda: col.find_one({"_id": f"o{rng.randrange(size):08d}"}),
        "deep page: _id > x": lambda: page({"_id": {"$gt": deep()}}),
        "deep page: status, _id > x": lambda: page({"status": "s3", "_id": {"$gt": deep()}}),
        "first page: status": lambda: page({"status": "s3"}),
    }
    rows = [(size, name, _time(op, repeat)) for name, op in queries.items()]
    client.drop_database(db)
    return rows


def measure(uri: str, sizes: list[int], repeat: int) -> list[tuple[int, str, float]]:
    rng = random.Random(7)
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        return [row for size in sizes for row in _measure_size(client, size, repeat, rng)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__)
    parser.add_argument("--uri", help="a MongoDB URI (default: an embedded stack of its own)")
    parser.add_argument("--sizes", default="1000,100000", help="collection sizes")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    run_dir = Path(tempfile.mkdtemp(prefix="storefront-bench-pages-"))
    stack = None
    try:
        uri = args.uri
        if not uri:
            stack = EmbeddedStack(run_dir, Ports.free())
            stack.start()
            uri = stack.mongodb_uri
        rows = measure(uri, sizes, args.repeat)
    finally:
        if stack:
            stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    base = {size: ms for size, name, ms in rows if name == "find_one by _id"}
    print(f"{'size':>8}  {'query':<28} {'median ms':>10} {'x find_one':>10}")
    for size, name, ms in rows:
        print(f"{size:>8}  {name:<28} {ms:>10.2f} {ms / base[size]:>10.1f}")


if __name__ == "__main__":
    main()

"""`python -m bench.pages`: raw keyset pages (range + sort + limit) beside find_one by _id.

The database-level figure under the list RPCs: a collection of orders indexed as orders_svc
declares it ((status, _id) and (customer_id, _id)), filled to each size, then timed
sequentially with one client: find_one by _id; pages of 50 as svckit.store.page asks for them
(sort _id, limit), first (no ``_id`` bound) and deep (``_id > x`` near the end), on _id alone
(ListProducts), by status (ListOrders, ListFulfillments) and by customer; and a page sorted the
other way (the newest first). Prints one line per size and query, with its ratio to find_one;
no targets are asserted here. ``--plans`` also prints PostgreSQL's plan of each page at the
last size (the embedded FerretDB only). Runs on its own embedded stack, or on ``--uri`` (a real
MongoDB for reference).
"""

from __future__ import annotations

import argparse
import functools
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient

from stack.embedded import EmbeddedStack, Ports

PAGE = 50
STATUSES = 5


def _fill(client: MongoClient[dict[str, Any]], db: str, size: int) -> None:
    col = client[db]["orders"]
    col.drop()
    col.create_index([("status", ASCENDING), ("_id", ASCENDING)])
    col.create_index([("customer_id", ASCENDING), ("_id", ASCENDING)])
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


def _pages(size: int, rng: random.Random) -> dict[str, tuple[dict[str, Any], int]]:
    """The pages timed: name -> (filter, direction of the sort on _id), drawn afresh per run."""

    def deep() -> dict[str, str]:
        return {"$gt": f"o{rng.randrange(size - 20 * PAGE, size - PAGE):08d}"}

    customer = f"c{rng.randrange(997)}"
    return {
        "first page: _id": ({}, ASCENDING),
        "deep page: _id > x": ({"_id": deep()}, ASCENDING),
        "first page: status": ({"status": "s3"}, ASCENDING),
        "deep page: status, _id > x": ({"status": "s3", "_id": deep()}, ASCENDING),
        "first page: customer": ({"customer_id": customer}, ASCENDING),
        "newest page: status": ({"status": "s3"}, DESCENDING),
    }


def _measure_size(
    client: MongoClient[dict[str, Any]], size: int, repeat: int, rng: random.Random, plans: bool
) -> list[tuple[int, str, float]]:
    db = f"bench_pages_{size}"
    _fill(client, db, size)
    col = client[db]["orders"]

    def page(name: str) -> list[dict[str, Any]]:
        flt, direction = _pages(size, rng)[name]
        return list(col.find(flt).sort("_id", direction).limit(PAGE))

    queries: dict[str, Callable[[], Any]] = {
        "find_one by _id": lambda: col.find_one({"_id": f"o{rng.randrange(size):08d}"}),
        **{name: functools.partial(page, name) for name in _pages(size, rng)},
    }
    rows = [(size, name, _time(op, repeat)) for name, op in queries.items()]
    if plans:
        for name, (flt, direction) in _pages(size, rng).items():
            cmd = {"find": "orders", "filter": flt, "sort": {"_id": direction}, "limit": PAGE}
            plan = client[db].command("explain", cmd).get("queryPlanner", {}).get("Plan")
            print(f"plan at {size:,}, {name} {flt}:")
            for line in _plan_lines(plan or {}):
                print("   " + line)
    client.drop_database(db)
    return rows


def _plan_lines(plan: dict[str, Any], depth: int = 0) -> list[str]:
    """PostgreSQL's plan (EXPLAIN FORMAT JSON) as indented lines: node, index, rows, condition."""
    index = f" using {plan['Index Name']}" if "Index Name" in plan else ""
    cond = plan.get("Index Cond") or plan.get("Filter") or ""
    line = f"{'  ' * depth}{plan.get('Node Type', '?')}{index} (rows={plan.get('Plan Rows')})"
    lines = [line + (f" cond: {cond[:160]}" if cond else "")]
    for sub in plan.get("Plans", []):
        lines += _plan_lines(sub, depth + 1)
    return lines


def measure(
    uri: str, sizes: list[int], repeat: int, plans: bool = False
) -> list[tuple[int, str, float]]:
    rng = random.Random(7)
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        return [
            row
            for size in sizes
            for row in _measure_size(client, size, repeat, rng, plans and size == sizes[-1])
        ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__)
    parser.add_argument("--uri", help="a MongoDB URI (default: an embedded stack of its own)")
    parser.add_argument("--sizes", default="1000,100000", help="collection sizes")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query")
    parser.add_argument("--plans", action="store_true", help="print the pages' plans")
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
        rows = measure(uri, sizes, args.repeat, args.plans)
    finally:
        if stack:
            stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    base = {size: ms for size, name, ms in rows if name == "find_one by _id"}
    print(f"{'size':>8}  {'query':<30} {'median ms':>10} {'x find_one':>10}")
    for size, name, ms in rows:
        print(f"{size:>8}  {name:<30} {ms:>10.2f} {ms / base[size]:>10.1f}")


if __name__ == "__main__":
    main()

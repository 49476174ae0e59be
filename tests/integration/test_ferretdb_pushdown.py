"""The patched FerretDB's filter pushdown changes plans, never results.

Differential: generated documents (mixed BSON types, missing fields, nulls, arrays, int/long/
double, non-ASCII strings) and generated queries (equality, ranges, $in, $ne, sorts, skips,
limits) return the same documents in the same order from the stack's FerretDB as from a twin
on the same PostgreSQL database started with ``--test-disable-pushdown`` (every filter in Go).
EXPLAIN: the services' list queries reach PostgreSQL as index scans.

These test the embedded stack itself, so they skip when MONGODB_URI points elsewhere.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from stack.embedded import EmbeddedStack, free_ports

pytestmark = pytest.mark.integration

TWIN = "ferretdb-no-pushdown"
FIELDS = ("a", "b")
UTC = datetime.UTC
SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    7,
    2**31 - 1,
    Int64(7),
    Int64(2**40),
    Int64(2**53 + 1),
    Int64(-(2**60)),
    0.0,
    -0.0,
    0.5,
    6.999,
    7.0,
    1e300,
    -2.5,
    "",
    "a",
    "B",
    "b",
    "ab",
    "10",
    "9",
    "é",
    "ê",
    "e\u0301",
    "Ω",
    "日本",
    ObjectId("5f0000000000000000000001"),
    ObjectId("6f0000000000000000000002"),
    datetime.datetime(2020, 5, 1, tzinfo=UTC),
    datetime.datetime(1969, 7, 20, tzinfo=UTC),
]
COMPOSITES: list[Any] = [
    [],
    [1, 8],
    ["a", "é"],
    [None],
    [7.0, "b"],
    {"x": 1},
]  # FerretDB 1.x: no nested arrays
OPS = ("$eq", "$gt", "$gte", "$lt", "$lte", "$in", "$ne")
SORTS: list[list[tuple[str, int]]] = [[], [("a", 1)], [("a", -1), ("b", 1)], [("b", -1)]]


@pytest.fixture
def twin(stack: EmbeddedStack) -> Iterator[str]:
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")
    uri = stack.start_ferretdb_twin(TWIN, free_ports(1)[0], "--test-disable-pushdown")
    yield uri
    stack.supervisor.stop(TWIN)


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=10_000)


def _docs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        doc: dict[str, Any] = {"_id": i}
        for field in FIELDS:
            roll = rng.random()
            if roll < 0.1:
                continue
            doc[field] = rng.choice(COMPOSITES if roll < 0.25 else SCALARS)
        docs.append(doc)
    return docs


def _condition(rng: random.Random) -> Any:
    op = rng.choice(OPS)
    if op == "$in":
        return {"$in": rng.sample(SCALARS + COMPOSITES[:2], rng.randint(1, 3))}
    value = rng.choice(SCALARS)
    return value if op == "$eq" and rng.random() < 0.5 else {op: value}


def _query(rng: random.Random) -> dict[str, Any]:
    fields = rng.sample(FIELDS, rng.randint(1, 2))
    query: dict[str, Any] = {"filter": {f: _condition(rng) for f in fields}}
    sort = rng.choice(SORTS)
    if sort:
        # _id last: a total order, so that ties cannot differ between two correct plans
        query["sort"] = [*sort, ("_id", 1)]
        query["skip"] = rng.choice([0, 0, 3, 20])
        query["limit"] = rng.choice([0, 1, 5, 30])
    return query


def test_pushdown_returns_what_filtering_in_go_returns(
    stack: EmbeddedStack, twin: str, mongo_db_name: str
) -> None:
    rng = random.Random(20261203)
    with (
        _client(stack.mongodb_uri) as patched,
        _client(twin) as in_go,
    ):
        patched[mongo_db_name]["docs"].insert_many(_docs(rng, 400))
        # the edges of jsonb's order first: arrays sort above every scalar, empty ones below
        edges = [{"filter": {f: {op: v}}} for f in FIELDS for op in OPS[1:5] for v in (7, "b")]
        checked = 0
        for query in [*edges, *(_query(rng) for _ in range(300))]:
            try:
                got = list(patched[mongo_db_name]["docs"].find(**query))
            except OperationFailure as e:
                raise AssertionError(f"{query}: {e}") from e
            want = list(in_go[mongo_db_name]["docs"].find(**query))
            if "sort" not in query:
                got.sort(key=lambda d: d["_id"])
                want.sort(key=lambda d: d["_id"])
            assert got == want, f"{query}: {len(got)} documents, {len(want)} in Go"
            checked += bool(want)
        # the queries must select something often enough to compare anything
        assert checked > 100


def _plan(
    client: MongoClient[dict[str, Any]], db: str, coll: str, flt: dict[str, Any]
) -> dict[str, Any]:
    res = client[db].command("explain", {"find": coll, "filter": flt, "sort": {"_id": 1}})
    plan: dict[str, Any] = res["queryPlanner"]["Plan"]
    return plan


def _conditions(plan: dict[str, Any]) -> list[str]:
    """The conditions of every node of a PostgreSQL plan (EXPLAIN FORMAT JSON)."""
    found = [plan[k] for k in ("Index Cond", "Recheck Cond", "Filter") if k in plan]
    for sub in plan.get("Plans", []):
        found += _conditions(sub)
    return found


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(n for sub in plan.get("Plans", []) for n in _nodes(sub))]


def test_list_queries_reach_postgresql_as_index_scans(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """The shapes svckit.store.page sends (status and customer lists, a deep page after an id),
    on collections indexed as orders_svc and fulfillment_svc declare them."""
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")
    with _client(stack.mongodb_uri) as client:
        col = client[mongo_db_name]["orders"]
        col.insert_many(
            [
                {"_id": f"o{i:06d}", "status": f"s{i % 5}", "customer_id": f"c{i % 300}"}
                for i in range(6000)
            ]
        )
        col.create_index([("status", 1), ("_id", 1)])
        col.create_index([("customer_id", 1), ("_id", 1)])
        client[mongo_db_name].command("compact", "orders")  # VACUUM ANALYZE: fresh statistics
        for flt in (
            {"_id": {"$gt": "o005900"}},
            {"status": "s3", "_id": {"$gt": "o005000"}},
            {"customer_id": "c7", "_id": {"$gt": "o000100"}},
            {"status": {"$in": ["s1", "s2"]}, "_id": {"$gt": "o005500"}},
        ):
            plan = _plan(client, mongo_db_name, "orders", flt)
            assert "Seq Scan" not in _nodes(plan), (flt, plan)
            # the range on _id is a condition in SQL, not only in Go
            assert any("> '\"o00" in c for c in _conditions(plan)), (flt, plan)

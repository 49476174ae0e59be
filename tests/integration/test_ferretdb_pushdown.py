"""The patched FerretDB's filter, sort and limit pushdown changes plans, never results.

Differential: generated documents (mixed BSON types, missing fields, nulls, arrays, int/long/
double, non-ASCII strings) and generated queries (equality, ranges, $in, $ne, sorts on one or
two keys either way, skips, limits) return the same documents in the same order from the
stack's FerretDB as from a twin on the same PostgreSQL database started with
``--test-disable-pushdown`` (every filter and sort in Go); pages run on indexed fields, so that
the sort and limit go to PostgreSQL (patch 0003), and on unindexed ones, so that they do not.
EXPLAIN: the services' list queries reach PostgreSQL as index scans, a page under a Limit.
And what patches 0008-0009 made faster returns what it returned: documents of many shapes read
back byte for byte, find's projections field for field as the aggregation's $project.

The twin and EXPLAIN tests need the embedded stack, so they skip when MONGODB_URI points
elsewhere; the last two hold on any MongoDB and run there too.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson import Int64, ObjectId
from pymongo import MongoClient
from pymongo.collection import Collection
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


INDEXES = ([("a", 1)], [("b", -1), ("_id", 1)])
"""The indexes the mixed-document tests declare: one led by each of the two fields."""


def _filled(
    col: Collection[dict[str, Any]], docs: list[dict[str, Any]], indexed: bool = True
) -> Collection[dict[str, Any]]:
    """`col` holding `docs`, with INDEXES unless not `indexed`."""
    col.insert_many(docs)
    for keys in INDEXES if indexed else ():
        col.create_index(keys)
    return col


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


def test_lookups_on_indexed_fields_return_what_filtering_in_go_returns(
    stack: EmbeddedStack, twin: str, mongo_db_name: str
) -> None:
    """Filters without sort on indexed fields go through the ordering btrees (patch 0011):
    ranked rows filtered exactly, unranked ones (arrays, documents, big doubles) through the
    btrees' leading rank. Finds, counts, update_many and delete_many select what the twin
    filtering in Go selects, and lookups, ranges and $in are index scans."""
    rng = random.Random(20261206)
    with (
        _client(stack.mongodb_uri) as patched,
        _client(twin) as in_go,
    ):
        col = _filled(patched[mongo_db_name]["docs"], _docs(rng, 400))
        go = in_go[mongo_db_name]["docs"]

        def ids(cursor: Any) -> list[Any]:
            return sorted(d["_id"] for d in cursor)

        edges = [{f: {op: v}} for f in FIELDS for op in OPS[1:5] for v in (7, "b")]
        filters = [*edges, *(_query(rng)["filter"] for _ in range(300))]
        filters += [{"a": 7, "n": {"$exists": False}}, {"a": {"$in": [1, "b"]}, "b": None}]
        checked = 0
        for flt in filters:
            want = list(go.find(flt))
            got = list(col.find(flt))
            assert sorted(got, key=lambda d: d["_id"]) == sorted(want, key=lambda d: d["_id"]), (
                f"{flt}: {len(got)} documents, {len(want)} in Go"
            )
            assert col.count_documents(flt) == len(want), flt
            checked += bool(want)
        assert checked > 100
        for n, flt in enumerate(filters[::15]):
            want_ids = ids(go.find(flt))
            assert col.update_many(flt, {"$set": {"u": n}}).matched_count == len(want_ids), flt
            assert ids(go.find({"u": n})) == want_ids, flt
        for flt in filters[1::40]:
            want_ids = ids(go.find(flt))
            assert col.delete_many(flt).deleted_count == len(want_ids), flt
            assert go.count_documents({"_id": {"$in": want_ids}}) == 0, flt
        # the plans, on a collection shaped as the services' are: values of one type, a few
        # arrays (PostgreSQL rightly scans 400 rows of which a fifth are unranked)
        db = patched[mongo_db_name]
        _filled(
            db["plans"],
            [{"_id": i, "a": i % 50, "b": f"s{i % 30}"} for i in range(3000)]
            + [{"_id": -i, "a": [i, 7], "b": ["s1"]} for i in range(1, 4)],
        )
        db.command("compact", "plans")  # VACUUM ANALYZE: fresh statistics
        # (the twin has loaded its catalogue already: it does not know this collection)
        for flt, count in (
            ({"a": 7}, 60 + 3),
            ({"a": {"$in": [1, 9]}}, 120 + 1),
            ({"b": {"$gt": "s8"}}, 100),  # s9
            ({"a": 3, "b": "s3"}, 20),  # i = 3 mod 150
        ):
            assert db["plans"].count_documents(flt) == count, flt
            plan = db.command("explain", {"find": "plans", "filter": flt})
            nodes = _nodes(plan["queryPlanner"]["Plan"])
            assert "Seq Scan" not in nodes, (flt, plan)
            assert any("Index" in n for n in nodes), (flt, plan)


def test_lookups_by_id_return_what_filtering_in_go_returns(
    stack: EmbeddedStack, twin: str, mongo_db_name: str
) -> None:
    """Equality and $in on _id go to PostgreSQL as `=` (patch 0010), not containment: for _id
    of every scalar type (numbers of each width, equal across types; past 2^53; strings,
    ObjectIds, dates, booleans) and values of other types, present or not, the same documents
    as the twin filtering in Go; and a lookup is an index scan of the unique btree."""
    ids: list[Any] = []
    for v in SCALARS:  # an _id is unique among equal numbers, whatever their widths
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if v is not None and not (number and any(v == w and not isinstance(w, bool) for w in ids)):
            ids.append(v)
    with (
        _client(stack.mongodb_uri) as patched,
        _client(twin) as in_go,
    ):
        col = patched[mongo_db_name]["by_id"]
        col.insert_many([{"_id": v, "n": i} for i, v in enumerate(ids)])
        probes = [*SCALARS, 7.0, Int64(0), 2**53 + 1.0, *COMPOSITES]
        queries = [{"_id": v} for v in probes] + [{"_id": {"$eq": v}} for v in probes]
        queries += [{"_id": {"$in": probes[i : i + 4]}} for i in range(0, len(probes), 3)]
        for query in queries:
            got = sorted(col.find(query), key=lambda d: d["n"])
            want = sorted(in_go[mongo_db_name]["by_id"].find(query), key=lambda d: d["n"])
            assert got == want, f"{query}: {got} != {want}"
        assert sum(1 for q in queries if col.find_one(q)) > 40
        plan = patched[mongo_db_name].command("explain", {"find": "by_id", "filter": {"_id": "a"}})
        nodes = _nodes(plan["queryPlanner"]["Plan"])
        assert "Index Scan" in nodes and "Seq Scan" not in nodes, plan


def _page_query(rng: random.Random) -> dict[str, Any]:
    """A page: a filter on up to two fields, a sort on one or two keys
    either way with ``_id`` last (a total order: ties cannot differ between correct plans),
    a limit and a skip."""
    flt: dict[str, Any] = {f: _condition(rng) for f in rng.sample(FIELDS, rng.randint(0, 2))}
    keys = rng.sample(FIELDS, rng.randint(0, 2))
    sort = [(k, rng.choice((1, -1))) for k in keys]
    if rng.random() < 0.3:
        flt["_id"] = {rng.choice(OPS[1:5]): rng.randrange(400)}
    return {
        "filter": flt,
        "sort": [*sort, ("_id", rng.choice((1, -1)) if not sort else 1)],
        "skip": rng.choice([0, 0, 0, 2, 7, 40]),
        "limit": rng.choice([1, 3, 10, 50]),
    }


def _pushed_down(client: MongoClient[dict[str, Any]], db: str, query: dict[str, Any]) -> bool:
    cmd = {"find": "docs", "filter": query["filter"], "sort": dict(query["sort"])}
    cmd |= {"skip": Int64(query["skip"]), "limit": Int64(query["limit"])}  # explain wants longs
    return bool(client[db].command("explain", cmd)["limitPushdown"])


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "unindexed"])
def test_pages_return_what_sorting_in_go_returns(
    stack: EmbeddedStack, twin: str, mongo_db_name: str, indexed: bool
) -> None:
    """Sorted, skipped and limited finds on the mixed documents: in the same order as the twin.
    On indexed fields most go to PostgreSQL as ORDER BY ... LIMIT (explain's limitPushdown);
    unindexed, none may."""
    rng = random.Random(20261204)
    with (
        _client(stack.mongodb_uri) as patched,
        _client(twin) as in_go,
    ):
        col = _filled(patched[mongo_db_name]["docs"], _docs(rng, 400), indexed)
        pushed = checked = 0
        for query in (_page_query(rng) for _ in range(300)):
            got = list(col.find(**query))
            want = list(in_go[mongo_db_name]["docs"].find(**query))
            assert got == want, f"{query}: {[d['_id'] for d in got]} != {[d['_id'] for d in want]}"
            pushed += _pushed_down(patched, mongo_db_name, query)
            checked += bool(want)
        assert checked > 150
        if indexed:
            assert pushed > 150, f"only {pushed} of 300 pages pushed down"
        else:
            # _id leads its own index: only pages on _id alone may go to PostgreSQL
            assert pushed < 100


# Field names reach PostgreSQL as SQL literals (patch 0005): quotes, what dollar quotes and
# array literals treat apart, non-ASCII; and names only a filter can hold: FerretDB 1.24 cannot
# store a document with a backslash, double quote or control character in a key (it writes keys
# into its JSON unescaped: "invalid input syntax for type json"), but filters and sorts may
# name them: backslashes, what PostgreSQL's escape strings read, array-literal quoting.
STORED_NAMES = ("it's", "x'); DROP TABLE docs; --", "E'x'", "x$$y", "日本 é", "🙂")
FILTER_NAMES = ("back\\slash", "\\'", "E'\\x41'", 'quo"te', '{a,"b"}', "tab\tnew\nline")


def test_odd_field_names_are_pushed_down_as_literals(
    stack: EmbeddedStack, twin: str, mongo_db_name: str
) -> None:
    """Filters, sorts and pages on field names that would end or escape a badly quoted literal
    return what the twin filtering in Go returns, reach PostgreSQL (explain) and leave every
    document where it was."""
    rng = random.Random(20261205)
    values: list[Any] = [1, 2, 7, "a", "b", "é"]
    docs = [{"_id": i, **{n: rng.choice(values) for n in STORED_NAMES}} for i in range(120)]
    indexed = (*STORED_NAMES[::2], *FILTER_NAMES[::2])  # their ordering btrees name them too
    with (
        _client(stack.mongodb_uri) as patched,
        _client(twin) as in_go,
    ):
        col = patched[mongo_db_name]["docs"]
        col.insert_many(docs)
        for name in indexed:
            col.create_index([(name, 1), ("_id", 1)])
        for name in (*STORED_NAMES, *FILTER_NAMES):
            page: dict[str, Any] = {"sort": [(name, -1), ("_id", 1)], "limit": 5}
            for query in (
                {"filter": {name: 7}},
                {"filter": {name: {"$ne": "a"}}},
                {"filter": {name: {"$gt": 1, "$lte": 7}}},
                {"filter": {name: {"$lt": "b"}}},
                {"filter": {name: {"$in": [2, "é"]}}},
                {"filter": {name: {"$gte": 2}}, **page},
                {"filter": {}, **page},
            ):
                got = list(col.find(**query))
                want = list(in_go[mongo_db_name]["docs"].find(**query))
                if "sort" not in query:
                    got.sort(key=lambda d: d["_id"])
                    want.sort(key=lambda d: d["_id"])
                assert got == want, f"{query}: {[d['_id'] for d in got]} != {[d['_id'] for d in want]}"
                assert want or name in FILTER_NAMES, query
            cmd = {"find": "docs", "filter": {name: 7}}
            assert patched[mongo_db_name].command("explain", cmd)["filterPushdown"], name
            if name in indexed:
                assert _pushed_down(patched, mongo_db_name, {"filter": {}, "skip": 0, **page})
        assert list(col.find({}, sort=[("_id", 1)])) == docs


def _plan(
    client: MongoClient[dict[str, Any]],
    db: str,
    coll: str,
    flt: dict[str, Any],
    **page: Any,
) -> dict[str, Any]:
    cmd = {"find": coll, "filter": flt, "sort": {"_id": 1}, **page}
    res = client[db].command("explain", cmd)
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
    """The shapes svckit.store.page sends (ListOrders by status and by customer, ListFulfillments
    by status, ListProducts, ListCustomers: first page and a deep page after an id, limit 51) on
    collections indexed as the services declare them, reach PostgreSQL as an index scan in
    order under a Limit: no Seq Scan, no Sort, whatever the collection's size."""
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")
    with _client(stack.mongodb_uri) as client:
        col = client[mongo_db_name]["orders"]
        col.insert_many(
            [
                {
                    "_id": f"o{i:06d}",
                    "status": f"s{i % 5}",
                    "customer_id": f"c{i % 300}",
                    **({"deleted": True} if i % 50 == 0 else {}),
                }
                for i in range(6000)
            ]
        )
        col.create_index([("status", 1), ("_id", 1)])
        col.create_index([("customer_id", 1), ("_id", 1)])
        # ListCustomers' live filter ({deleted: {$ne: true}}) needs an index leading with
        # `deleted` for its page to go down, as accounts_svc declares
        col.create_index([("deleted", 1), ("_id", 1)])
        client[mongo_db_name].command("compact", "orders")  # VACUUM ANALYZE: fresh statistics
        for flt in (
            {},
            {"_id": {"$gt": "o005900"}},
            {"status": "s3"},
            {"status": "s3", "_id": {"$gt": "o005000"}},
            {"customer_id": "c7"},
            {"customer_id": "c7", "_id": {"$gt": "o000100"}},
            {"status": {"$in": ["s1", "s2"]}, "_id": {"$gt": "o005500"}},
            {"deleted": {"$ne": True}},
            {"deleted": {"$ne": True}, "_id": {"$gt": "o005900"}},
        ):
            plan = _plan(client, mongo_db_name, "orders", flt, limit=Int64(51))
            nodes = _nodes(plan)
            assert "Seq Scan" not in nodes and "Sort" not in nodes, (flt, plan)
            assert "Limit" in nodes and "Index Scan" in nodes, (flt, plan)
            if "_id" in flt:
                # the range on _id is a condition in SQL, not only in Go
                assert any("> '\"o00" in c for c in _conditions(plan)), (flt, plan)


def test_indexes_made_before_the_patch_get_their_ordering_btree(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """A database from before patch 0003 has FerretDB's indexes without the ordering btrees: the
    services' create_index at start adds them (the _id index's too), so pages go down there."""
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")

    def ordering() -> list[str]:
        sql = f"SELECT indexname FROM pg_indexes WHERE schemaname = '{mongo_db_name}'"
        names = stack.postgres.psql("ferretdb", sql).split()
        return sorted(n for n in names if n.endswith("_ord"))

    with _client(stack.mongodb_uri) as client:
        col = client[mongo_db_name]["orders"]
        col.create_index([("status", 1), ("_id", 1)])
        made = ordering()
        assert len(made) == 2, made  # _id_ and (status, _id)
        for name in made:
            stack.postgres.psql("ferretdb", f'DROP INDEX "{mongo_db_name}"."{name}"')
        assert ordering() == []
        col.create_index([("status", 1), ("_id", 1)])  # as a service does at every start
        assert ordering() == made
        col.drop_index("status_1__id_1")
        assert len(ordering()) == 1


PROJECTIONS: list[dict[str, Any] | None] = [
    None,
    {"a": 0},
    {"a": 0, "b": 0},
    {"_id": 0},
    {"_id": 0, "b": 0},
    {"missing": 0},
    {"c": False, "a": 0.0},
    {"a": 0, "_id": 1},
    {"c.x": 0},
    {"a": 1},
    {"_id": 0, "b": 1, "c.x": 1},
]


def test_projections_return_what_the_aggregation_projects(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """find's projection (patch 0008: no projection and top-level exclusions are a shallow copy
    of each document) returns, field for field and in the same order, what the aggregation's
    $project (FerretDB's other implementation, unchanged) returns, on the mixed documents, with
    nested ones and documents whose ``_id`` was not sent first."""
    rng = random.Random(20261206)
    docs = _docs(rng, 300)
    for doc in docs[::7]:
        doc["c"] = {"x": rng.choice(SCALARS), "y": [1, "a"]}
    late_id = [{"a": i, "_id": 1000 + i, "b": "late"} for i in range(5)]
    with _client(stack.mongodb_uri) as patched:
        col = patched[mongo_db_name]["docs"]
        col.insert_many(docs + late_id)
        for projection in PROJECTIONS:
            for flt in ({}, {"b": "late"}, {"a": {"$gte": 1}}):
                got = list(col.find(flt, projection, sort=[("_id", 1)]))
                stages: list[dict[str, Any]] = [{"$match": flt}, {"$sort": {"_id": 1}}]
                if projection:
                    stages.append({"$project": projection})
                want = list(col.aggregate(stages))
                assert [bson.encode(d) for d in got] == [bson.encode(d) for d in want], (
                    f"{projection} {flt}: {got[:2]} != {want[:2]}"
                )
                assert got or flt, projection


def test_documents_of_many_shapes_read_back_exactly(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """Every document comes back byte for byte as stored (int32, int64 and double kept apart),
    through patch 0008's cache of decoded schemas: more shapes than it holds (it starts afresh),
    shapes shared by many documents, each read twice."""
    rng = random.Random(20261207)
    # -0.0 comes back as 0.0, before these patches too: PostgreSQL's numeric has no negative zero
    values = [v for v in SCALARS + COMPOSITES if repr(v) != "-0.0"]
    shapes = [{"_id": i, f"k{i}": rng.choice(values)} for i in range(5000)]
    mixed = [
        {k: v for k, v in d.items() if repr(v) != "-0.0"} | {"_id": 10_000 + d["_id"]}
        for d in _docs(rng, 400)
    ]
    with _client(stack.mongodb_uri) as patched:
        col = patched[mongo_db_name]["docs"]
        col.insert_many(shapes + mixed)
        want = [bson.encode(d) for d in shapes + mixed]
        for _ in range(2):
            got = [bson.encode(d) for d in col.find({}, sort=[("_id", 1)])]
            assert got == want

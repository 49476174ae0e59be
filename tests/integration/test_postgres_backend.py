"""FerretDB on the private PostgreSQL cluster: indexes that lookups can use, a pool that cannot
be exhausted, and committed writes that survive kill -9 of either server.

These test the embedded stack itself, so they skip when MONGODB_URI points elsewhere.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from stack import tools
from stack.embedded import FERRETDB, EmbeddedStack, free_ports
from stack.postgres import ANONYMOUS, FERRETDB_POOL, POSTGRES
from svckit import mongo

pytestmark = pytest.mark.integration

Doc = dict[str, object]


@pytest.fixture
def embedded(stack: EmbeddedStack) -> EmbeddedStack:
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded PostgreSQL is not in use")
    return stack


def _explain(stack: EmbeddedStack, schema: str, sql_where: str) -> str:
    """EXPLAIN of a FerretDB-shaped query on the collection table of ``schema``."""
    table = _table(stack, schema)
    stack.postgres.psql("ferretdb", f'ANALYZE "{schema}"."{table}"')
    return stack.postgres.psql(
        "ferretdb", f'EXPLAIN SELECT _jsonb FROM "{schema}"."{table}" WHERE {sql_where}'
    )


def _indexes(stack: EmbeddedStack, schema: str) -> dict[str, str]:
    """The PostgreSQL indexes of the collection table of ``schema``: name -> definition."""
    rows = stack.postgres.psql(
        "ferretdb",
        f"SELECT indexname || '|' || replace(indexdef, E'\\n', ' ') FROM pg_indexes WHERE schemaname = '{schema}'"
        f" AND tablename = '{_table(stack, schema)}'",
    )
    return dict(line.split("|", 1) for line in rows.splitlines() if line)


async def test_lookups_by_id_and_indexed_fields_use_an_index(
    embedded: EmbeddedStack, mongo_db_name: str
) -> None:
    """A MongoDB index is one btree (patch 0011): the ordering one, which serves lookups, ranges
    and pages on its fields; _id's unique btree (lookups by _id, patch 0010) besides its own
    ordering one. No GIN twin, no btree on a non-unique index's jsonb; a cluster from before
    0011 loses its twins at the next setup and those btrees at the next create_index."""
    client = mongo.connect(embedded.mongodb_uri)
    try:
        col = client[mongo_db_name]["things"]
        await _add_things(col)
        found = await col.find_one({"_id": "t01234"})
        assert found is not None and found["n"] == 1234
        assert len(await col.find({"owner": "o7"}).to_list()) == 60
        await client[mongo_db_name].command("compact", "things")  # VACUUM ANALYZE
        by_owner = await client[mongo_db_name].command(
            "explain", {"find": "things", "filter": {"owner": "o7"}}
        )
        plan = str(by_owner["queryPlanner"])
        used = set(re.findall(r"'Index Name': '([^']+)'", plan))
        assert used and all("owner" in n and n.endswith("_ord") for n in used), plan
        assert "Seq Scan" not in plan, plan
        indexes = _indexes(embedded, mongo_db_name)
        assert len(indexes) == 3, indexes  # _id's two and (owner, _id)'s ordering btree
        unique = [d for d in indexes.values() if d.startswith("CREATE UNIQUE")]
        assert len(unique) == 1 and "(_jsonb -> '_id'::text)" in unique[0], indexes
        assert all(n.endswith("_ord") for n, d in indexes.items() if d not in unique), indexes
        # the _id lookup FerretDB sends (`=`, patch 0010) is an index scan of the unique btree
        by_id = _explain(embedded, mongo_db_name, "_jsonb -> '_id' = '\"t01234\"'")
        assert "Index Scan" in by_id and "Seq Scan" not in by_id, by_id

        # a cluster from before patch 0011: a GIN twin and FerretDB's btree on (owner, _id)
        table = _table(embedded, mongo_db_name)
        owner_ord = next(n for n in indexes if "owner" in n)
        plain = owner_ord.removesuffix("_ord") + "_idx"
        embedded.postgres.psql(
            "ferretdb",
            f'CREATE INDEX sfgin_old_twin ON "{mongo_db_name}"."{table}"'
            f" USING gin ((_jsonb -> 'owner') jsonb_path_ops);"
            f' CREATE INDEX "{plain}" ON "{mongo_db_name}"."{table}"'
            f" ((_jsonb -> 'owner'), (_jsonb -> '_id'))",
        )
        assert len(_indexes(embedded, mongo_db_name)) == 5
        embedded.postgres.setup(timeout=30)
        assert "sfgin_old_twin" not in _indexes(embedded, mongo_db_name)
        await col.create_index([("owner", 1), ("_id", 1)])  # as a service does at every start
        assert _indexes(embedded, mongo_db_name) == indexes
        # and dropping the index needs no btree of FerretDB's own
        await col.drop_index("owner_1__id_1")
        assert len(_indexes(embedded, mongo_db_name)) == 2
    finally:
        await client.close()


async def test_generic_plans_still_use_the_indexes(
    embedded: EmbeddedStack, mongo_db_name: str
) -> None:
    """FerretDB writes field names into its SQL as literals, values as parameters (patch 0005),
    so the generic plan PostgreSQL adopts for a prepared statement after five executions still
    matches the expression indexes. A twin FerretDB whose connections only make generic plans
    runs lookups and the services' page shapes, eight times each: PostgreSQL counts index scans
    of the table and not one sequential scan. (FerretDB's explain cannot show a generic plan: it
    plans EXPLAIN with the values.)"""
    client = mongo.connect(embedded.mongodb_uri)
    try:
        col = client[mongo_db_name]["things"]
        await _add_things(col)
        await client[mongo_db_name].command("compact", "things")  # VACUUM ANALYZE
    finally:
        await client.close()
    (port,) = free_ports(1)
    name = f"ferretdb-generic-plans-{port}"
    url = f"{embedded.postgres.ferretdb_url()}&plan_cache_mode=force_generic_plan"
    twin = mongo.connect(embedded.start_ferretdb_twin(name, port, f"--postgresql-url={url}"))
    lookups: list[tuple[dict[str, object], dict[str, object]]] = [
        ({"_id": "t01234"}, {}),
        ({"owner": "o7"}, {}),
        ({}, {"sort": [("_id", 1)], "limit": 51}),
        ({"_id": {"$gt": "t02900"}}, {"sort": [("_id", 1)], "limit": 51}),
        ({"owner": "o7"}, {"sort": [("_id", 1)], "limit": 51}),
        ({"owner": "o7", "_id": {"$gt": "t01000"}}, {"sort": [("_id", 1)], "limit": 51}),
    ]
    seq_before, idx_before = _scans(embedded, mongo_db_name)
    try:
        col = twin[mongo_db_name]["things"]
        for flt, page in lookups:
            for _ in range(8):
                assert await col.find(flt, **page).to_list(), flt
    finally:
        await twin.close()
        embedded.supervisor.stop(name)  # its connections end: their backends report their scans
    executions = 8 * len(lookups)
    deadline = time.monotonic() + 30
    while True:
        seq, idx = _scans(embedded, mongo_db_name)
        seq_scans, idx_scans = seq - seq_before, idx - idx_before
        if seq_scans + idx_scans >= executions or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert seq_scans == 0 and idx_scans >= executions, (seq_scans, idx_scans)


async def test_strings_come_back_as_they_were_stored(
    embedded: EmbeddedStack, mongo_db_name: str
) -> None:
    """FerretDB (patch 0007) takes a stored string without JSON escapes as its bytes and gives
    every other to encoding/json: strings with what JSON escapes, alone, in documents and in
    arrays, come back exactly as written."""
    strings = [
        "",
        "plain",
        'a "quoted" word',
        "back\\slash",
        "\\",
        '\\"',
        "tab\tnew\nline\r",
        "\x01\x1f\x7f",
        "\u2028\u2029",
        "é e\u0301 日本 🙂",
        "</script>&<>",
        "\\u0041",
        "x" * 5000,
    ]
    docs: list[Doc] = [
        {"_id": i, "s": s, "in": {"s": s, "deeper": {"s": s}}, "list": [s, {"s": s}]}
        for i, s in enumerate(strings)
    ]
    client = mongo.connect(embedded.mongodb_uri)
    try:
        col = client[mongo_db_name]["strings"]
        await col.insert_many(docs)
        assert await col.find({}, sort=[("_id", 1)]).to_list() == docs
        for doc in docs:
            assert await col.find_one({"s": doc["s"]}) == doc
    finally:
        await client.close()


async def _add_things(col: AsyncCollection[Doc]) -> None:
    """3,000 documents, 60 per owner, indexed on (owner, _id) as a service would declare it."""
    await col.insert_many(
        [{"_id": f"t{i:05d}", "owner": f"o{i % 50}", "n": i} for i in range(3000)]
    )
    await col.create_index([("owner", 1), ("_id", 1)])


def _scans(stack: EmbeddedStack, schema: str) -> tuple[int, int]:
    """The sequential and index scans PostgreSQL counted on the collection table of ``schema``."""
    row = stack.postgres.psql(
        "ferretdb",
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        f"WHERE schemaname = '{schema}' AND relname = '{_table(stack, schema)}'",
    )
    seq, idx = row.strip().split("|")
    return int(seq), int(idx)


def _table(stack: EmbeddedStack, schema: str) -> str:
    return stack.postgres.psql(
        "ferretdb",
        f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' "
        "AND tablename NOT LIKE '\\_ferretdb%'",
    ).strip()


async def test_more_operations_than_the_pool_holds_keep_the_database_answering(
    embedded: EmbeddedStack, mongo_db_name: str
) -> None:
    """Three clients as the services open them, each with far more concurrent writes queued
    than FerretDB's PostgreSQL pool holds; the database finishes them all and answers a ping."""
    clients = [mongo.connect(embedded.mongodb_uri) for _ in range(3)]
    ops_per_client = FERRETDB_POOL * 2
    try:
        col = clients[0][mongo_db_name]["hot"]
        await col.insert_many([{"_id": i, "v": 0} for i in range(100)])

        async def write(client: AsyncMongoClient[Doc], i: int) -> None:
            await client[mongo_db_name]["hot"].update_one({"_id": i % 100}, {"$inc": {"v": 1}})

        writes = [write(c, i) for c in clients for i in range(ops_per_client)]
        await asyncio.wait_for(asyncio.gather(*writes), 120)
        pinger = mongo.connect(embedded.mongodb_uri)
        try:
            assert (await asyncio.wait_for(pinger.admin.command("ping"), 10))["ok"] == 1
        finally:
            await pinger.close()
    finally:
        for c in clients:
            await c.close()


async def test_an_unbounded_client_hangs_a_small_pool(embedded: EmbeddedStack) -> None:
    """The finding the pool sizing answers, reproduced on a throwaway FerretDB with a pool of
    10: 400 writes in flight at once from an unbounded client and it stops answering."""
    (port,) = free_ports(1)
    name = f"ferretdb-small-pool-{port}"
    state = embedded.run_dir / "data" / name
    state.mkdir(parents=True)
    url = embedded.postgres.url(user=ANONYMOUS, pool_max_conns="10")
    uri = embedded.mongodb_uri.replace(f":{embedded.ports.mongodb}/", f":{port}/")
    embedded.supervisor.start(
        name,
        [
            str(tools.path("ferretdb")),
            "--handler=postgresql",
            f"--state-dir={state}",
            f"--listen-addr=127.0.0.1:{port}",
            "--debug-addr=-",
            "--telemetry=disable",
        ],
        env={"FERRETDB_POSTGRESQL_URL": url},
        ready=port,
    )
    db = f"small_pool_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        uri, maxPoolSize=400, serverSelectionTimeoutMS=3000
    )
    try:
        col = client[db]["hot"]
        await col.insert_many([{"_id": i, "v": 0} for i in range(100)])
        writes = [col.update_one({"_id": i % 100}, {"$inc": {"v": 1}}) for i in range(400)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*writes), 20)
        probe: AsyncMongoClient[Doc] = AsyncMongoClient(uri, serverSelectionTimeoutMS=3000)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(probe.admin.command("ping"), 5)
        finally:
            await probe.close()
    finally:
        embedded.supervisor.stop(name, timeout=2)
        await client.close()
        embedded.postgres.psql("ferretdb", f'DROP SCHEMA IF EXISTS "{db}" CASCADE')


async def test_committed_writes_survive_sigkill_of_postgres_and_ferretdb(
    embedded: EmbeddedStack, mongo_db_name: str
) -> None:
    sup = embedded.supervisor
    client = mongo.connect(embedded.mongodb_uri)
    try:
        col = client[mongo_db_name]["durable"]
        await col.insert_many([{"_id": i, "v": i} for i in range(500)])
        await col.update_many({}, {"$set": {"touched": True}})
    finally:
        await client.close()

    assert sup.kill(POSTGRES) and sup.kill(FERRETDB)
    sup.restart(POSTGRES, timeout=60)
    embedded.postgres.setup(60)
    sup.restart(FERRETDB, timeout=60)

    client = mongo.connect(embedded.mongodb_uri, timeout_ms=30_000)
    try:
        col = client[mongo_db_name]["durable"]
        assert await col.count_documents({"touched": True}) == 500
        doc = await col.find_one({"_id": 321})
        assert doc is not None and doc["v"] == 321
    finally:
        await client.close()

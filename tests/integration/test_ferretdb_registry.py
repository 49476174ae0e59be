"""The patched FerretDB loads its registry of databases whole, or not at all (patch 0004).

FerretDB reads every database's metadata once, on the first authenticated use. Unpatched, a
failure halfway (PostgreSQL killed or restarting under it) left a registry missing the
databases after the failure point, which the next call used: their documents read as empty
and their next write failed with 42P07 for as long as the process lived. Seen by the scale
fault suite after a PostgreSQL SIGKILL.

Reproduced without killing anything: a schema holding a metadata table whose row FerretDB
cannot read makes the load fail at that database, every time, until it is gone. A fresh
FerretDB on the same PostgreSQL (its registry not loaded yet) must then refuse every call, and
serve everything once the broken schema is dropped.

The list of databases itself must be read whole too. Unpatched, an error that arrived while its
rows were read (a backend that died: pgx reports it only once the rows run out) read as "no
databases", and that empty registry was published: every read of every database answered empty
for as long as the process lived. Seen by the scale fault suite after FerretDB restarted and
PostgreSQL was SIGKILLed right after: the catalog answered NOT_FOUND for a product that existed.

These test the embedded stack itself, so they skip when MONGODB_URI points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from stack.embedded import EmbeddedStack, free_ports

pytestmark = pytest.mark.integration

FRESH = "ferretdb-fresh-registry"
# a metadata row that is not a collection's metadata (FerretDB fails to read it)
NOT_METADATA = "'\"not a collection\"'"


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=10_000)


def _break_registry(
    stack: EmbeddedStack, schema: str, column: str = "_jsonb jsonb", row: str = NOT_METADATA
) -> None:
    """A schema holding a metadata table (`column`, one `row`) FerretDB cannot read: loading the
    registry fails at it, every time, until it is dropped."""
    stack.postgres.psql(
        "ferretdb",
        f'CREATE SCHEMA "{schema}"; '
        f'CREATE TABLE "{schema}"._ferretdb_database_metadata ({column}); '
        f'INSERT INTO "{schema}"._ferretdb_database_metadata VALUES ({row});'
        f'GRANT USAGE ON SCHEMA "{schema}" TO PUBLIC; '
        f'GRANT SELECT ON "{schema}"._ferretdb_database_metadata TO PUBLIC;',
    )


def _local_ports_to(pid: int, port: int) -> list[int]:
    """The local ports of process `pid`'s TCP connections to 127.0.0.1:`port` (/proc): which
    PostgreSQL backends are that process's. FerretDB names every connection "FerretDB", over
    any application_name its URL gives, so pg_stat_activity tells them apart by client port."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: list[int] = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and remote == f"0100007F:{port:04X}":
            ports.append(int(local.split(":")[1], 16))
    return ports


def test_a_registry_that_cannot_be_read_whole_is_not_used_half(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")
    broken = f"{mongo_db_name}_unreadable"
    victims = [f"{mongo_db_name}_v{i}" for i in range(3)]
    with _client(stack.mongodb_uri) as client:
        for name in victims:
            client[name]["things"].insert_many([{"_id": i} for i in range(5)])
    # made after the victims and before them alike: whatever order PostgreSQL lists schemas
    # in, the load fails at this one
    _break_registry(stack, broken)
    uri = stack.start_ferretdb_twin(FRESH, free_ports(1)[0])
    try:
        with _client(uri) as fresh:
            for _ in range(3):  # unpatched, the first call fails and the next ones use half
                for name in victims:
                    with pytest.raises(OperationFailure, match="initCollections"):
                        fresh[name]["things"].count_documents({})
            stack.postgres.psql("ferretdb", f'DROP SCHEMA "{broken}" CASCADE;')
            for name in victims:
                assert fresh[name]["things"].count_documents({}) == 5, name
                fresh[name]["things"].insert_one({"_id": 5})  # no "create" of a known database
                assert fresh[name]["things"].count_documents({}) == 6, name
    finally:
        stack.supervisor.stop(FRESH)
        stack.postgres.psql("ferretdb", f'DROP SCHEMA IF EXISTS "{broken}" CASCADE;')
        with _client(stack.mongodb_uri) as client:
            for name in victims:
                client.drop_database(name)


def test_a_list_of_databases_cut_short_is_not_taken_for_whole(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    """A fresh FerretDB whose first load failed (after listing the databases) keeps the
    connection that listed them, with that query prepared. Its backend terminated, the next
    load runs the prepared query there: the error arrives only while the rows are read. pgxpool
    pings no connection idle for less than 1 s, so the next call must come sooner; an attempt
    that comes later finds the dead connections pinged away and is made again."""
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")
    broken = f"{mongo_db_name}_unreadable"
    victim = f"{mongo_db_name}_listed"
    with _client(stack.mongodb_uri) as client:
        client[victim]["things"].insert_many([{"_id": i} for i in range(5)])
    try:
        for attempt in range(3):
            twin = f"{FRESH}-{attempt}"
            # no _jsonb column: the load fails preparing its query, which leaves the
            # connection clean (a failed read would have pgx deallocate it first, next time)
            _break_registry(stack, broken, column="x int", row="1")
            uri = stack.start_ferretdb_twin(twin, free_ports(1)[0])
            try:
                with _client(uri) as fresh:
                    things = fresh[victim]["things"]
                    with pytest.raises(OperationFailure, match="initCollections"):
                        things.count_documents({})
                    pid = stack.supervisor.pid(twin)
                    assert pid is not None
                    ports = ",".join(map(str, _local_ports_to(pid, stack.postgres.port)))
                    assert ports, "the twin holds no connection to PostgreSQL"
                    stack.postgres.psql(  # each termination waited for (up to 5 s)
                        "ferretdb",
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        f"WHERE client_port IN ({ports}); "
                        f'DROP SCHEMA "{broken}" CASCADE;',
                    )
                    try:
                        listed = things.count_documents({})
                    except OperationFailure:
                        pass  # the load met the dead connection and failed, as it must
                    else:
                        assert listed == 5, f"the twin answered {listed} of 5 documents"
                        continue  # too late: the dead connections were pinged away
                    # the dead connections go as they fail; then everything is served again
                    for _ in range(5):
                        try:
                            assert things.count_documents({}) == 5
                            return
                        except OperationFailure:
                            pass
                    pytest.fail("the twin never served the documents again")
            finally:
                stack.supervisor.stop(twin)
                stack.postgres.psql("ferretdb", f'DROP SCHEMA IF EXISTS "{broken}" CASCADE;')
        pytest.fail("no attempt reached the dead connection within 1 s")
    finally:
        with _client(stack.mongodb_uri) as client:
            client.drop_database(victim)
